//! A complete chat answer as strata keeps it: either the upstream's JSON body, or the `data`
//! payloads of its stream chunk by chunk (reasoning and tool-call fragments untouched). Either
//! form serves either kind of client: a stream is assembled into one `chat.completion` for a
//! JSON client, and a JSON answer is replayed as chunks for a streaming one.
//!
//! The cached form is a small binary header (version, form, prompt and completion tokens)
//! followed by the body or the length-prefixed frames, so a hit needs no JSON parsing to be
//! served or accounted.
//!
//! Must not import: the network client, the cache.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Map, Value, json};

/// A complete answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A `chat.completion` JSON body.
    Json(Bytes),
    /// A stream's chunk payloads in order (no `[DONE]`).
    Stream(Vec<Bytes>),
}

/// Token counts of an answer, from its `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt: i64,
    /// Completion tokens.
    pub completion: i64,
}

impl Usage {
    /// Reads `usage` of a JSON value, if present.
    pub fn of(v: &Value) -> Option<Self> {
        let u = v.get("usage")?;
        Some(Self {
            prompt: u.get("prompt_tokens")?.as_i64()?,
            completion: u
                .get("completion_tokens")
                .and_then(Value::as_i64)
                .unwrap_or(0),
        })
    }
}

const VERSION: u8 = 1;

impl Answer {
    /// The usage the answer reports (the last chunk carrying one, for a stream).
    pub fn usage(&self) -> Option<Usage> {
        match self {
            Answer::Json(b) => serde_json::from_slice::<Value>(b)
                .ok()
                .as_ref()
                .and_then(Usage::of),
            Answer::Stream(frames) => frames.iter().rev().find_map(|f| {
                // Only chunks that mention usage are parsed.
                if memchr(f, b"\"usage\"") {
                    serde_json::from_slice::<Value>(f)
                        .ok()
                        .as_ref()
                        .and_then(Usage::of)
                } else {
                    None
                }
            }),
        }
    }

    /// The cached form, with `usage` in its header.
    pub fn encode(&self, usage: Usage) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u8(VERSION);
        out.put_u8(match self {
            Answer::Json(_) => b'J',
            Answer::Stream(_) => b'S',
        });
        out.put_i64_le(usage.prompt);
        out.put_i64_le(usage.completion);
        match self {
            Answer::Json(b) => out.extend_from_slice(b),
            Answer::Stream(frames) => {
                for f in frames {
                    out.put_u32_le(f.len() as u32);
                    out.extend_from_slice(f);
                }
            }
        }
        out.freeze()
    }

    /// Inverse of [`Answer::encode`]; `None` for bytes it did not write.
    pub fn decode(bytes: &Bytes) -> Option<(Answer, Usage)> {
        if bytes.len() < 18 || bytes[0] != VERSION {
            return None;
        }
        let num = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            i64::from_le_bytes(b)
        };
        let usage = Usage {
            prompt: num(2),
            completion: num(10),
        };
        let body = bytes.slice(18..);
        let answer = match bytes[1] {
            b'J' => Answer::Json(body),
            b'S' => {
                let mut frames = Vec::new();
                let mut at = 0;
                while at < body.len() {
                    let len = u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?) as usize;
                    at += 4;
                    frames.push(body.get(at..at + len).map(|_| body.slice(at..at + len))?);
                    at += len;
                }
                Answer::Stream(frames)
            }
            _ => return None,
        };
        Some((answer, usage))
    }

    /// The answer as one `chat.completion` JSON body.
    pub fn to_json(&self) -> Bytes {
        match self {
            Answer::Json(b) => b.clone(),
            Answer::Stream(frames) => {
                let chunks: Vec<Value> = frames
                    .iter()
                    .filter_map(|f| serde_json::from_slice(f).ok())
                    .collect();
                Bytes::from(assemble(&chunks).to_string())
            }
        }
    }

    /// The answer as stream chunk payloads; `include_usage` keeps (or, from JSON, adds) the
    /// usage-only last chunk.
    pub fn to_frames(&self, include_usage: bool) -> Vec<Bytes> {
        match self {
            Answer::Stream(frames) => frames
                .iter()
                .filter(|f| include_usage || !is_usage_only(f))
                .cloned()
                .collect(),
            Answer::Json(b) => match serde_json::from_slice::<Value>(b) {
                Ok(v) => split(&v, include_usage)
                    .into_iter()
                    .map(|c| Bytes::from(c.to_string()))
                    .collect(),
                Err(_) => Vec::new(),
            },
        }
    }
}

