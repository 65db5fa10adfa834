//! Tenant B's users and keys get 404 for everything of tenant A's, and nothing of A's changes.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::dual;
use crate::helpers::TestApp;

dual!(second_tenant_gets_404_everywhere);

async fn second_tenant_gets_404_everywhere(app: TestApp) {
    let ann = app.signup("ann@a.example").await;
    let a = app.create_tenant(&ann, "A").await;
    let amy = app.signup("amy@a.example").await;
    app.add_member(&ann, &a, &amy, "member").await;
    let (a_key_id, a_key) = app.api_key(&ann, &a, "admin").await;
    let (_, inv) = app
        .as_(&ann)
        .tenant(&a)
        .post("/api/v1/invites", json!({"email": "later@a.example"}))
        .await;
    let a_invite = inv["id"].as_str().unwrap().to_owned();

    let bob = app.signup("bob@b.example").await;
    let b = app.create_tenant(&bob, "B").await;
    let (_, b_key) = app.api_key(&bob, &b, "admin").await;
    let (_, before) = app.as_(&ann).tenant(&a).get("/api/v1/audit").await;

    let attempts: Vec<(Method, String, Option<serde_json::Value>)> = vec![
        (Method::GET, "/api/v1/tenant".into(), None),
        (
            Method::PATCH,
            "/api/v1/tenant".into(),
            Some(json!({"name": "pwned"})),
        ),
        (Method::GET, "/api/v1/members".into(), None),
        (
            Method::POST,
            "/api/v1/members".into(),
            Some(json!({"email": "bob@b.example", "role": "owner"})),
        ),
        (
            Method::PATCH,
            format!("/api/v1/members/{}", amy.id),
            Some(json!({"role": "owner"})),
        ),
        (Method::DELETE, format!("/api/v1/members/{}", amy.id), None),
        (Method::GET, "/api/v1/invites".into(), None),
        (
            Method::POST,
            "/api/v1/invites".into(),
            Some(json!({"email": "bob@b.example"})),
        ),
        (Method::DELETE, format!("/api/v1/invites/{a_invite}"), None),
        (Method::GET, "/api/v1/api-keys".into(), None),
        (
            Method::POST,
            "/api/v1/api-keys".into(),
            Some(json!({"name": "x"})),
        ),
        (Method::DELETE, format!("/api/v1/api-keys/{a_key_id}"), None),
        (Method::GET, "/api/v1/audit".into(), None),
    ];
    for (method, path, body) in &attempts {
        // Bob's session naming tenant A, and Bob's key naming tenant A: 404.
        for token in [&bob.token, &b_key] {
            let (s, v) = app
                .call(method.clone(), path, Some(token), Some(&a), body.clone())
                .await;
            assert_eq!(
                s,
                StatusCode::NOT_FOUND,
                "{method} {path} with tenant A header → {v}"
            );
        }
        // Bob inside his own tenant B, pointing at A's object ids: 404 (or B's own, empty view).
        let (s, v) = app
            .call(
                method.clone(),
                path,
                Some(&bob.token),
                Some(&b),
                body.clone(),
            )
            .await;
        if path.contains("usr_") || path.contains("inv_") || path.contains("key_") {
            assert_eq!(
                s,
                StatusCode::NOT_FOUND,
                "{method} {path} in tenant B → {v}"
            );
        } else {
            assert!(
                !v.to_string().contains(&a),
                "{method} {path} leaked tenant A: {v}"
            );
            assert!(
                !v.to_string().contains("ann@a.example"),
                "{method} {path} leaked A's member: {v}"
            );
        }
    }
    // A's key is bound to A, whatever header it sends.
    let (s, _) = app.as_(&a_key).tenant(&b).get("/api/v1/members").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Bob's tenant list and /me show only B.
    let (_, list) = app.as_(&bob).get("/api/v1/tenants").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], b.as_str());
    let (_, me) = app.as_(&bob).get("/api/v1/me").await;
    assert!(!me.to_string().contains(&a));

    // Nothing of A changed.
    let (_, t) = app.as_(&ann).tenant(&a).get("/api/v1/tenant").await;
    assert_eq!(t["name"], "A");
    let (_, members) = app.as_(&ann).tenant(&a).get("/api/v1/members").await;
    assert_eq!(members.as_array().unwrap().len(), 2);
    assert!(members.to_string().contains("\"member\""));
    assert_eq!(
        app.as_(&a_key).get("/api/v1/members").await.0,
        StatusCode::OK
    );
    let (_, invites) = app.as_(&ann).tenant(&a).get("/api/v1/invites").await;
    assert!(invites[0]["revoked_at"].is_null());
    let (_, after) = app.as_(&ann).tenant(&a).get("/api/v1/audit").await;
    assert_eq!(before, after, "no audit rows were written in A");
}
