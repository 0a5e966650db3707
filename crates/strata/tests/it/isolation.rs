//! Tenant isolation through the cache: random interleavings of two tenants' writes and reads
//! of documents and memories through the HTTP API (L1 and Redis L2 both on, memories' working
//! sets in process), checked against a model, with tenants named by a trusted header and
//! with tenants of bearer JWTs. No read or search may return the other tenant's data, nor
//! data older than a write the server already acknowledged.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::helpers::{TestServer, ids_and_titles};

const TENANTS: [&str; 2] = ["alice", "bob"];

#[derive(Debug, Clone)]
enum Op {
    Create,
    Rename(usize),
    Delete(usize),
    List,
    Get(usize),
    GetOthers(usize),
    Tags,
    Remember,
    Forget(usize),
    Recall,
    ListMemories,
    GetOthersMemory(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Create),
        1 => (0usize..100).prop_map(Op::Rename),
        1 => (0usize..100).prop_map(Op::Delete),
        3 => Just(Op::List),
        2 => (0usize..100).prop_map(Op::Get),
        1 => (0usize..100).prop_map(Op::GetOthers),
        2 => Just(Op::Tags),
        2 => Just(Op::Remember),
        1 => (0usize..100).prop_map(Op::Forget),
        2 => Just(Op::Recall),
        1 => Just(Op::ListMemories),
        1 => (0usize..100).prop_map(Op::GetOthersMemory),
    ]
}

/// What one tenant has, as acknowledged by the server: documents, id -> (title, tag), and
/// memories, id -> text.
#[derive(Debug, Clone, Default)]
struct Model {
    docs: BTreeMap<String, (String, String)>,
    memories: BTreeMap<String, String>,
}

struct Client<'a> {
    s: &'a TestServer,
    tenant: &'static str,
    /// The header that names the caller: `x-tenant` or `authorization`.
    credential: (&'static str, String),
}

/// How the server learns who calls.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Header,
    Jwt,
}

const SECRET: &str = "isolation-test-secret-isolation-test-secret";

fn credential(mode: Mode, tenant: &str) -> (&'static str, String) {
    match mode {
        Mode::Header => ("x-tenant", tenant.to_owned()),
        Mode::Jwt => {
            let token = strata_server::auth::mint(
                &auth_settings(),
                &strata_engine::TenantId::parse(tenant).unwrap(),
                strata_server::caller::Role::User,
                std::time::Duration::from_secs(600),
            )
            .unwrap();
            ("authorization", format!("Bearer {token}"))
        }
    }
}

fn auth_settings() -> strata_server::auth::AuthSettings {
    strata_server::auth::AuthSettings {
        secret: Some(strata_server::auth::Secret::new(SECRET)),
        ..Default::default()
    }
}

impl Client<'_> {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut r = self
            .s
            .client
            .request(method, self.s.url(path))
            .header(self.credential.0, &self.credential.1);
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.unwrap()
    }
}

fn nth<V>(model: &BTreeMap<String, V>, i: usize) -> Option<String> {
    (!model.is_empty()).then(|| model.keys().nth(i % model.len()).unwrap().clone())
}

