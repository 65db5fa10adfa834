//! Route/spec parity. Every `/api/v1` route is declared once, in its domain's router, and
//! both the route and its OpenAPI operation come from that declaration. These tests hold
//! that promise from both sides: every operation the spec lists is answered by a route
//! (not by the router's fallback), every method the router answers on a documented path
//! is documented, and no code adds an API route around the spec.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{Db, TestApp};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Whether the router has a route for `method path`: anything but the fallbacks' answers
/// (404 `route not found`, 405) means a handler ran or an extractor refused the request.
async fn routed(app: &TestApp, method: &str, path: &str) -> bool {
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let res = app
        .http
        .request(method, app.url(path))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    let fallback = (status == StatusCode::NOT_FOUND
        && body["error"]["message"] == "route not found")
        || status == StatusCode::METHOD_NOT_ALLOWED;
    !fallback
}

#[tokio::test]
async fn the_router_and_the_spec_list_the_same_operations() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let spec: Value = app
        .http
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = spec["paths"].as_object().unwrap();
    assert!(paths.len() >= 80, "only {} paths in the spec", paths.len());
    let mut drift = Vec::new();
    for (path, item) in paths {
        assert!(path.starts_with("/api/v1/"), "{path} outside /api/v1");
        // Path parameters get a value of the right shape but naming nothing.
        let concrete: String = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x1" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in METHODS {
            let documented = item.get(method).is_some();
            if routed(&app, method, &concrete).await != documented {
                drift.push(format!(
                    "{} {path}: {}",
                    method.to_uppercase(),
                    if documented {
                        "in the spec, but the router has no such route"
                    } else {
                        "answered by the router, but missing from the spec"
                    }
                ));
            }
        }
    }
    assert!(
        drift.is_empty(),
        "router and spec differ:\n{}",
        drift.join("\n")
    );
}

/// A route added with a plain `.route(…)` would reach the router without the spec. Only
/// the router assembly (`app.rs`: health, metrics, unsubscribe pages, outside `/api/v1`)
/// and the web pages may do that.
#[test]
fn no_api_route_is_added_outside_the_domain_routers() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offenders = Vec::new();
    let mut files = Vec::new();
    crate::helpers::rust_files(&src, &mut files);
    for p in files {
        let rel = p
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel.starts_with("web/") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let text = match rel.as_str() {
            // In the assembly, only the API part is held to the rule.
            "app.rs" => {
                let start = text.find("pub fn api(").expect("app::api");
                let end = text[start..].find("\n}\n").expect("end of app::api") + start;
                text[start..end].to_owned()
            }
            _ => text,
        };
        for (i, line) in text.lines().enumerate() {
            if line.contains(".route(") || line.contains(".route_service(") {
                offenders.push(format!("{rel}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "declare API routes with `.routes(routes!(handler))` in the domain's router():\n{}",
        offenders.join("\n")
    );
}

/// Every `$ref` in the spec names a schema the spec defines: a client generator (or the
/// fuzzer) cannot read a spec with a dangling reference.
#[tokio::test]
async fn every_schema_reference_resolves() {
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let spec: Value = app
        .http
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut all = Vec::new();
    refs(&spec, &mut all);
    let dangling: Vec<&String> = all
        .iter()
        .filter(|r| {
            let name = r.trim_start_matches("#/components/schemas/");
            spec["components"]["schemas"].get(name).is_none()
        })
        .collect();
    assert!(!all.is_empty());
    assert!(dangling.is_empty(), "dangling references: {dangling:?}");
}
