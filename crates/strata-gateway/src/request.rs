//! A chat completion request as the gateway reads it: the client's body (every field kept,
//! so unknown ones pass through), strata's own controls taken out of it, the cache key's
//! canonical material, and the admission estimate.
//!
//! Must not import: the network client, the cache, the store.

use serde_json::{Map, Value};

use crate::error::GatewayError;
use crate::settings::SemanticMode;

/// How a request may use the answer cache (from `Cache-Control`, or the body's
/// `strata.cache_control`, which wins).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// Do not answer from the cache (`no-cache`); the answer is still stored.
    pub no_read: bool,
    /// Neither answer from nor store in the cache (`no-store`).
    pub no_store: bool,
    /// Accept a cached answer only this many seconds old (`max-age=N`).
    pub max_age: Option<u64>,
}

impl CacheControl {
    /// Parses a `Cache-Control` value; unknown directives are ignored, as HTTP says.
    pub fn parse(value: &str) -> Self {
        let mut c = Self::default();
        for d in value.split(',').map(str::trim) {
            let (name, arg) = d.split_once('=').map_or((d, None), |(n, a)| (n, Some(a)));
            match name.to_ascii_lowercase().as_str() {
                "no-cache" => c.no_read = true,
                "no-store" => {
                    c.no_read = true;
                    c.no_store = true;
                }
                "max-age" => c.max_age = arg.and_then(|a| a.trim_matches('"').parse().ok()),
                _ => {}
            }
        }
        c
    }
}

/// A parsed chat completion request.
#[derive(Debug, Clone)]
pub struct Chat {
    /// The body to send upstream (without strata's controls; `model` replaced per upstream).
    pub body: Map<String, Value>,
    /// The model the client asked for.
    pub model: String,
    /// Whether the client wants a stream.
    pub stream: bool,
    /// Whether the client asked for the usage chunk of a stream.
    pub include_usage: bool,
    /// Cache use.
    pub cache: CacheControl,
    /// Store answers of sampled multi-choice requests (`n > 1` with a temperature above 0),
    /// which are not stored by default: each call is meant to differ.
    pub store_sampled: bool,
    /// The semantic cache for this request (`strata.semantic_cache`), if it says.
    pub semantic: Option<SemanticMode>,
    /// Its least similarity for this request (`strata.semantic_threshold`), if it says.
    pub semantic_threshold: Option<f32>,
}

/// What the semantic cache compares of a request: the last message's text, within a scope
/// that must match exactly.
#[derive(Debug, Clone)]
pub struct SemanticParts {
    /// The canonical material of everything else (as [`Chat::key_material`], the last
    /// message's content left out): the system prompt, earlier turns, tools, parameters.
    pub scope: Vec<u8>,
    /// The last message's text.
    pub text: String,
}

/// Fields that never change an answer: left out of the cache key.
const UNSHAPING: [&str; 6] = [
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "model",
];