async fn step(c: &Client<'_>, model: &mut Model, other: &Model, op: &Op, n: usize) {
    let who = c.tenant;
    match op {
        Op::Create => {
            let title = format!("{who} doc {n}");
            let tag = format!("{who}-tag-{}", n % 3);
            let r = c
                .send(
                    reqwest::Method::POST,
                    "/v1/documents",
                    Some(json!({"text": format!("{title} body"), "title": title, "tags": [tag]})),
                )
                .await;
            assert_eq!(r.status(), 202);
            let d: Value = r.json().await.unwrap();
            model.docs.insert(
                d["document"]["id"].as_str().unwrap().to_owned(),
                (title, tag),
            );
        }
        Op::Rename(i) => {
            let Some(id) = nth(&model.docs, *i) else {
                return;
            };
            let title = format!("{who} renamed {n}");
            let r = c
                .send(
                    reqwest::Method::PATCH,
                    &format!("/v1/documents/{id}"),
                    Some(json!({"title": title})),
                )
                .await;
            assert_eq!(r.status(), 200);
            model.docs.get_mut(&id).unwrap().0 = title;
        }
        Op::Delete(i) => {
            let Some(id) = nth(&model.docs, *i) else {
                return;
            };
            let r = c
                .send(
                    reqwest::Method::DELETE,
                    &format!("/v1/documents/{id}"),
                    None,
                )
                .await;
            assert_eq!(r.status(), 204);
            model.docs.remove(&id);
        }
        Op::List => {
            let r = c
                .send(reqwest::Method::GET, "/v1/documents?limit=100", None)
                .await;
            let page: Value = r.json().await.unwrap();
            let seen: BTreeMap<String, String> = ids_and_titles(&page).into_iter().collect();
            let want: BTreeMap<String, String> = model
                .docs
                .iter()
                .map(|(k, (t, _))| (k.clone(), t.clone()))
                .collect();
            assert!(
                seen.keys().all(|k| !other.docs.contains_key(k)),
                "{who} saw the other tenant's documents"
            );
            assert_eq!(
                seen, want,
                "{who}'s list is not what the server acknowledged"
            );
        }
        Op::Get(i) => {
            let Some(id) = nth(&model.docs, *i) else {
                return;
            };
            let r = c
                .send(reqwest::Method::GET, &format!("/v1/documents/{id}"), None)
                .await;
            assert_eq!(r.status(), 200);
            let d: Value = r.json().await.unwrap();
            assert_eq!(d["title"], model.docs[&id].0, "{who} read a stale title");
        }
        Op::GetOthers(i) => {
            let Some(id) = nth(&other.docs, *i) else {
                return;
            };
            let r = c
                .send(reqwest::Method::GET, &format!("/v1/documents/{id}"), None)
                .await;
            assert_eq!(r.status(), 404, "{who} read the other tenant's document");
        }
        Op::Tags => {
            let r = c.send(reqwest::Method::GET, "/v1/tags", None).await;
            let tags: Value = r.json().await.unwrap();
            let mut seen: Vec<(String, u64)> = tags["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    (
                        t["tag"].as_str().unwrap().to_owned(),
                        t["count"].as_u64().unwrap(),
                    )
                })
                .collect();
            seen.sort();
            let mut want: BTreeMap<String, u64> = BTreeMap::new();
            for (_, tag) in model.docs.values() {
                *want.entry(tag.clone()).or_default() += 1;
            }
            assert_eq!(
                seen,
                want.into_iter().collect::<Vec<_>>(),
                "{who}'s tag counts"
            );
        }
        Op::Remember => {
            let text = format!("{who} remembers item {n}");
            let r = c
                .send(
                    reqwest::Method::POST,
                    "/v1/memories",
                    Some(json!({"text": text, "metadata": {"n": n}})),
                )
                .await;
            assert!(r.status().is_success(), "{}", r.status());
            let a: Value = r.json().await.unwrap();
            // A near-duplicate merges into the memory it duplicates, which takes the new text.
            model.memories.insert(
                a["memory"]["id"].as_str().unwrap().to_owned(),
                a["memory"]["text"].as_str().unwrap().to_owned(),
            );
        }
        Op::Forget(i) => {
            let Some(id) = nth(&model.memories, *i) else {
                return;
            };
            let r = c
                .send(reqwest::Method::DELETE, &format!("/v1/memories/{id}"), None)
                .await;
            assert_eq!(r.status(), 204);
            model.memories.remove(&id);
        }
        Op::Recall => {
            let r = c
                .send(
                    reqwest::Method::POST,
                    "/v1/memories/search",
                    Some(json!({"query": format!("{who} remembers"), "k": 100, "record_access": false})),
                )
                .await;
            assert_eq!(r.status(), 200);
            let res: Value = r.json().await.unwrap();
            let seen: BTreeMap<String, String> = res["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    (
                        h["memory"]["id"].as_str().unwrap().to_owned(),
                        h["memory"]["text"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            assert!(
                seen.keys().all(|k| !other.memories.contains_key(k)),
                "{who} recalled the other tenant's memory"
            );
            assert_eq!(
                seen, model.memories,
                "{who}'s recall is not what the server acknowledged"
            );
        }
        Op::ListMemories => {
            let r = c
                .send(reqwest::Method::GET, "/v1/memories?limit=500", None)
                .await;
            let page: Value = r.json().await.unwrap();
            let seen: BTreeMap<String, String> = page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    (
                        m["id"].as_str().unwrap().to_owned(),
                        m["text"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            assert_eq!(
                seen, model.memories,
                "{who}'s memories are not what the server acknowledged"
            );
        }
        Op::GetOthersMemory(i) => {
            let Some(id) = nth(&other.memories, *i) else {
                return;
            };
            for (method, path) in [
                (reqwest::Method::GET, format!("/v1/memories/{id}")),
                (reqwest::Method::GET, format!("/v1/memories/{id}/history")),
            ] {
                let r = c.send(method, &path, None).await;
                assert_eq!(r.status(), 404, "{who} read the other tenant's memory");
            }
        }
    }
}

async fn run_case(mode: Mode, ops: Vec<(Op, Op)>) {
    let s = TestServer::start_custom(
        tempfile::tempdir().unwrap(),
        |e| {
            e.jobs.workers = 0;
            e.cache.redis = Some(crate::helpers::redis_settings());
        },
        |srv| {
            srv.identity = match mode {
                Mode::Header => strata_server::caller::Identity::Header {
                    name: strata_server::HeaderName::from_static("x-tenant"),
                    admins: Default::default(),
                },
                Mode::Jwt => strata_server::caller::Identity::Token(std::sync::Arc::new(
                    strata_server::auth::Authenticator::new(&auth_settings()).unwrap(),
                )),
            }
        },
    )
    .await;
    let client = |tenant| Client {
        s: &s,
        tenant,
        credential: credential(mode, tenant),
    };
    let (a, b) = (client(TENANTS[0]), client(TENANTS[1]));
    let (mut ma, mut mb) = (Model::default(), Model::default());
    for (n, (oa, ob)) in ops.iter().enumerate() {
        // Each tenant's operations are sequential (its model is exact); the two tenants'
        // run concurrently, so one's writes interleave with the other's reads.
        let (sa, sb) = (ma.clone(), mb.clone());
        tokio::join!(step(&a, &mut ma, &sb, oa, n), step(&b, &mut mb, &sa, ob, n));
    }
    // A request naming no tenant is refused.
    let r = s.client.get(s.url("/v1/documents")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // The cache took part: a read repeated with no write between is a hit (a random sequence
    // may separate every pair of reads by a write, so this is asserted here, not of it).
    let path = "/v1/documents?limit=100";
    a.send(reqwest::Method::GET, path, None).await;
    let again = a.send(reqwest::Method::GET, path, None).await;
    let x_cache = again.headers()["x-cache"].to_str().unwrap().to_owned();
    assert!(
        x_cache.starts_with("HIT"),
        "a repeated read answered {x_cache}"
    );
    s.stop().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn tenants_never_see_each_other_or_stale_data(ops in prop::collection::vec((op(), op()), 1..60)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run_case(Mode::Header, ops));
    }

    #[test]
    fn jwt_tenants_never_see_each_other_or_stale_data(ops in prop::collection::vec((op(), op()), 1..60)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run_case(Mode::Jwt, ops));
    }
}
