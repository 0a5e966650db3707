//! A full disk under the data directory: a size-limited tmpfs mounted for the test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{Load, Outcome, Request, report};
use crate::helpers::TestServer;

/// A tmpfs of `mib` MiB mounted at `dir` until dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u32) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_uploads_with_507_keeps_reads_and_leaves_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("disk");
    let _tmpfs = Tmpfs::mount(&mount, 24);
    let data = mount.join("data");
    // Room the test gives back later, on the same filesystem.
    let filler = mount.join("filler");
    std::fs::write(&filler, vec![0u8; 6 << 20]).unwrap();
    let s = TestServer::start_custom(
        dir,
        |e| {
            // The embedded backend: its database and files both live on the full disk.
            e.database_url = None;
            e.data_dir = data.clone();
            // Workers would race the uploads for the last bytes; this test is about uploads.
            e.jobs.workers = 0;
        },
        |_| {},
    )
    .await;

    // Reads run throughout, while the disk fills and after.
    let reads: Request = {
        let (client, base) = (reqwest::Client::new(), s.url(""));
        Arc::new(move |_, n| {
            let (client, base) = (client.clone(), base.clone());
            Box::pin(async move {
                let path = if n % 2 == 0 {
                    "/v1/documents?limit=5"
                } else {
                    "/v1/tags"
                };
                match client.get(format!("{base}{path}")).send().await {
                    Ok(r) if r.status().is_success() => Outcome::Ok,
                    _ => Outcome::Failed,
                }
            })
        })
    };
    let load = Load::start(2, Duration::from_millis(5), reads);
    let mut stored: Vec<String> = Vec::new();
    let mut refused = None;
    for i in 0..40 {
        // 1 MiB of distinct text per upload.
        let body: String = (0..(1 << 20) / 32)
            .map(|j| format!("{i:05} line {j:09} of text...\n"))
            .collect();
        let r = s
            .upload(&format!("f{i}.txt"), body.into_bytes(), None, &[])
            .await;
        match r.status().as_u16() {
            202 => {
                let v: Value = r.json().await.unwrap();
                stored.push(v["document"]["id"].as_str().unwrap().to_owned());
            }
            507 => {
                refused = Some(r.json::<Value>().await.unwrap());
                break;
            }
            other => panic!("upload {i}: {other} {:?}", r.text().await),
        }
    }
    let refused = refused.expect("the disk filled up within 40 MiB of uploads");
    assert_eq!(refused["code"], "insufficient_storage", "{refused}");
    eprintln!(
        "[fault] disk full after {} uploads of 1 MiB: 507 {}",
        stored.len(),
        refused["detail"]
    );
    assert!(!stored.is_empty());

    // Nothing half-written: no staged upload left, and exactly one file per stored document.
    let staged = files(&data.join("blobs").join("tmp"));
    assert!(staged.is_empty(), "partial uploads left behind: {staged:?}");
    let blobs: Vec<PathBuf> = files(&data.join("blobs"));
    assert_eq!(
        blobs.len(),
        stored.len(),
        "one file per document: {blobs:?}"
    );

    // Reads keep working, and every stored document has its file.
    let page = s.get_json("/v1/documents?limit=100").await;
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        stored.len(),
        "{page}"
    );
    for id in &stored {
        let r = s.get(&format!("/v1/documents/{id}/file")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().len(), 1 << 20);
    }

    let samples = load.finish().await;
    let (_, _, failed, _) = report("reads while the disk filled", &samples);
    assert_eq!(failed, 0, "reads kept working");

    // Once space is freed, uploads succeed again.
    std::fs::remove_file(&filler).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let again = s.create_text("Written after space was freed.", &[]).await;
    assert!(again["id"].is_string());
    s.stop().await;
}
