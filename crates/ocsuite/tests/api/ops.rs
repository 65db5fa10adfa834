//! Health, readiness, metrics, OpenAPI, request ids and JSON errors for unknown routes.

use reqwest::StatusCode;

use crate::dual;
use crate::helpers::TestApp;

dual!(operational_endpoints);

async fn operational_endpoints(app: TestApp) {
    let res = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().contains_key("x-request-id"));
    // A client's own request id is kept when it is plain, replaced when it is not.
    let echo = |id: &'static str| {
        let req = app.http.get(app.url("/healthz")).header("x-request-id", id);
        async move {
            let res = req.send().await.unwrap();
            res.headers()["x-request-id"].to_str().unwrap().to_owned()
        }
    };
    assert_eq!(echo("trace-42.a_b").await, "trace-42.a_b");
    let replaced = echo("<script>alert(1)</script>").await;
    assert!(uuid::Uuid::parse_str(&replaced).is_ok(), "{replaced}");
    let long: &'static str = Box::leak("x".repeat(65).into_boxed_str());
    assert_ne!(echo(long).await, long);
    assert_eq!(
        app.http
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let ann = app.signup("ann@example.com").await;
    app.as_(&ann).get("/api/v1/me").await;
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    assert!(metrics.contains("route=\"/api/v1/me\""), "{metrics}");
    assert!(
        metrics.contains("http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    let spec: serde_json::Value = app
        .http
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    for path in [
        "/api/v1/auth/signup",
        "/api/v1/tenants",
        "/api/v1/members/{user_id}",
        "/api/v1/api-keys",
        "/api/v1/audit",
    ] {
        assert!(
            spec["paths"].get(path).is_some(),
            "{path} missing from OpenAPI"
        );
    }
    let (s, v) = app.as_(&ann).get("/api/v1/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "not_found");
    let res = app.http.delete(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn metrics_token_guards_the_scrape() {
    const TOKEN: &str = "scrape-9f8e7d6c5b4a3210";
    let app = TestApp::start_with(crate::helpers::Db::Sqlite, |c| {
        c.metrics_token = Some(ocsuite::config::Secret::new(TOKEN))
    })
    .await
    .expect("sqlite app");
    let ann = app.signup("ann@example.com").await;
    let scrape = |auth: Option<String>| {
        let mut req = app.http.get(app.url("/metrics"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        async move {
            let res = req.send().await.unwrap();
            let status = res.status();
            let challenge = res
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, challenge, res.text().await.unwrap())
        }
    };
    // No credentials, a wrong token, the token without the scheme, and a user's own
    // session token: all refused, with the header to send.
    for auth in [
        None,
        Some(format!("Bearer {TOKEN}x")),
        Some(TOKEN.to_owned()),
        Some(format!("Bearer {}", ann.token)),
    ] {
        let (status, challenge, body) = scrape(auth.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(challenge.as_deref(), Some("Bearer"));
        assert!(body.contains("OCSUITE_METRICS_TOKEN"), "{body}");
        assert!(!body.contains("http_requests_total"), "{body}");
    }
    let (status, _, body) = scrape(Some(format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("http_requests_total"), "{body}");
    // Health and readiness stay open for the orchestrator.
    let res = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}
