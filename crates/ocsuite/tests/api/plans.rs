//! Plans as entitlements: each limit refuses at its edge with 402 `plan_limit` (403
//! `feature_unavailable` where the plan has none) naming the limit and the plan that
//! lifts it; a move to a bigger plan lifts it; a move back below what the company has
//! is allowed, tells its admins what is over, and refuses new ones.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Db, TestApp};
use crate::tasks::owner;

fn small(c: &mut ocsuite::config::Config) {
    c.plans.free = ocsuite::config::EntitlementsConfig {
        seats: Some(2),
        api_keys: Some(1),
        triggers: Some(2),
        mcp_servers: Some(0),
        tasks_per_day: Some(2),
        knowledge_mb: Some(1),
        modules: Some(vec![
            "leadtracker".into(),
            "bookkeeping".into(),
            "diagnostics".into(),
        ]),
    };
}

fn refused(s: StatusCode, v: &Value, code: &str, limit: &str) {
    let want = if code == "plan_limit" {
        StatusCode::PAYMENT_REQUIRED
    } else {
        StatusCode::FORBIDDEN
    };
    assert_eq!(s, want, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("free plan"), "{msg}");
    if !limit.is_empty() {
        assert_eq!(v["error"]["details"]["limit"], limit, "{v}");
    }
}

async fn each_limit_refuses_at_its_edge(db: Db) {
    let Some(app) = TestApp::start_with(db, small).await else {
        return;
    };
    let (u, t) = owner(&app, "own@plans.example").await;
    let me = app.as_(&u).tenant(&t);

    // Seats: the owner and one pending invitation fill two.
    let (s, v) = me
        .post("/api/v1/invites", json!({"email": "a@plans.example"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = me
        .post("/api/v1/invites", json!({"email": "b@plans.example"}))
        .await;
    refused(s, &v, "plan_limit", "seats");
    assert_eq!(v["error"]["details"]["upgrade_to"], "pro");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pro plan allows")
    );

    // API keys.
    let (s, v) = me.post("/api/v1/api-keys", json!({"name": "one"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = me.post("/api/v1/api-keys", json!({"name": "two"})).await;
    refused(s, &v, "plan_limit", "api_keys");

    // Automations: the weekly digest is one already.
    let trigger = json!({"name": "Runway watch",
        "condition": {"kind": "metric", "rule": "runway_months < 6"},
        "action": {"kind": "alert", "severity": "warning", "title": "Runway"}});
    let (s, v) = me.post("/api/v1/triggers", trigger.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = me.post("/api/v1/triggers", trigger.clone()).await;
    refused(s, &v, "plan_limit", "triggers");

    // MCP servers: none on this free plan, before any network is touched.
    let (s, v) = me
        .post(
            "/api/v1/mcp-servers",
            json!({"name": "crm", "url": "https://mcp.example.com/mcp"}),
        )
        .await;
    refused(s, &v, "feature_unavailable", "mcp_servers");

    // Tasks a day.
    for _ in 0..2 {
        let (s, v) = me
            .post(
                "/api/v1/tasks/execute",
                json!({"capability": "diagnostics.echo", "input": {}}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    }
    let (s, v) = me
        .post(
            "/api/v1/tasks/execute",
            json!({"capability": "diagnostics.echo", "input": {}}),
        )
        .await;
    refused(s, &v, "plan_limit", "tasks_per_day");

    // Modules: email is not on this free plan, wherever a capability of it is asked for.
    let (s, v) = me
        .post(
            "/api/v1/tasks/execute",
            json!({"capability": "email.send", "input": {"to": ["x@y.example"], "subject": "s", "body": "b"}}),
        )
        .await;
    refused(s, &v, "feature_unavailable", "");
    assert_eq!(v["error"]["details"]["feature"], "module:email", "{v}");
    assert_eq!(v["error"]["details"]["upgrade_to"], "pro", "{v}");

    // Knowledge storage: 1 MB in all.
    let big = vec![b'a'; 700 * 1024];
    let mut doc = b"# Notes\n\n".to_vec();
    doc.extend(
        big.iter()
            .enumerate()
            .map(|(i, _)| if i % 80 == 79 { b'\n' } else { b'w' }),
    );
    let (s, v) = crate::knowledge::upload(
        &app,
        &u.token,
        Some(&t),
        "/api/v1/knowledge/sources",
        "a.md",
        doc.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let (s, v) = crate::knowledge::upload(
        &app,
        &u.token,
        Some(&t),
        "/api/v1/knowledge/sources",
        "b.md",
        doc,
    )
    .await;
    refused(s, &v, "plan_limit", "knowledge_bytes");

    // The company sees its use against each limit.
    let (s, e) = me.get("/api/v1/entitlements").await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert_eq!(e["plan"], "free");
    let by: std::collections::HashMap<&str, &Value> = e["limits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["limit"].as_str().unwrap(), l))
        .collect();
    assert_eq!(by["seats"]["used"], 2);
    assert_eq!(by["seats"]["allowed"], 2);
    assert_eq!(by["api_keys"]["used"], 1);
    assert_eq!(by["triggers"]["used"], 2);
    assert_eq!(by["tasks_per_day"]["used"], 2);
    assert_eq!(by["mcp_servers"]["allowed"], 0);
    assert_eq!(by["seats"]["over"], false);
    assert_eq!(by["seats"]["upgrade_to"], "pro");
    let (_, html) = app.page(&u.token, "/settings").await;
    assert!(
        html.contains("data-entitlements"),
        "the settings page shows the plan"
    );
    assert!(html.contains("Member seats"), "{html}");

    // Pro lifts the limits.
    let root = app.super_admin("root@plans.example").await;
    let (s, v) = app
        .as_(&root)
        .put(
            &format!("/api/v1/admin/tenants/{t}/plan"),
            json!({"plan": "pro"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["over"], json!([]));
    let me = app.as_(&u).tenant(&t);
    let (s, v) = me.post("/api/v1/api-keys", json!({"name": "two"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = me
        .post("/api/v1/invites", json!({"email": "b@plans.example"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = me
        .post(
            "/api/v1/tasks/execute",
            json!({"capability": "diagnostics.echo", "input": {}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");

    // Back to free while over: allowed, the admins are told, new ones refused.
    let (s, v) = app
        .as_(&root)
        .put(
            &format!("/api/v1/admin/tenants/{t}/plan"),
            json!({"plan": "free"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let over: Vec<&str> = v["over"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert!(over.contains(&"api_keys") && over.contains(&"seats"), "{v}");
    let (_, n) = me.get("/api/v1/notifications").await;
    let told = n.to_string();
    assert!(told.contains("over the free plan"), "{n}");
    let (s, v) = me.post("/api/v1/api-keys", json!({"name": "three"})).await;
    refused(s, &v, "plan_limit", "api_keys");
    let (_, e) = me.get("/api/v1/entitlements").await;
    assert!(
        e["limits"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["limit"] == "api_keys" && l["over"] == true),
        "{e}"
    );
    // What it had still works.
    let (s, _) = me.get("/api/v1/api-keys").await;
    assert_eq!(s, StatusCode::OK);

    // Operators see every plan's entitlements.
    let (s, v) = app.as_(&root).get("/api/v1/admin/plans").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v[0]["plan"], "free");
    assert_eq!(v[0]["entitlements"]["seats"], 2);
    assert_eq!(v[2]["entitlements"]["seats"], Value::Null);
}

mod each_limit {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::each_limit_refuses_at_its_edge(crate::helpers::Db::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::each_limit_refuses_at_its_edge(crate::helpers::Db::Postgres).await;
    }
}
