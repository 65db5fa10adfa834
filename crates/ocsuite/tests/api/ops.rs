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
    app.get("/api/v1/me", &ann.token, None).await;
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
    let (s, v) = app.get("/api/v1/nope", &ann.token, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "not_found");
    let res = app.http.delete(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
}