impl Chat {
    /// Reads a request body; `header` is the request's `Cache-Control`, if any.
    pub fn parse(body: &[u8], header: Option<&str>) -> Result<Self, GatewayError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| GatewayError::invalid("body", format!("is not valid JSON: {e}")))?;
        let Value::Object(mut body) = value else {
            return Err(GatewayError::invalid("body", "must be a JSON object"));
        };
        let mut cache = header.map(CacheControl::parse).unwrap_or_default();
        let mut store_sampled = false;
        let mut semantic = None;
        let mut semantic_threshold = None;
        if let Some(ext) = body.remove("strata") {
            let Value::Object(ext) = ext else {
                return Err(GatewayError::invalid("strata", "must be an object"));
            };
            for (k, v) in ext {
                match (k.as_str(), v) {
                    ("cache_control", Value::String(s)) => cache = CacheControl::parse(&s),
                    ("store_sampled", Value::Bool(b)) => store_sampled = b,
                    ("semantic_cache", Value::String(m)) => {
                        semantic = Some(SemanticMode::parse(&m).ok_or_else(|| {
                            GatewayError::invalid(
                                "strata.semantic_cache",
                                "must be \"on\", \"off\" or \"shadow\"",
                            )
                        })?);
                    }
                    ("semantic_threshold", Value::Number(t)) => {
                        let t = t.as_f64().unwrap_or(-1.0);
                        if !(0.0..=1.0).contains(&t) {
                            return Err(GatewayError::invalid(
                                "strata.semantic_threshold",
                                "must be a number from 0 to 1",
                            ));
                        }
                        semantic_threshold = Some(t as f32);
                    }
                    (
                        name @ ("cache_control" | "store_sampled" | "semantic_cache"
                        | "semantic_threshold"),
                        _,
                    ) => {
                        let want = match name {
                            "store_sampled" => "a boolean",
                            "semantic_threshold" => "a number",
                            _ => "a string",
                        };
                        return Err(GatewayError::invalid(
                            format!("strata.{name}"),
                            format!("must be {want}"),
                        ));
                    }
                    (other, _) => {
                        return Err(GatewayError::invalid(
                            format!("strata.{other}"),
                            "is not a known option (cache_control, store_sampled, \
                             semantic_cache, semantic_threshold)",
                        ));
                    }
                }
            }
        }
        let model = match body.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            _ => return Err(GatewayError::invalid("model", "must be a non-empty string")),
        };
        match body.get("messages") {
            Some(Value::Array(m)) if !m.is_empty() => {
                if let Some(i) = m.iter().position(|x| !x.is_object()) {
                    return Err(GatewayError::invalid(
                        format!("messages[{i}]"),
                        "must be an object",
                    ));
                }
            }
            _ => {
                return Err(GatewayError::invalid(
                    "messages",
                    "must be a non-empty array",
                ));
            }
        }
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(GatewayError::invalid("stream", "must be a boolean")),
        };
        let include_usage = body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if let Some(n) = body.get("n")
            && !n.as_u64().is_some_and(|n| (1..=128).contains(&n))
        {
            return Err(GatewayError::invalid(
                "n",
                "must be an integer from 1 to 128",
            ));
        }
        Ok(Self {
            body,
            model,
            stream,
            include_usage,
            cache,
            store_sampled,
            semantic,
            semantic_threshold,
        })
    }

    /// The canonical bytes of everything that shapes the answer, for `upstream_model`: keys
    /// sorted at every depth, no whitespace, the fields in [`UNSHAPING`] left out. Every
    /// message counts (the system prompt and the whole conversation), not just the last.
    pub fn key_material(&self, upstream_model: &str) -> Vec<u8> {
        material(&self.body, b"chat\0", upstream_model)
    }

    /// What the semantic cache compares, when the last message is the user's and holds
    /// only text (a string, or `text` parts); `None` otherwise (an image, a tool result, an
    /// assistant prefill: nothing to compare by meaning).
    pub fn semantic_parts(&self, upstream_model: &str) -> Option<SemanticParts> {
        let messages = self.body.get("messages")?.as_array()?;
        let last = messages.last()?.as_object()?;
        if last.get("role").and_then(Value::as_str) != Some("user") {
            return None;
        }
        let text = match last.get("content")? {
            Value::String(s) => s.clone(),
            Value::Array(parts) => {
                let mut text = String::new();
                for p in parts {
                    if p.get("type").and_then(Value::as_str) != Some("text") {
                        return None;
                    }
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(p.get("text")?.as_str()?);
                }
                text
            }
            _ => return None,
        };
        if text.trim().is_empty() {
            return None;
        }
        let mut body = self.body.clone();
        if let Some(Value::Array(m)) = body.get_mut("messages")
            && let Some(Value::Object(last)) = m.last_mut()
        {
            last.remove("content");
        }
        Some(SemanticParts {
            scope: material(&body, b"semantic\0", upstream_model),
            text,
        })
    }

    /// Whether a complete answer to this request may be stored.
    pub fn storable(&self) -> bool {
        if self.cache.no_store {
            return false;
        }
        let n = self.body.get("n").and_then(Value::as_u64).unwrap_or(1);
        let temperature = self
            .body
            .get("temperature")
            .and_then(Value::as_f64)
            .unwrap_or(1.0);
        n <= 1 || temperature <= 0.0 || self.store_sampled
    }

    /// Tokens to reserve: the prompt (about 4 characters a token, plus each message's
    /// framing) and the most the completion may take (`max_completion_tokens`,
    /// `max_tokens`, or `default_completion`), times `n`.
    pub fn estimate_tokens(&self, default_completion: i64) -> (i64, i64) {
        let messages = self.body.get("messages").and_then(Value::as_array);
        let chars: usize = messages
            .into_iter()
            .flatten()
            .map(|m| m.to_string().len())
            .sum();
        let count = messages.map_or(0, Vec::len) as i64;
        let prompt = chars.div_ceil(4) as i64 + 4 * count;
        let max = ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|k| self.body.get(*k).and_then(Value::as_i64))
            .unwrap_or(default_completion)
            .max(1);
        let n = self
            .body
            .get("n")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(1);
        (prompt, max.saturating_mul(n))
    }

    /// The body to send upstream: a stream always asks for usage (strata meters it; the
    /// usage chunk is dropped on the way back when the client did not ask for it).
    pub fn upstream_body(&self) -> Map<String, Value> {
        let mut body = self.body.clone();
        if self.stream {
            let opts = body
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(o) = opts {
                o.insert("include_usage".into(), Value::Bool(true));
            } else {
                *opts = serde_json::json!({"include_usage": true});
            }
        }
        body
    }
}