/// Whether a chunk is the usage-only last chunk `stream_options.include_usage` asks for
/// (empty `choices`, a `usage` object).
pub fn is_usage_only(frame: &[u8]) -> bool {
    if !memchr(frame, b"\"usage\"") {
        return false;
    }
    serde_json::from_slice::<Value>(frame).is_ok_and(|v| {
        v.get("choices")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
            && v.get("usage").is_some_and(Value::is_object)
    })
}

fn memchr(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A choice being assembled: its index, its message, and its other fields.
type Choice = (i64, Map<String, Value>, Map<String, Value>);

/// Assembles stream chunks into the `chat.completion` they describe: string fields of each
/// choice's deltas concatenated (content, reasoning fields, refusal...), tool calls joined by
/// index, the last finish reason, logprobs appended, the usage kept.
pub fn assemble(chunks: &[Value]) -> Value {
    let mut out = Map::new();
    let mut choices: Vec<Choice> = Vec::new();
    for chunk in chunks {
        let Some(obj) = chunk.as_object() else {
            continue;
        };
        for (k, v) in obj {
            match k.as_str() {
                "choices" | "object" => {}
                "usage" if v.is_null() => {}
                _ => {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        for choice in obj
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = choice.get("index").and_then(Value::as_i64).unwrap_or(0);
            let slot = match choices.iter().position(|(i, _, _)| *i == index) {
                Some(p) => p,
                None => {
                    choices.push((index, Map::new(), Map::new()));
                    choices.len() - 1
                }
            };
            let (_, message, rest) = &mut choices[slot];
            if let Some(delta) = choice.get("delta").and_then(Value::as_object) {
                merge_delta(message, delta);
            }
            for (k, v) in choice.as_object().into_iter().flatten() {
                match k.as_str() {
                    "delta" | "index" => {}
                    "logprobs" => merge_logprobs(rest, v),
                    _ if v.is_null() && rest.contains_key(k) => {}
                    _ => {
                        rest.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
    out.insert("object".into(), json!("chat.completion"));
    choices.sort_by_key(|(i, _, _)| *i);
    let choices: Vec<Value> = choices
        .into_iter()
        .map(|(index, mut message, rest)| {
            message.entry("role").or_insert(json!("assistant"));
            message.entry("content").or_insert(Value::Null);
            let mut c = Map::new();
            c.insert("index".into(), json!(index));
            c.insert("message".into(), Value::Object(message));
            c.extend(rest);
            c.entry("finish_reason").or_insert(Value::Null);
            Value::Object(c)
        })
        .collect();
    out.insert("choices".into(), Value::Array(choices));
    Value::Object(out)
}

fn merge_delta(message: &mut Map<String, Value>, delta: &Map<String, Value>) {
    for (k, v) in delta {
        match (k.as_str(), v) {
            (_, Value::Null) => {
                message.entry(k.clone()).or_insert(Value::Null);
            }
            ("role", _) => {
                message.insert(k.clone(), v.clone());
            }
            ("tool_calls", Value::Array(calls)) => {
                let list = message
                    .entry("tool_calls")
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(list) = list {
                    for call in calls {
                        merge_tool_call(list, call);
                    }
                }
            }
            (_, Value::String(s)) => match message.get_mut(k) {
                Some(Value::String(acc)) => acc.push_str(s),
                _ => {
                    message.insert(k.clone(), v.clone());
                }
            },
            _ => {
                message.insert(k.clone(), v.clone());
            }
        }
    }
}

fn merge_tool_call(list: &mut Vec<Value>, call: &Value) {
    let index = call.get("index").and_then(Value::as_i64).unwrap_or(0);
    let pos = list
        .iter()
        .position(|c| c.get("index").and_then(Value::as_i64) == Some(index));
    let Some(pos) = pos else {
        list.push(call.clone());
        return;
    };
    let (Some(acc), Some(part)) = (list[pos].as_object_mut(), call.as_object()) else {
        return;
    };
    for (k, v) in part {
        match (k.as_str(), v) {
            ("function", Value::Object(f)) => {
                let target = acc
                    .entry("function")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(target) = target {
                    for (fk, fv) in f {
                        match (target.get_mut(fk), fv) {
                            (Some(Value::String(a)), Value::String(s)) => a.push_str(s),
                            _ => {
                                target.insert(fk.clone(), fv.clone());
                            }
                        }
                    }
                }
            }
            ("index", _) => {}
            (_, Value::Null) => {}
            _ => {
                acc.insert(k.clone(), v.clone());
            }
        }
    }
}

fn merge_logprobs(rest: &mut Map<String, Value>, v: &Value) {
    let Some(parts) = v.as_object() else {
        rest.entry("logprobs").or_insert(v.clone());
        return;
    };
    let target = rest
        .entry("logprobs")
        .or_insert_with(|| Value::Object(Map::new()));
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (k, items) in parts {
            match (target.get_mut(k), items) {
                (Some(Value::Array(acc)), Value::Array(more)) => acc.extend(more.iter().cloned()),
                _ => {
                    target.insert(k.clone(), items.clone());
                }
            }
        }
    }
}

/// A `chat.completion` as the chunks a stream of it would have carried: per choice, one
/// chunk with the whole message as its delta and one with its finish reason, then the usage
/// chunk when asked.
pub fn split(completion: &Value, include_usage: bool) -> Vec<Value> {
    let mut head = Map::new();
    for k in [
        "id",
        "created",
        "model",
        "system_fingerprint",
        "service_tier",
    ] {
        if let Some(v) = completion.get(k) {
            head.insert(k.into(), v.clone());
        }
    }
    head.insert("object".into(), json!("chat.completion.chunk"));
    let chunk = |choices: Value| {
        let mut c = head.clone();
        c.insert("choices".into(), choices);
        Value::Object(c)
    };
    let mut out = Vec::new();
    for choice in completion
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let index = choice.get("index").cloned().unwrap_or(json!(0));
        let mut delta = choice
            .get("message")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
            for (i, call) in calls.iter_mut().enumerate() {
                if let Some(c) = call.as_object_mut() {
                    c.insert("index".into(), json!(i));
                }
            }
        }
        let mut first = json!({"index": index, "delta": delta, "finish_reason": null});
        if let Some(lp) = choice.get("logprobs")
            && !lp.is_null()
        {
            first["logprobs"] = lp.clone();
        }
        out.push(chunk(json!([first])));
        let finish = choice.get("finish_reason").cloned().unwrap_or(Value::Null);
        out.push(chunk(
            json!([{"index": index, "delta": {}, "finish_reason": finish}]),
        ));
    }
    if include_usage && let Some(u) = completion.get("usage") {
        let mut c = head.clone();
        c.insert("choices".into(), json!([]));
        c.insert("usage".into(), u.clone());
        out.push(Value::Object(c));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks() -> Vec<Value> {
        vec![
            json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"","reasoning_content":"Let me"},"finish_reason":null}]}),
            json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"reasoning_content":" think.","content":"Hel"},"finish_reason":null}]}),
            json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":"{\"ci"}}]},"finish_reason":null}]}),
            json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"lo","tool_calls":[{"index":0,"function":{"arguments":"ty\":1}"}}]},"finish_reason":"tool_calls"}]}),
            json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":5,"total_tokens":12}}),
        ]
    }

    #[test]
    fn a_stream_assembles_into_the_completion_it_describes() {
        let v = assemble(&chunks());
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["id"], "c1");
        let m = &v["choices"][0]["message"];
        assert_eq!(m["content"], "Hello");
        assert_eq!(m["reasoning_content"], "Let me think.");
        assert_eq!(m["tool_calls"][0]["function"]["arguments"], "{\"city\":1}");
        assert_eq!(m["tool_calls"][0]["id"], "call_1");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["usage"]["total_tokens"], 12);
    }

    #[test]
    fn a_completion_split_into_chunks_assembles_back_to_itself() {
        let v = assemble(&chunks());
        let again = assemble(&split(&v, true));
        assert_eq!(again["choices"], v["choices"]);
        assert_eq!(again["usage"], v["usage"]);
        assert!(split(&v, false).iter().all(|c| c.get("usage").is_none()));
    }

    #[test]
    fn encoding_round_trips_and_usage_only_chunks_can_be_dropped() {
        let frames: Vec<Bytes> = chunks()
            .iter()
            .map(|c| Bytes::from(c.to_string()))
            .collect();
        let a = Answer::Stream(frames);
        let usage = a.usage().unwrap();
        assert_eq!(
            usage,
            Usage {
                prompt: 7,
                completion: 5
            }
        );
        let (back, u) = Answer::decode(&a.encode(usage)).unwrap();
        assert_eq!((back.clone(), u), (a.clone(), usage));
        assert_eq!(back.to_frames(true).len(), 5);
        assert_eq!(back.to_frames(false).len(), 4);
        let j = Answer::Json(Bytes::from_static(
            b"{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}",
        ));
        assert_eq!(
            Answer::decode(&j.encode(j.usage().unwrap()))
                .unwrap()
                .1
                .prompt,
            3
        );
        assert!(Answer::decode(&Bytes::from_static(b"junk")).is_none());
    }
}
