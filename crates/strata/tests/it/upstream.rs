//! A local server speaking OpenAI's chat completions protocol, standing in for an LLM
//! provider this machine cannot reach. What it does is chosen by markers in the last
//! message's content:
//! - `[slow]`: waits 300 ms before answering (so concurrent requests overlap);
//! - `[drip]`: 100 ms between chunks;
//! - `[fail500]`: answers 500 with an OpenAI error; `[fail-once]`: 503 on the first call of
//!   that content, then answers;
//! - `[midstream-error]`: two chunks, then an `error` object, then the end;
//! - `[cut]`: two chunks, then the connection closes without `[DONE]`;
//! - `[tools]`: a tool call split over several deltas; `[reasoning]`: `reasoning_content`
//!   deltas before the content;
//! - `[hang]`: never answers.
//!
//! The answer is `echo: <content>`, in chunks of 8 characters when streamed; usage is the
//! content's length in prompt tokens and the chunk count in completion tokens. Every
//! request's headers and body are recorded.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// What the mock saw.
#[derive(Default)]
pub struct Seen {
    /// Chat calls.
    pub calls: AtomicUsize,
    /// Streams whose client went away before the end.
    pub dropped: AtomicUsize,
    /// Each call's headers and body.
    pub requests: Mutex<Vec<(HeaderMap, Value)>>,
    /// Calls per content.
    per_content: Mutex<HashMap<String, usize>>,
    /// Calls being answered now, and the most there ever were at once (a call counts until
    /// its handler returns, before its response is written).
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

/// Takes a call out of the in-flight count when its handler returns.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running mock upstream.
pub struct Upstream {
    /// Its base URL, up to `/v1`.
    pub base: String,
    /// What it saw.
    pub seen: Arc<Seen>,
}

impl Upstream {
    /// Starts one on a free port.
    pub async fn start() -> Self {
        let seen = Arc::new(Seen::default());
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(chat))
            .route("/v1/models", axum::routing::get(models))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            base: format!("http://{addr}/v1"),
            seen,
        }
    }

    /// Chat calls so far.
    pub fn calls(&self) -> usize {
        self.seen.calls.load(Ordering::SeqCst)
    }

    /// The most chat calls it was answering at once.
    pub fn most_in_flight(&self) -> usize {
        self.seen.most_in_flight.load(Ordering::SeqCst)
    }

    /// The gateway settings of one upstream: this one, serving any model.
    pub fn settings(&self, name: &str) -> strata_server::GatewayUpstream {
        strata_server::GatewayUpstream {
            name: name.into(),
            base_url: self.base.clone(),
            api_key: Some("sk-upstream-secret".into()),
            ..Default::default()
        }
    }
}

async fn models() -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": "mock-1", "object": "model", "created": 0, "owned_by": "mock"}]}),
    )
}

fn chunk(id: &str, model: &str, delta: Value, finish: Value) -> Value {
    json!({"id": id, "object": "chat.completion.chunk", "created": 1700000000, "model": model,
           "system_fingerprint": "fp_mock", "x_custom": {"kept": true},
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}]})
}

async fn chat(
    State(seen): State<Arc<Seen>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    seen.calls.fetch_add(1, Ordering::SeqCst);
    let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    seen.most_in_flight.fetch_max(now, Ordering::SeqCst);
    let _in_flight = InFlight(&seen.in_flight);
    seen.requests.lock().unwrap().push((headers, body.clone()));
    let content = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned();
    let nth = {
        let mut per = seen.per_content.lock().unwrap();
        let n = per.entry(content.clone()).or_default();
        *n += 1;
        *n
    };
    let model = body["model"].as_str().unwrap_or("mock-1").to_owned();
    if content.contains("[hang]") {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if content.contains("[slow]") {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if content.contains("[fail500]") || (content.contains("[fail-once]") && nth == 1) {
        let status = if content.contains("[fail500]") {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return (
            status,
            Json(json!({"error": {"message": "mock failure", "type": "server_error", "param": null, "code": "mock_failed"}})),
        )
            .into_response();
    }
    let answer = format!("echo: {content}");
    let pieces: Vec<String> = answer
        .chars()
        .collect::<Vec<_>>()
        .chunks(8)
        .map(|c| c.iter().collect())
        .collect();
    let usage = json!({"prompt_tokens": content.len(), "completion_tokens": pieces.len(),
                       "total_tokens": content.len() + pieces.len()});
    let id = format!("chatcmpl-{nth}");
    if !body["stream"].as_bool().unwrap_or(false) {
        let mut message = json!({"role": "assistant", "content": answer});
        if content.contains("[reasoning]") {
            message["reasoning_content"] = json!("thinking it over");
        }
        return Json(json!({"id": id, "object": "chat.completion", "created": 1700000000,
            "model": model, "system_fingerprint": "fp_mock", "x_custom": {"kept": true},
            "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": null}],
            "usage": usage}))
        .into_response();
    }
    let mut events: Vec<Value> = vec![chunk(
        &id,
        &model,
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    if content.contains("[reasoning]") {
        for r in ["thinking ", "it over"] {
            events.push(chunk(
                &id,
                &model,
                json!({"reasoning_content": r}),
                Value::Null,
            ));
        }
    }
    if content.contains("[tools]") {
        events.push(chunk(&id, &model, json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": ""}}]}), Value::Null));
        for part in ["{\"q\":", "\"x\"}"] {
            events.push(chunk(
                &id,
                &model,
                json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
                Value::Null,
            ));
        }
    }
    for p in &pieces {
        events.push(chunk(&id, &model, json!({"content": p}), Value::Null));
    }
    events.push(chunk(
        &id,
        &model,
        json!({}),
        json!(if content.contains("[tools]") {
            "tool_calls"
        } else {
            "stop"
        }),
    ));
    let include_usage = body["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    if include_usage {
        events.push(
            json!({"id": id, "object": "chat.completion.chunk", "created": 1700000000,
            "model": model, "choices": [], "usage": usage}),
        );
    }
    let mut frames: Vec<String> = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    let broken = content.contains("[midstream-error]") || content.contains("[cut]");
    if broken {
        frames.truncate(2);
        if content.contains("[midstream-error]") {
            frames.push(format!("data: {}\n\n", json!({"error": {"message": "upstream overloaded mid-stream", "type": "server_error", "param": null, "code": null}})));
        }
    } else {
        frames.push("data: [DONE]\n\n".into());
    }
    let drip = content.contains("[drip]");
    struct Guard(Arc<Seen>, bool);
    impl Guard {
        fn disarm(&mut self) {
            self.1 = true;
        }
    }
    impl Drop for Guard {
        fn drop(&mut self) {
            if !self.1 {
                self.0.dropped.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    let guard = Guard(seen.clone(), false);
    let stream = futures_util::stream::unfold(
        (frames.into_iter(), guard, drip),
        |(mut it, mut guard, drip)| async move {
            match it.next() {
                Some(f) => {
                    if drip {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Some((Ok::<_, Infallible>(f), (it, guard, drip)))
                }
                None => {
                    guard.disarm();
                    None
                }
            }
        },
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("connection", "keep-alive")
        .header("x-upstream-only", "1")
        .body(Body::from_stream(stream))
        .unwrap()
}