/// `tag`, the model, then the canonical JSON of `body` without the fields in [`UNSHAPING`].
fn material(body: &Map<String, Value>, tag: &[u8], upstream_model: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(tag);
    out.extend_from_slice(upstream_model.as_bytes());
    out.push(0);
    let mut keys: Vec<&String> = body
        .keys()
        .filter(|k| !UNSHAPING.contains(&k.as_str()))
        .collect();
    keys.sort();
    out.push(b'{');
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        canonical(&Value::String(k.clone()), &mut out);
        out.push(b':');
        canonical(&body[k], &mut out);
    }
    out.push(b'}');
    out
}

/// Writes `v` as JSON with object keys sorted at every depth.
fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(&Value::String(k.clone()), out);
                out.push(b':');
                canonical(&m[k], out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(x, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Chat {
        Chat::parse(body.as_bytes(), None).unwrap()
    }

    #[test]
    fn key_order_whitespace_and_transport_fields_do_not_change_the_key() {
        let a =
            chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}"#);
        let b = chat(
            r#"{ "temperature": 0, "stream": true, "user": "u1",
                 "messages": [ {"content": "hi", "role": "user"} ], "model": "m" }"#,
        );
        assert_eq!(a.key_material("m"), b.key_material("m"));
        assert_ne!(a.key_material("m"), a.key_material("other"));
        for changed in [
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#,
            r#"{"model":"m","messages":[{"role":"system","content":"x"},{"role":"user","content":"hi"}],"temperature":0}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,"tools":[]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,"seed":1}"#,
        ] {
            assert_ne!(
                a.key_material("m"),
                chat(changed).key_material("m"),
                "{changed}"
            );
        }
    }

    #[test]
    fn controls_come_from_the_header_or_the_body() {
        let c = Chat::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
            Some("no-cache, max-age=60"),
        )
        .unwrap();
        assert_eq!(
            c.cache,
            CacheControl {
                no_read: true,
                no_store: false,
                max_age: Some(60)
            }
        );
        let c = chat(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"strata":{"cache_control":"no-store"}}"#,
        );
        assert!(c.cache.no_store && !c.storable());
        assert!(
            !c.body.contains_key("strata"),
            "strata's controls never go upstream"
        );
        assert!(
            Chat::parse(
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"strata":{"x":1}}"#,
                None
            )
            .is_err()
        );
    }

    #[test]
    fn bad_requests_name_their_field() {
        for (body, field) in [
            (r#"[]"#, "body"),
            (r#"{"messages":[{}]}"#, "model"),
            (r#"{"model":"m","messages":[]}"#, "messages"),
            (r#"{"model":"m","messages":[1]}"#, "messages[0]"),
            (r#"{"model":"m","messages":[{}],"stream":"yes"}"#, "stream"),
            (r#"{"model":"m","messages":[{}],"n":0}"#, "n"),
        ] {
            let e = Chat::parse(body.as_bytes(), None).unwrap_err();
            assert!(
                matches!(&e, GatewayError::Invalid { param, .. } if param == field),
                "{body}: {e:?}"
            );
        }
    }

    #[test]
    fn sampled_choices_are_not_stored_unless_asked_and_streams_ask_for_usage() {
        let c = chat(r#"{"model":"m","messages":[{}],"n":3,"temperature":0.7}"#);
        assert!(!c.storable());
        assert!(chat(r#"{"model":"m","messages":[{}],"n":3,"temperature":0}"#).storable());
        assert!(chat(r#"{"model":"m","messages":[{}],"n":3,"temperature":0.7,"strata":{"store_sampled":true}}"#).storable());
        let s = chat(r#"{"model":"m","messages":[{}],"stream":true}"#);
        assert!(!s.include_usage);
        assert_eq!(s.upstream_body()["stream_options"]["include_usage"], true);
        let (p, c) =
            chat(r#"{"model":"m","messages":[{"content":"12345678"}],"max_tokens":10,"n":2}"#)
                .estimate_tokens(99);
        assert!(p >= 6 && c == 20, "{p} {c}");
    }

    /// Property-based fuzzing of the cache key: the same request with its object keys in any
    /// order keys alike, and arbitrary bodies never panic the parser.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn shuffled(v: &Value, seed: u64) -> String {
            match v {
                Value::Object(m) => {
                    let mut keys: Vec<&String> = m.keys().collect();
                    let n = keys.len().max(1);
                    keys.rotate_left((seed as usize) % n);
                    if seed % 2 == 1 {
                        keys.reverse();
                    }
                    let parts: Vec<String> = keys
                        .into_iter()
                        .map(|k| {
                            format!("{}:{}", Value::String(k.clone()), shuffled(&m[k], seed / 3))
                        })
                        .collect();
                    format!("{{ {} }}", parts.join(" , "))
                }
                Value::Array(a) => {
                    let parts: Vec<String> = a.iter().map(|x| shuffled(x, seed / 5)).collect();
                    format!("[{}]", parts.join(","))
                }
                other => other.to_string(),
            }
        }

        proptest! {
            #[test]
            fn key_order_never_changes_the_key(
                content in "[ -~]{0,40}",
                temperature in 0u8..20,
                extra in prop::collection::btree_map("[a-z_]{1,8}", "[a-z0-9]{0,8}", 0..4),
                seed in any::<u64>(),
            ) {
                let mut body = serde_json::json!({
                    "model": "m",
                    "messages": [{"role": "user", "content": content}],
                    "temperature": f64::from(temperature) / 10.0,
                    "metadata": extra,
                });
                body["response_format"] = serde_json::json!({"type": "text", "x": {"b": 1, "a": 2}});
                let plain = Chat::parse(body.to_string().as_bytes(), None).unwrap();
                let reordered = Chat::parse(shuffled(&body, seed).as_bytes(), None).unwrap();
                prop_assert_eq!(plain.key_material("m"), reordered.key_material("m"));
            }

            #[test]
            fn arbitrary_bodies_never_panic_the_parser(body in prop::collection::vec(any::<u8>(), 0..300)) {
                let _ = Chat::parse(&body, None);
            }

            #[test]
            fn json_shaped_bodies_never_panic_the_parser(
                body in "\\{(\"[a-z]{1,8}\":(\"[^\"]{0,8}\"|[0-9]{1,3}|\\[\\]|\\{\\}|null|true),?){0,6}\\}"
            ) {
                let _ = Chat::parse(body.as_bytes(), None);
            }
        }
    }
}
