//! The OpenAPI document against the router it describes, and the reference page.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::TestServer;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Every documented operation is served (its path and method reach a handler, not the
/// fallbacks), and every other method of a documented path is refused with 405.
#[tokio::test]
async fn every_documented_operation_is_routed_and_no_other_method_is() {
    let s = TestServer::start_with(|e| e.jobs.workers = 0).await;
    let doc = s.get_json("/openapi.json").await;
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{} paths", paths.len());
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path.replace("{id}", "0190b5a4-0000-7000-8000-000000000000");
        for method in METHODS {
            let r = s
                .client
                .request(
                    reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    s.url(&concrete),
                )
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let content_type = r.headers().get("content-type").cloned();
            let code = match content_type.as_ref().map(|v| v.as_bytes()) {
                Some(ct) if ct.starts_with(b"application/problem+json") => {
                    r.json::<Value>().await.unwrap()["code"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                }
                // The OpenAI-compatible routes answer errors in OpenAI's shape.
                Some(ct) if status >= 400 && ct.starts_with(b"application/json") => {
                    r.json::<Value>().await.unwrap()["error"]["code"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                }
                _ => String::new(),
            };
            if item.get(method).is_some() {
                operations += 1;
                assert!(
                    code != "route_not_found" && code != "method_not_allowed",
                    "{method} {path} is documented but answered {status} {code}"
                );
            } else {
                assert_eq!(
                    (status, code.as_str()),
                    (405, "method_not_allowed"),
                    "{method} {path} is not documented, so it must not be served"
                );
            }
        }
    }
    assert!(operations >= 22, "{operations} operations");
    s.stop().await;
}

/// The parts of the document clients and fuzzers rely on: every operation has an id, a tag,
/// a success response and (unless public) the bearer scheme; every error code is listed.
#[tokio::test]
async fn operations_are_complete_and_every_error_code_is_listed() {
    let s = TestServer::start_with(|e| e.jobs.workers = 0).await;
    let doc = s.get_json("/openapi.json").await;
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let what = format!("{method} {path}");
            assert!(
                ids.insert(op["operationId"].as_str().unwrap().to_owned()),
                "{what}: operationId repeats"
            );
            assert!(op["tags"][0].is_string(), "{what}: no tag");
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|k| k.starts_with('2')),
                "{what}: no success response"
            );
            assert!(responses.contains_key("500"), "{what}: no 500");
            let public =
                strata_server::openapi::access(path) == strata_server::openapi::Access::Public;
            assert_eq!(
                op.get("security").is_some(),
                !public,
                "{what}: security requirement"
            );
            if !public {
                assert!(responses.contains_key("401"), "{what}: no 401");
            }
        }
    }
    let codes: BTreeSet<&str> =
        doc["components"]["schemas"]["Problem"]["properties"]["code"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
    for code in strata_server::error::Code::ALL {
        assert!(codes.contains(code.as_str()), "{} missing", code.as_str());
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_reference_page_is_served_from_the_binary_and_loads_nothing_else() {
    let s = TestServer::start_with(|e| e.jobs.workers = 0).await;
    let r = s.client.get(s.url("/docs")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    let page = r.text().await.unwrap();
    assert!(page.contains("fetch(\"openapi.json\")"));
    for external in ["http://", "https://", "//cdn", "<link", "src=\""] {
        assert!(!page.contains(external), "the page refers to {external}");
    }
    s.stop().await;
}
