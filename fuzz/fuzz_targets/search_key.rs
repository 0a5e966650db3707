//! The search cache key of any request body that parses: computing it never panics, and the
//! same request written back (serde's own field order) keys alike.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_engine::policy::search_material;
use strata_engine::search::SearchRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(req) = serde_json::from_value::<SearchRequest>(value.clone()) else {
        return;
    };
    let key = search_material(&req, "fuzz");
    // Keys of a JSON object in sorted order (serde_json's map) are another spelling of it.
    let again: SearchRequest =
        serde_json::from_str(&value.to_string()).expect("the same body parses again");
    assert_eq!(key, search_material(&again, "fuzz"));
});
