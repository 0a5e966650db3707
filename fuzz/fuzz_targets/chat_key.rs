//! Chat bodies of arbitrary bytes: parsing never panics, and a body that parses keys alike
//! when its objects' keys are written in another order.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_gateway::request::Chat;

fuzz_target!(|data: &[u8]| {
    let Ok(chat) = Chat::parse(data, None) else {
        return;
    };
    let key = chat.key_material("m");
    let value: serde_json::Value = serde_json::from_slice(data).expect("it parsed as a chat");
    let reordered = serde_json::to_vec(&reverse(&value)).expect("serialises");
    if let Ok(again) = Chat::parse(&reordered, None) {
        assert_eq!(key, again.key_material("m"));
    }
});

/// The same value with every object's keys written in reverse order.
fn reverse(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.reverse();
            let mut out = serde_json::Map::new();
            for k in keys {
                out.insert(k.clone(), reverse(&m[k]));
            }
            serde_json::Value::Object(out)
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(reverse).collect()),
        other => other.clone(),
    }
}
