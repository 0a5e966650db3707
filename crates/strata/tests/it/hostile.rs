//! Hostile files: each is generated here, uploaded beside a healthy document, and must end its
//! own job (with a reason when it fails) while the server, the worker slots and every other
//! job carry on. Extraction runs in child processes under a memory and a time limit.

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{TestServer, pdf_from, pdf_with_text};

/// A PDF whose page tree is a cycle: the pages node lists itself as its own kid, and the page
/// names the pages node as its content.
fn cyclic_pdf() -> Vec<u8> {
    pdf_from(
        &[
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 /Parent 2 0 R >>".to_vec(),
            b"<< /Type /Page /Parent 2 0 R /Contents 3 0 R /Resources 3 0 R >>".to_vec(),
        ],
        None,
    )
}

/// A page whose content stream inflates from a few hundred KiB to `inflated` bytes of
/// spaces.
fn bomb_pdf(inflated: usize) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![b' '; 1 << 20];
    for _ in 0..inflated / block.len() {
        z.write_all(&block).unwrap();
    }
    let data = z.finish().unwrap();
    let mut stream = format!(
        "<< /Length {} /Filter /FlateDecode >>\nstream\n",
        data.len()
    )
    .into_bytes();
    stream.extend_from_slice(&data);
    stream.extend_from_slice(b"\nendstream");
    pdf_from(
        &[
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>".to_vec(),
            stream,
        ],
        None,
    )
}

/// A valid page of text whose trailer declares two billion objects.
fn gigantic_xref_pdf() -> Vec<u8> {
    let mut pdf = pdf_with_text(&["A modest page in a file that claims two billion objects."]);
    let text = String::from_utf8_lossy(&pdf).into_owned();
    let fixed = text.replacen("/Size 6", "/Size 2000000000", 1);
    assert_ne!(fixed, text);
    pdf = fixed.into_bytes();
    pdf
}

fn nested_html(depth: usize) -> Vec<u8> {
    format!(
        "<!DOCTYPE html><html><body>{}Deep inside the page.{}</body></html>",
        "<div>".repeat(depth),
        "</div>".repeat(depth)
    )
    .into_bytes()
}

async fn upload(s: &TestServer, name: &str, bytes: Vec<u8>) -> String {
    let r = s.upload(name, bytes, None, &[]).await;
    assert_eq!(r.status(), 202, "{name}: {:?}", r.text().await);
    let body: Value = r.json().await.unwrap();
    body["job"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn hostile_files_end_their_own_jobs_and_nothing_else() {
    let s = TestServer::start_with(|e| {
        e.extract.memory_limit = 256 * 1024 * 1024;
        e.jobs.extract_timeout = Duration::from_secs(20);
        e.jobs.max_attempts = 2;
    })
    .await;
    let hostile = [
        ("cycle.pdf", cyclic_pdf()),
        ("bomb.pdf", bomb_pdf(512 << 20)),
        ("objects.pdf", gigantic_xref_pdf()),
        ("nested.html", nested_html(10_000)),
    ];
    let mut jobs = Vec::new();
    for (name, bytes) in hostile {
        jobs.push((name, upload(&s, name, bytes).await));
    }
    let healthy = s
        .create_text("A healthy document uploaded beside hostile ones.", &[])
        .await;
    for (name, id) in &jobs {
        let job = s.wait_job(id).await;
        eprintln!("[hostile] {name}: {} {}", job["status"], job["error"]);
        match job["status"].as_str() {
            Some("succeeded") => {}
            Some("failed") => {
                let reason = job["error"].as_str().unwrap_or_default();
                assert!(!reason.is_empty(), "{name} failed without a reason: {job}");
                assert_eq!(
                    job["attempts"], 1,
                    "{name}: a bad file is not retried: {job}"
                );
            }
            other => panic!("{name}: {other:?}: {job}"),
        }
    }
    let job = s.wait_job(healthy["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    // The page nested ten thousand deep still yields its text.
    let nested = s.wait_job(&jobs[3].1).await;
    assert_eq!(nested["status"], "succeeded", "{nested}");
    // The worker slots are free again, and the server answers.
    let after = s
        .create_text("Uploaded after the hostile files.", &[])
        .await;
    let job = s.wait_job(after["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(s.get("/readyz").await.status(), 200);
    s.stop().await;
}

/// A reader that crashes or never ends: poppler's place is taken by a script doing just that,
/// which is the only way to make a real parser crash on demand.
#[tokio::test]
async fn a_crashing_or_runaway_reader_fails_only_its_job_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let script = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    };
    for (reader, expect) in [
        (script("crash", "kill -SEGV $$"), "signal 11 (SIGSEGV)"),
        (
            script("hang", "exec sleep 600"),
            "longer than the limit of 2 s",
        ),
    ] {
        let s = TestServer::start_with(|e| {
            e.extract.pdf = strata_engine::extract::PdfReader::Poppler(reader);
            e.jobs.extract_timeout = Duration::from_secs(2);
        })
        .await;
        let bad = upload(&s, "a.pdf", pdf_with_text(&["Never read."])).await;
        let good = s.create_text("Text needs no PDF reader.", &[]).await;
        let job = s.wait_job(&bad).await;
        assert_eq!(job["status"], "failed", "{job}");
        let reason = job["error"].as_str().unwrap();
        assert!(reason.contains(expect), "{reason}");
        let job = s.wait_job(good["job_id"].as_str().unwrap()).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        s.stop().await;
    }
}
