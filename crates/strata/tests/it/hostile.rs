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

/// Property-based fuzzing of PDF extraction in its child processes: valid PDFs with bytes
/// overwritten, inserted and cut, read by poppler and by the built-in parser. Every case ends
/// within the limit with text that is clean or a reason, and never takes the test process
/// with it. 48 cases per reader here; set `PROPTEST_CASES` for a longer run by hand.
mod fuzz {
    use std::time::Duration;

    use proptest::prelude::*;
    use strata_engine::extract::{ExtractSettings, MediaType, PdfReader};

    use crate::helpers::pdf_with_text;

    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(48)
    }

    fn mutated_pdf() -> impl Strategy<Value = Vec<u8>> {
        let seed = pdf_with_text(&[
            "Quarterly revenue grew.",
            "Costs (fell) 3%.",
            "\u{e9}t\u{e9}",
        ]);
        let edits = prop::collection::vec(
            (
                any::<usize>(),
                prop::collection::vec(any::<u8>(), 0..12),
                0u8..3,
            ),
            1..6,
        );
        edits.prop_map(move |edits| {
            let mut b = seed.clone();
            for (at, bytes, op) in edits {
                let i = at % (b.len() + 1);
                match op {
                    0 => {
                        let end = (i + bytes.len()).min(b.len());
                        b.splice(i..end, bytes);
                    }
                    1 => {
                        b.splice(i..i, bytes);
                    }
                    _ => b.truncate(i.max(8)),
                }
            }
            b
        })
    }

    fn run(settings: &ExtractSettings, bytes: Vec<u8>) -> Result<(), TestCaseError> {
        let child = settings
            .child_for(MediaType::Pdf)
            .expect("a child reads PDFs");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        match rt.block_on(child.run(bytes, Duration::from_secs(20), &stop)) {
            Ok(x) => {
                for b in &x.blocks {
                    let noncharacter = char::from_u32(0xFFFF).unwrap();
                    let clean = !b.text.is_empty()
                        && !b
                            .text
                            .chars()
                            .any(|c| c == noncharacter || (c.is_control() && !c.is_whitespace()));
                    prop_assert!(clean, "{:?}", b.text);
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        #[test]
        fn mutated_pdfs_through_poppler(bytes in mutated_pdf()) {
            let settings = ExtractSettings::default();
            prop_assume!(matches!(settings.pdf, PdfReader::Poppler(_)));
            run(&settings, bytes)?;
        }

        #[test]
        fn mutated_pdfs_through_the_builtin_parser_in_its_child(bytes in mutated_pdf()) {
            let settings = ExtractSettings {
                pdf: PdfReader::Builtin,
                helper: Some(env!("CARGO_BIN_EXE_strata").into()),
                ..ExtractSettings::default()
            };
            run(&settings, bytes)?;
        }
    }
}
