//! The gateway across instances over one Redis: identical concurrent requests reaching
//! different instances make one upstream call, whose stream fans out to all of them.

use std::time::Duration;

use serde_json::{Value, json};

use super::helpers::{TestServer, redis_settings};
use super::upstream::Upstream;

async fn instance(up: &Upstream) -> TestServer {
    let upstream = up.settings("u0");
    TestServer::start_custom(
        tempfile::tempdir().unwrap(),
        |e| e.cache.redis = Some(redis_settings()),
        move |srv| {
            srv.gateway.upstreams = vec![upstream];
            srv.gateway.first_byte_timeout = Duration::from_secs(5);
        },
    )
    .await
}

fn events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_requests_on_two_instances_make_one_upstream_call() {
    let up = Upstream::start().await;
    let (a, b) = (instance(&up).await, instance(&up).await);
    // Unique per run: Redis outlives the test, and an answer cached by an earlier run
    // would be a hit, not a flight.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let q = json!({"model": "mock-1", "temperature": 0, "messages": [
        {"role": "user", "content": format!("shared {nonce} [slow] [drip]")}]});
    let mut tasks = Vec::new();
    for i in 0..12u64 {
        let s = if i % 2 == 0 { &a } else { &b };
        let (client, url, mut body) = (s.client.clone(), s.url("/v1/chat/completions"), q.clone());
        body["stream"] = json!(i % 3 != 0);
        tasks.push(tokio::spawn(async move {
            // Late joiners arrive while the leader is mid-stream.
            tokio::time::sleep(Duration::from_millis(25 * i)).await;
            let r = client.post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let flight = r
                .headers()
                .get("x-gateway-flight")
                .map(|v| v.to_str().unwrap().to_owned());
            (flight, r.text().await.unwrap())
        }));
    }
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    assert_eq!(
        up.calls(),
        1,
        "one upstream call for 12 requests on two instances"
    );
    assert!(
        replies
            .iter()
            .any(|(f, _)| f.as_deref() == Some("joined-remote")),
        "some request followed the other instance's call: {:?}",
        replies.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    let reference = events(&replies[1].1);
    assert_eq!(reference.last().unwrap(), "[DONE]");
    let content = format!("echo: shared {nonce} [slow] [drip]");
    for (i, (_, body)) in replies.iter().enumerate() {
        if i % 3 == 0 {
            let v: Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["choices"][0]["message"]["content"], content.as_str());
        } else {
            assert_eq!(
                events(body),
                reference,
                "stream {i} got every chunk in order"
            );
        }
    }
    // The call is over: a request that will not take a cached answer leads a call of its
    // own on either instance, rather than following the finished one.
    let mut fresh = q.clone();
    fresh["stream"] = json!(true);
    for s in [&b, &a] {
        let r = s
            .client
            .post(s.url("/v1/chat/completions"))
            .header("cache-control", "no-cache")
            .json(&fresh)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers().get("x-gateway-flight").is_none(),
            "{:?}",
            r.headers()
        );
        assert_eq!(events(&r.text().await.unwrap()).last().unwrap(), "[DONE]");
    }
    assert_eq!(up.calls(), 3);
    a.stop().await;
    b.stop().await;
}
