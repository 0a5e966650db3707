//! Shared test scaffolding: servers on port 0 with fresh data directories, upload helpers,
//! and fixture generators (a real PDF with a text layer).

use std::time::Duration;

use reqwest::multipart::{Form, Part};
use serde_json::Value;
use strata_engine::{Engine, EngineSettings};
use strata_server::{App, ServerSettings};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// Whether this run exercises PostgreSQL (`STRATA_TEST_BACKEND=postgres`) instead of the
/// embedded SQLite default: the same test bodies, two backends.
pub fn on_postgres() -> bool {
    std::env::var("STRATA_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// Whether this run keeps the embedded store's vectors in a qdrant-edge shard
/// (`STRATA_TEST_BACKEND=qdrant`) instead of usearch.
pub fn on_qdrant() -> bool {
    std::env::var("STRATA_TEST_BACKEND").is_ok_and(|b| b == "qdrant")
}

/// The PostgreSQL server tests create their databases on.
pub fn postgres_server() -> String {
    std::env::var("STRATA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh PostgreSQL database (with pgvector available) for one test; its URL.
/// The shared test Redis (`STRATA_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`).
pub fn redis_url() -> String {
    std::env::var("STRATA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// This test process's Redis namespace: its own keys and channels, so an invalidation waits
/// for this test's servers only and a cache clear cannot touch another test's entries.
pub fn redis_namespace() -> &'static str {
    static NS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NS.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("strata-test-{}-{nanos}", std::process::id())
    })
}

/// Redis settings for an in-process engine: the test Redis, in this test's namespace.
pub fn redis_settings() -> strata_engine::RedisSettings {
    let mut r = strata_engine::RedisSettings::new(redis_url());
    r.namespace = redis_namespace().to_owned();
    r
}

pub async fn fresh_postgres() -> String {
    use sqlx::Connection;
    let server = postgres_server();
    let name = format!("strata_it_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(&server)
        .await
        .expect("STRATA_TEST_DATABASE_URL answers");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create database");
    let _ = admin.close().await;
    match server.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("STRATA_TEST_DATABASE_URL needs a database path"),
    }
}

/// The database URL of the test owning `dir` on this run's backend: `None` for the embedded
/// default, else one PostgreSQL database per directory, kept across restarts.
pub async fn database_for(dir: &std::path::Path) -> Option<String> {
    if !on_postgres() {
        return None;
    }
    let marker = dir.join("postgres-url");
    if let Ok(url) = std::fs::read_to_string(&marker) {
        return Some(url);
    }
    let url = fresh_postgres().await;
    std::fs::write(&marker, &url).expect("write marker");
    Some(url)
}

/// Whether the original file with this hash is stored (on disk, or in PostgreSQL's table).
pub async fn blob_stored(dir: &std::path::Path, sha: &str) -> bool {
    match database_for(dir).await {
        None => dir
            .join("data/blobs")
            .join(&sha[..2])
            .join(&sha[2..4])
            .join(sha)
            .exists(),
        Some(url) => {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&url).await.expect("connect");
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blobs WHERE sha256 = $1")
                .bind(sha)
                .fetch_one(&mut c)
                .await
                .expect("count blobs");
            n > 0
        }
    }
}

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub dir: TempDir,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut EngineSettings)) -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir"), configure).await
    }

    /// Starts a server over an existing directory (a restart, when it held a server before).
    pub async fn start_in(dir: TempDir, configure: impl FnOnce(&mut EngineSettings)) -> Self {
        Self::start_custom(dir, configure, |_| {}).await
    }

    /// Starts a server whose tenants are named by the `x-tenant` header (as behind an
    /// authenticating proxy), `admins` holding the admin role.
    pub async fn with_tenant_header(admins: &[&str]) -> Self {
        Self::with_tenant_header_in(tempfile::tempdir().expect("tempdir"), admins).await
    }

    /// [`TestServer::with_tenant_header`] over an existing directory (a restart).
    pub async fn with_tenant_header_in(dir: TempDir, admins: &[&str]) -> Self {
        let admins: std::collections::HashSet<strata_engine::TenantId> = admins
            .iter()
            .map(|a| strata_engine::TenantId::parse(a).unwrap())
            .collect();
        Self::start_custom(
            dir,
            |_| {},
            |srv| {
                srv.identity = strata_server::caller::Identity::Header {
                    name: strata_server::HeaderName::from_static("x-tenant"),
                    admins: std::sync::Arc::new(admins),
                }
            },
        )
        .await
    }

    /// Starts a server with both the engine's and the HTTP layer's settings adjusted.
    pub async fn start_custom(
        dir: TempDir,
        configure: impl FnOnce(&mut EngineSettings),
        configure_server: impl FnOnce(&mut ServerSettings),
    ) -> Self {
        let mut settings = EngineSettings {
            data_dir: dir.path().join("data"),
            ..EngineSettings::default()
        };
        if let Ok(dir) = std::env::var("STRATA_MODEL_DIR") {
            settings.model_dir = dir.into();
        }
        settings.database_url = database_for(dir.path()).await.map(Into::into);
        if on_qdrant() {
            settings.ann.local = strata_engine::vectors::LocalIndex::Qdrant;
        }
        // Tests that never embed skip loading the model's weights.
        settings.load_model = strata_engine::ModelLoad::OnFirstUse;
        settings.jobs.poll_interval = Duration::from_millis(100);
        settings.jobs.backoff_base = Duration::from_millis(100);
        // Concurrent searches on a busy CI machine could pass the model's wait budget and be
        // turned away; the tests that are about admission set it themselves.
        settings.batch.max_queue_wait = None;
        // Extraction runs in children of the strata executable, as under `strata serve`.
        settings.extract.helper = Some(env!("CARGO_BIN_EXE_strata").into());
        configure(&mut settings);
        let engine = Engine::open(settings).await.expect("engine opens");
        let mut server = ServerSettings {
            listen: "127.0.0.1:0".parse().expect("addr"),
            shutdown_grace: Duration::from_secs(2),
            ..ServerSettings::default()
        };
        configure_server(&mut server);
        let app = App::build(engine, server).await.expect("bind");
        let addr = app.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(app.run(shutdown.clone()));
        Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            dir,
            shutdown,
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.expect("json")
    }

    pub async fn upload(
        &self,
        name: &str,
        bytes: Vec<u8>,
        mime: Option<&str>,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut part = Part::bytes(bytes).file_name(name.to_owned());
        if let Some(m) = mime {
            part = part.mime_str(m).expect("mime");
        }
        let mut form = Form::new().part("file", part);
        for (k, v) in fields {
            form = form.text((*k).to_owned(), (*v).to_owned());
        }
        self.client
            .post(self.url("/v1/documents"))
            .multipart(form)
            .send()
            .await
            .expect("upload")
    }

    pub async fn upload_json(&self, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/documents"))
            .json(&body)
            .send()
            .await
            .expect("upload")
    }

    /// Uploads text and returns the created document's JSON (asserting 202).
    pub async fn create_text(&self, text: &str, tags: &[&str]) -> Value {
        let r = self
            .upload_json(serde_json::json!({ "text": text, "tags": tags }))
            .await;
        assert_eq!(r.status(), 202, "{:?}", r.text().await);
        r.json::<Value>().await.expect("json")["document"].clone()
    }

    /// Polls a job until it reaches a terminal state.
    pub async fn wait_job(&self, job_id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let job = self.get_json(&format!("/v1/jobs/{job_id}")).await;
            let status = job["status"].as_str().unwrap_or_default().to_owned();
            if ["succeeded", "failed", "cancelled"].contains(&status.as_str()) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {job_id} stuck: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A request as a tenant named by the `x-tenant` header, with a JSON body when given.
    pub async fn request_as(
        &self,
        tenant: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut r = self
            .client
            .request(method, self.url(path))
            .header("x-tenant", tenant);
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.expect("request")
    }

    /// GET as a tenant named by the `x-tenant` header.
    pub async fn get_json_as(&self, path: &str, tenant: &str) -> Value {
        self.client
            .get(self.url(path))
            .header("x-tenant", tenant)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json")
    }

    pub async fn stop(self) {
        self.stop_keep().await;
    }

    /// Stops the server and hands back its directory for a restart.
    pub async fn stop_keep(self) -> TempDir {
        self.shutdown.cancel();
        let res = tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("server stops within 20 s")
            .expect("server task");
        res.expect("server exits cleanly");
        self.dir
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn patch_url(&self, url: &str, body: Value) -> reqwest::Response {
        self.client
            .patch(url)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn post_json(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request")
    }
}

/// Asserts a search answer's hits are best first (scores never rise).
pub fn assert_best_first(res: &Value) {
    let scores: Vec<f64> = res["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| h["score"].as_f64().expect("score"))
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {scores:?}"
    );
}

/// A page of documents as (id, title) pairs, in the page's order.
pub fn ids_and_titles(page: &Value) -> Vec<(String, String)> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_owned(),
                d["title"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// L1 plus L2 hits over every kind, from a `/v1/performance/cache/stats` body.
pub fn cache_hits(stats: &Value) -> u64 {
    stats["cache"]["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["hits_l1"].as_u64().unwrap() + k["hits_l2"].as_u64().unwrap())
        .sum()
}

/// Asserts a problem+json response and returns its body.
pub async fn assert_problem(resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status, "unexpected status");
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert_eq!(ctype, "application/problem+json");
    let body: Value = resp.json().await.expect("problem json");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert_eq!(body["type"], format!("urn:strata:problem:{code}"));
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

/// A minimal, valid one-page PDF whose text layer holds `lines`.
pub fn pdf_with_text(lines: &[&str]) -> Vec<u8> {
    let mut content = String::from("BT /F1 12 Tf 72 720 Td 14 TL\n");
    for line in lines {
        let escaped = line
            .replace('\\', "\\\\")
            .replace('(', "\\(")
            .replace(')', "\\)");
        content.push_str(&format!("({escaped}) Tj T*\n"));
    }
    content.push_str("ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
         /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_owned(),
        format!(
            "<< /Length {} >>\nstream\n{content}\nendstream",
            content.len()
        ),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_owned(),
    ];
    let objects: Vec<Vec<u8>> = objects.into_iter().map(String::into_bytes).collect();
    pdf_from(&objects, None)
}

/// A PDF of these objects (numbered from 1, the first the catalog) with a correct
/// cross-reference table; `size` overrides the trailer's `/Size`.
pub fn pdf_from(objects: &[Vec<u8>], size: Option<u64>) -> Vec<u8> {
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, obj) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(obj);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    let size = size.unwrap_or(objects.len() as u64 + 1);
    out.extend_from_slice(
        format!("trailer\n<< /Size {size} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n").as_bytes(),
    );
    out
}

/// Every chunk of a document, following `next_from`.
pub async fn all_chunks(server: &TestServer, doc_id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut from = 0u64;
    loop {
        let page = server
            .get_json(&format!(
                "/v1/documents/{doc_id}/chunks?from={from}&limit=500"
            ))
            .await;
        out.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_from"].as_u64() {
            Some(n) => from = n,
            None => return out,
        }
    }
}
