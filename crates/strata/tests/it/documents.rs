//! The documents API: upload (multipart and JSON), dedupe, read, fields, patch, delete,
//! file streaming, chunks and tags.

use serde_json::{Value, json};

use crate::helpers::{TestServer, all_chunks, assert_problem, pdf_with_text};

#[tokio::test]
async fn multipart_upload_is_processed_into_chunks() {
    let s = TestServer::start().await;
    let text = "# Intro\n\nStrata stores documents.\n\n## Details\n\nIt chunks them by tokens.";
    let r = s
        .upload(
            "notes.md",
            text.as_bytes().to_vec(),
            None,
            &[
                ("tags", "alpha, beta"),
                ("metadata", r#"{"source":"test"}"#),
                ("title", "My notes"),
            ],
        )
        .await;
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    let doc = &body["document"];
    assert_eq!(body["duplicate"], false);
    assert_eq!(
        loc,
        format!("/v1/documents/{}", doc["id"].as_str().unwrap())
    );
    assert_eq!(doc["title"], "My notes");
    assert_eq!(doc["filename"], "notes.md");
    assert_eq!(doc["media_type"], "text/markdown");
    assert_eq!(doc["tags"], json!(["alpha", "beta"]));
    assert_eq!(doc["metadata"], json!({"source": "test"}));
    assert_eq!(doc["status"], "queued");
    assert_eq!(doc["byte_size"], text.len());
    let job = s.wait_job(body["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        job["stages"][0],
        json!({"stage": "extract", "done": 1, "total": 1})
    );
    let id = doc["id"].as_str().unwrap();
    let doc = s.get_json(&format!("/v1/documents/{id}")).await;
    assert_eq!(doc["status"], "ready");
    let chunks = all_chunks(&s, id).await;
    assert_eq!(chunks.len() as u64, doc["chunk_count"].as_u64().unwrap());
    let all: String = chunks.iter().map(|c| c["text"].as_str().unwrap()).collect();
    assert!(
        all.contains("Strata stores documents.") && all.contains("Details"),
        "{all}"
    );
    assert!(
        !all.contains('#'),
        "markup must not leak into chunks: {all}"
    );
    s.stop().await;
}

#[tokio::test]
async fn duplicate_content_answers_200_with_the_existing_document_and_no_job() {
    let s = TestServer::start().await;
    let first = s.upload("a.txt", b"same bytes".to_vec(), None, &[]).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    s.wait_job(first["job"]["id"].as_str().unwrap()).await;
    let jobs_before = s.get_json("/v1/jobs").await["items"]
        .as_array()
        .unwrap()
        .len();
    let again = s
        .upload("other-name.txt", b"same bytes".to_vec(), None, &[])
        .await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["job"], Value::Null);
    assert_eq!(again["document"]["id"], first["document"]["id"]);
    let jobs_after = s.get_json("/v1/jobs").await["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(jobs_before, jobs_after, "a duplicate must not start a job");
    let docs = s.get_json("/v1/documents").await;
    assert_eq!(docs["items"].as_array().unwrap().len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn json_text_html_and_pdf_extract_their_visible_text() {
    let s = TestServer::start().await;
    let html = r#"<html><head><style>.x{}</style><script>var hidden=1;</script></head>
        <body><h1>Visible title</h1><p>Paragraph one.</p><div hidden>invisible</div></body></html>"#;
    let r = s
        .upload_json(json!({"text": html, "media_type": "text/html", "title": "page"}))
        .await;
    assert_eq!(r.status(), 202);
    let html_doc: Value = r.json().await.unwrap();
    let pdf = pdf_with_text(&["Quarterly revenue grew strongly.", "Costs fell."]);
    let r = s
        .upload("report.pdf", pdf, Some("application/pdf"), &[])
        .await;
    assert_eq!(r.status(), 202);
    let pdf_doc: Value = r.json().await.unwrap();
    for d in [&html_doc, &pdf_doc] {
        let job = s.wait_job(d["job"]["id"].as_str().unwrap()).await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    let html_text: String = all_chunks(&s, html_doc["document"]["id"].as_str().unwrap())
        .await
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_owned())
        .collect();
    assert!(html_text.contains("Visible title") && html_text.contains("Paragraph one."));
    assert!(
        !html_text.contains("hidden")
            && !html_text.contains("invisible")
            && !html_text.contains(".x")
    );
    let pdf_text: String = all_chunks(&s, pdf_doc["document"]["id"].as_str().unwrap())
        .await
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        pdf_text.contains("Quarterly revenue grew strongly."),
        "{pdf_text}"
    );
    assert_eq!(pdf_doc["document"]["media_type"], "application/pdf");
    s.stop().await;
}

#[tokio::test]
async fn fields_selection_returns_only_what_was_asked() {
    let s = TestServer::start().await;
    let d = s.create_text("fields test", &["t"]).await;
    let id = d["id"].as_str().unwrap();
    let one = s
        .get_json(&format!("/v1/documents/{id}?fields=title,tags"))
        .await;
    // Which fields, not their order (objects keep insertion order: serde_json's
    // preserve_order is on in a build with qdrant-edge).
    let mut keys: Vec<&String> = one.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, vec!["id", "tags", "title"]);
    let list = s.get_json("/v1/documents?fields=status").await;
    let item = list["items"][0].as_object().unwrap();
    assert_eq!(item.len(), 2);
    assert!(item.contains_key("id") && item.contains_key("status"));
    let bad = s.get("/v1/documents?fields=title,password").await;
    let body = assert_problem(bad, 422, "validation_failed").await;
    assert_eq!(body["field"], "fields");
    s.stop().await;
}

#[tokio::test]
async fn patch_updates_title_tags_and_metadata() {
    let s = TestServer::start().await;
    let d = s.create_text("patch me", &["old"]).await;
    let id = d["id"].as_str().unwrap();
    let url = s.url(&format!("/v1/documents/{id}"));
    let r = s
        .patch_url(
            &url,
            json!({"title": "New title", "tags": ["b", "a", "b"], "metadata": {"k": 1}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["title"], "New title");
    assert_eq!(doc["tags"], json!(["a", "b"]));
    assert_eq!(doc["metadata"], json!({"k": 1}));
    // Only what is given changes.
    let r = s.patch_url(&url, json!({"title": "Newer"})).await;
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["tags"], json!(["a", "b"]));
    let tags = s.get_json("/v1/tags").await;
    assert_eq!(
        tags["items"],
        json!([{"tag": "a", "count": 1}, {"tag": "b", "count": 1}])
    );
    // Invalid values name their field and change nothing.
    let r = s.patch_url(&url, json!({"metadata": [1, 2]})).await;
    assert_eq!(
        assert_problem(r, 422, "validation_failed").await["field"],
        "metadata"
    );
    let r = s.patch_url(&url, json!({"tags": ["ok", ""]})).await;
    assert_eq!(
        assert_problem(r, 422, "validation_failed").await["field"],
        "tags[1]"
    );
    let r = s.patch_url(&url, json!({"title": "   "})).await;
    assert_eq!(
        assert_problem(r, 422, "validation_failed").await["field"],
        "title"
    );
    let r = s.patch_url(&url, json!({"colour": "red"})).await;
    let body = assert_problem(r, 422, "validation_failed").await;
    assert!(
        body["detail"].as_str().unwrap().contains("colour"),
        "{body}"
    );
    let r = s.patch_url(&url, json!({})).await;
    assert_problem(r, 422, "validation_failed").await;
    let doc = s.get_json(&format!("/v1/documents/{id}")).await;
    assert_eq!(doc["title"], "Newer");
    assert_eq!(doc["metadata"], json!({"k": 1}));
    s.stop().await;
}

#[tokio::test]
async fn delete_removes_the_document_its_chunks_and_its_file() {
    let s = TestServer::start().await;
    let r = s
        .upload(
            "gone.txt",
            b"delete me please. ".repeat(50),
            None,
            &[("tags", "x")],
        )
        .await;
    let body: Value = r.json().await.unwrap();
    s.wait_job(body["job"]["id"].as_str().unwrap()).await;
    let doc = &body["document"];
    let id = doc["id"].as_str().unwrap();
    let sha = doc["sha256"].as_str().unwrap();
    assert!(
        crate::helpers::blob_stored(s.dir.path(), sha).await,
        "blob stored"
    );
    assert!(!all_chunks(&s, id).await.is_empty());
    let r = s.delete(&format!("/v1/documents/{id}")).await;
    assert_eq!(r.status(), 204);
    assert!(
        !crate::helpers::blob_stored(s.dir.path(), sha).await,
        "the original file must be removed"
    );
    assert_problem(
        s.get(&format!("/v1/documents/{id}")).await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        s.get(&format!("/v1/documents/{id}/chunks")).await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        s.get(&format!("/v1/documents/{id}/file")).await,
        404,
        "not_found",
    )
    .await;
    let r = s.delete(&format!("/v1/documents/{id}")).await;
    assert_problem(r, 404, "not_found").await;
    assert_eq!(s.get_json("/v1/tags").await["items"], json!([]));
    s.stop().await;
}

#[tokio::test]
async fn delete_during_processing_cancels_the_job() {
    let s = TestServer::start_with(|e| e.jobs.workers = 0).await;
    let d = s.create_text("never processed", &[]).await;
    let id = d["id"].as_str().unwrap();
    let r = s.delete(&format!("/v1/documents/{id}")).await;
    assert_eq!(r.status(), 204);
    let job = s
        .get_json(&format!("/v1/jobs/{}", d["job_id"].as_str().unwrap()))
        .await;
    assert_eq!(job["status"], "cancelled");
    s.stop().await;
}

#[tokio::test]
async fn file_streams_the_original_with_headers_and_etag() {
    let s = TestServer::start().await;
    let bytes: Vec<u8> = "línea ünïcode\n".repeat(5000).into_bytes();
    let r = s
        .upload("Résumé notes.txt", bytes.clone(), Some("text/plain"), &[])
        .await;
    let body: Value = r.json().await.unwrap();
    let id = body["document"]["id"].as_str().unwrap();
    let r = s.get(&format!("/v1/documents/{id}/file")).await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/plain; charset=utf-8");
    assert_eq!(h["content-length"], bytes.len().to_string().as_str());
    let disp = h["content-disposition"].to_str().unwrap();
    assert!(
        disp.starts_with("attachment;")
            && disp.contains("filename*=UTF-8''R%C3%A9sum%C3%A9%20notes.txt"),
        "{disp}"
    );
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());
    let r = s
        .client
        .get(s.url(&format!("/v1/documents/{id}/file")))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    s.stop().await;
}

#[tokio::test]
async fn tags_are_counted_per_tag() {
    let s = TestServer::start_with(|e| e.jobs.workers = 0).await;
    s.create_text("one", &["a", "b"]).await;
    s.create_text("two", &["a"]).await;
    s.create_text("three", &["a", "c"]).await;
    let tags = s.get_json("/v1/tags").await;
    assert_eq!(
        tags["items"],
        json!([{"tag": "a", "count": 3}, {"tag": "b", "count": 1}, {"tag": "c", "count": 1}])
    );
    let only_c = s.get_json("/v1/documents?tag=c&fields=title").await;
    assert_eq!(only_c["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        only_c["items"][0]["title"].as_str().unwrap().len(),
        "untitled-".len() + 8
    );
    s.stop().await;
}
