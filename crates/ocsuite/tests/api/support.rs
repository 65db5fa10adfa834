//! Support sessions ("view as"): a super-admin enters one company, with a reason, for
//! up to an hour, and acts there as its admin under actor type `support_admin`. Outside
//! one they are a stranger (404). Every request lands in the company's own audit log,
//! its owners are told, and the session cannot create keys, webhooks (their secrets),
//! owners or another session. It ends on exit, logout or expiry.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::console::{HQ, REASON, UNKNOWN, audit, login, root, sessions_of, start};
use crate::dual;
use crate::helpers::TestApp;
use crate::tasks::owner;

/// Moves every open support session of `tenant` a minute into the past, as time would.
async fn expire(app: &TestApp, tenant: &str) {
    let past = chrono::Utc::now() - chrono::Duration::minutes(1);
    let mut tx = app.state.store.platform().await.unwrap();
    tx.execute(
        ocsuite::store::sql(
            "UPDATE sessions SET impersonation_until = $1 WHERE impersonation_id IS NOT NULL",
        )
        .bind(past),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let t = ocsuite::ids::TenantId::parse(tenant).unwrap();
    let mut tx = app.state.store.tenant(&t).await.unwrap();
    tx.execute(
        ocsuite::store::scoped(
            "UPDATE impersonations SET expires_at = $2 WHERE tenant_id = $1 AND ended_at IS NULL",
        )
        .bind(past),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

dual!(
    support_sessions_enter_one_company_audited_and_limited,
    support_sessions_end_on_exit_logout_and_expiry,
    bad_support_sessions_are_refused,
    a_company_policy_can_refuse_support_sessions,
);

async fn a_company_policy_can_refuse_support_sessions(app: TestApp) {
    let root = root(&app, "root@no-support.example").await;
    let (alice, a) = owner(&app, "alice@no-support.example").await;
    let me = app.as_(&alice).tenant(&a);
    let (_, schema) = me.get("/api/v1/policy/schema").await;
    let text = format!(
        "{}\n@id(\"no-support\")\nforbid(principal, action == Ocsuite::Action::\"support.start\", resource);\n",
        schema["default_policy"].as_str().unwrap()
    );
    let (s, v) = me.put("/api/v1/policy", json!({"text": text})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = start(&app, &root, &a).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "policy_denied", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-support"),
        "{v}"
    );
    // The refusal is in the company's decision log; no session was opened.
    let (_, d) = me
        .get("/api/v1/policy/decisions?action=support.start")
        .await;
    assert_eq!(d[0]["allowed"], false, "{d}");
    let (_, list) = me.get("/api/v1/impersonations").await;
    assert_eq!(list["items"], json!([]), "{list}");
    // Rolled back to the default, support may enter again.
    let (s, v) = me
        .post("/api/v1/policy/rollback", json!({"version": 0}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = start(&app, &root, &a).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

async fn support_sessions_enter_one_company_audited_and_limited(app: TestApp) {
    let root = root(&app, "root@support.example").await;
    let (alice, a) = owner(&app, "alice@support.example").await;
    let (bob, b) = owner(&app, "bob@support.example").await;
    let mia = app.signup("mia@support.example").await;
    app.add_member(&alice, &a, &mia, "member").await;

    // Outside a support session a super-admin is a stranger in every company.
    let (s, _) = app.as_(&root).tenant(&a).get("/api/v1/members").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, v) = start(&app, &root, &a).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["tenant_id"], a.as_str());
    assert!(v["expires_at"].is_string(), "{v}");
    let imp = v["id"].as_str().unwrap().to_owned();
    assert!(imp.starts_with("imp_"), "{v}");

    let support = app.as_(&root).tenant(&a);
    let (s, v) = support.get("/api/v1/members").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    let (s, v) = support
        .patch("/api/v1/tenant", json!({"name": "Renamed by support"}))
        .await;
    assert_eq!(s, StatusCode::OK, "an admin's write: {v}");
    // No secrets, no ownership, no keys, no second session.
    let mia_role = format!("/api/v1/members/{}", mia.id);
    for (path, body) in [
        ("/api/v1/api-keys", json!({"name": "x"})),
        (
            "/api/v1/webhooks",
            json!({"url": "https://hooks.example.com/x", "categories": ["approvals"]}),
        ),
    ] {
        let (s, v) = support.post(path, body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {v}");
        assert_eq!(v["error"]["code"], "impersonation_forbidden", "{path}: {v}");
    }
    let (s, v) = support.patch(&mia_role, json!({"role": "owner"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "impersonation_forbidden");
    // Nor erase anyone, nor shorten what is kept: a platform floor of the policy.
    let (s, v) = support
        .put("/api/v1/retention", json!({"conversations_days": 1}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "policy_denied", "{v}");
    let (s, v) = support
        .post(
            "/api/v1/erasures",
            json!({"email": mia.email, "reason": "support tidy-up"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "policy_denied", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("floor.support-no-deletion"),
        "{v}"
    );
    let (s, v) = start(&app, &root, &b).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "impersonation_forbidden");
    // Only the company of the session.
    let (s, _) = app.as_(&root).tenant(&b).get("/api/v1/members").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The company's log has who came, why, and every request.
    let log = audit(&app, &alice, &a).await;
    let started = log
        .iter()
        .find(|e| e["action"] == "impersonation.start")
        .expect("impersonation.start in the company's log");
    assert_eq!(started["actor_type"], "support_admin");
    assert_eq!(started["actor_id"], root.id.as_str());
    assert_eq!(started["target_id"], imp.as_str());
    assert_eq!(started["details"]["reason"], REASON);
    let requests: Vec<&Value> = log
        .iter()
        .filter(|e| e["action"] == "support.request")
        .collect();
    assert!(
        requests
            .iter()
            .all(|e| e["actor_type"] == "support_admin" && e["actor_id"] == root.id.as_str()),
        "{log:?}"
    );
    for (method, path) in [
        ("GET", "/api/v1/members"),
        ("PATCH", "/api/v1/tenant"),
        ("POST", "/api/v1/api-keys"),
        ("POST", "/api/v1/webhooks"),
    ] {
        assert!(
            requests
                .iter()
                .any(|e| e["details"]["method"] == method && e["details"]["path"] == path),
            "{method} {path} not in {log:?}"
        );
    }
    assert!(
        log.iter()
            .any(|e| e["action"] == "tenant.update" && e["actor_type"] == "support_admin"),
        "{log:?}"
    );

    // Its owners are told; its admins see the session, nobody else does.
    let (_, v) = app
        .as_(&alice)
        .tenant(&a)
        .get("/api/v1/notifications")
        .await;
    let note = v["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["kind"] == "impersonation.started")
        .unwrap_or_else(|| panic!("no impersonation.started notification: {v}"));
    let body = note["body"].as_str().unwrap();
    assert!(
        body.contains(REASON) && body.contains(&root.email),
        "{note}"
    );
    let items = sessions_of(&app, &alice, &a).await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["id"], imp.as_str());
    assert_eq!(items[0]["status"], "active");
    assert_eq!(items[0]["reason"], REASON);
    assert_eq!(items[0]["admin_email"], root.email.as_str());
    assert_eq!(items[0]["admin_id"], root.id.as_str());
    assert!(items[0]["ended_at"].is_null() && items[0]["end_reason"].is_null());
    assert!(sessions_of(&app, &bob, &b).await.is_empty());
    let (s, _) = app.as_(&mia).tenant(&a).get("/api/v1/impersonations").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, v) = app
        .as_(&root)
        .get(&format!("/api/v1/admin/tenants/{a}"))
        .await;
    assert_eq!(v["impersonations"][0]["id"], imp.as_str(), "{v}");
    let (_, v) = app.as_(&root).get("/api/v1/admin/audit").await;
    let target = format!("tenant:{a}");
    assert!(
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "impersonation.start" && e["target"] == target),
        "{v}"
    );
}

async fn support_sessions_end_on_exit_logout_and_expiry(app: TestApp) {
    let root = root(&app, "root@ends.example").await;
    let (alice, a) = owner(&app, "alice@ends.example").await;
    let (s, v) = start(&app, &root, &a).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = app.as_(&root).tenant(&a).get("/api/v1/members").await;
    assert_eq!(s, StatusCode::OK);

    // Exit: a stranger again.
    let (s, v) = app
        .as_(&root)
        .delete("/api/v1/admin/impersonations/current")
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, _) = app.as_(&root).tenant(&a).get("/api/v1/members").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .as_(&root)
        .delete("/api/v1/admin/impersonations/current")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let items = sessions_of(&app, &alice, &a).await;
    assert_eq!(
        (&items[0]["status"], &items[0]["end_reason"]),
        (&json!("ended"), &json!("exit")),
        "{items:?}"
    );
    assert!(items[0]["ended_at"].is_string());
    let log = audit(&app, &alice, &a).await;
    assert!(
        log.iter()
            .any(|e| e["action"] == "impersonation.end" && e["details"]["reason"] == "exit"),
        "{log:?}"
    );

    // Logging out ends it.
    let (s, v) = start(&app, &root, &a).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = app
        .call(
            Method::POST,
            "/api/v1/auth/logout",
            Some(root.token.as_str()),
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app.as_(&root).tenant(&a).get("/api/v1/members").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let root = login(&app, &root.email).await;
    let (s, _) = app.as_(&root).tenant(&a).get("/api/v1/members").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a new session carries none");
    let items = sessions_of(&app, &alice, &a).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0]["status"], "ended");
    assert_eq!(items[0]["end_reason"], "logout");

    // Time runs out.
    let (s, v) = start(&app, &root, &a).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let imp = v["id"].as_str().unwrap().to_owned();
    let (s, _) = app.as_(&root).tenant(&a).get("/api/v1/members").await;
    assert_eq!(s, StatusCode::OK);
    expire(&app, &a).await;
    let (s, _) = app.as_(&root).tenant(&a).get("/api/v1/members").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "an expired session admits nobody");
    let items = sessions_of(&app, &alice, &a).await;
    assert_eq!(items[0]["id"], imp.as_str(), "{items:?}");
    assert_eq!(items[0]["status"], "expired");
    assert!(items[0]["ended_at"].is_null(), "{items:?}");
    let (s, _) = app
        .as_(&root)
        .delete("/api/v1/admin/impersonations/current")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing left to exit");
    // An expired one does not block the next.
    let (s, v) = start(&app, &root, &a).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = app.as_(&root).tenant(&a).get("/api/v1/members").await;
    assert_eq!(s, StatusCode::OK);
    let items = sessions_of(&app, &alice, &a).await;
    let statuses: Vec<&str> = items
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["active", "expired", "ended", "ended"]);
    let (s, v) = app
        .as_(&root)
        .get("/api/v1/admin/security-events?action=impersonation.end")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        v["items"].as_array().unwrap().len() >= 2,
        "exit and logout each ended one: {v}"
    );
}

async fn bad_support_sessions_are_refused(app: TestApp) {
    let root = root(&app, "root@badsupport.example").await;
    let (alice, a) = owner(&app, "alice@badsupport.example").await;
    let (_, b) = owner(&app, "bob@badsupport.example").await;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let cases = [
        (
            json!({"tenant_id": a, "reason": "too short", "minutes": 30}),
            unprocessable,
            Some("reason"),
        ),
        (
            json!({"tenant_id": a, "reason": "   short    ", "minutes": 30}),
            unprocessable,
            Some("reason"),
        ),
        (
            json!({"tenant_id": a, "reason": "r".repeat(501), "minutes": 30}),
            unprocessable,
            Some("reason"),
        ),
        (
            json!({"tenant_id": a, "reason": REASON, "minutes": 0}),
            unprocessable,
            Some("minutes"),
        ),
        (
            json!({"tenant_id": a, "reason": REASON, "minutes": 61}),
            unprocessable,
            Some("minutes"),
        ),
        (
            json!({"tenant_id": a, "reason": REASON, "minutes": -5}),
            unprocessable,
            Some("minutes"),
        ),
        (
            json!({"tenant_id": "nope", "reason": REASON, "minutes": 30}),
            unprocessable,
            Some("tenant_id"),
        ),
        (
            json!({"tenant_id": UNKNOWN, "reason": REASON, "minutes": 30}),
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            json!({"tenant_id": HQ, "reason": REASON, "minutes": 30}),
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            json!({"tenant_id": a, "reason": REASON}),
            unprocessable,
            None,
        ),
        (json!({"tenant_id": a, "minutes": 30}), unprocessable, None),
        (
            json!({"reason": REASON, "minutes": 30}),
            unprocessable,
            None,
        ),
        (
            json!({"tenant_id": a, "reason": REASON, "minutes": "30"}),
            unprocessable,
            None,
        ),
        (
            json!({"tenant_id": a, "reason": REASON, "minutes": 30, "role": "owner"}),
            unprocessable,
            None,
        ),
    ];
    for (body, status, field) in cases {
        let (s, v) = app
            .as_(&root)
            .post("/api/v1/admin/impersonations", body.clone())
            .await;
        assert_eq!(s, status, "{body}: {v}");
        if let Some(f) = field {
            assert_eq!(v["error"]["field"], f, "{body}: {v}");
        }
    }
    // None of that opened anything.
    let (s, _) = app.as_(&root).tenant(&a).get("/api/v1/members").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(sessions_of(&app, &alice, &a).await.is_empty());

    let (s, v) = start(&app, &root, &a).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // Operators see it among the security events and on the health page.
    let (s, v) = app
        .as_(&root)
        .get("/api/v1/admin/security-events?action=impersonation.start")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let events = v["items"].as_array().unwrap();
    assert!(!events.is_empty(), "{v}");
    assert!(
        events.iter().all(|e| e["action"] == "impersonation.start"),
        "{v}"
    );
    assert!(
        events.iter().any(|e| e["user_id"] == root.id.as_str()),
        "{v}"
    );
    let (s, v) = app
        .as_(&root)
        .get("/api/v1/admin/security-events?limit=0")
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = app.as_(&root).get("/api/v1/admin/health").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for k in [
        "queues",
        "dead_letters",
        "models",
        "connectors",
        "connector_failures",
        "security_events",
        "checked_at",
    ] {
        assert!(v.get(k).is_some(), "{k} missing: {v}");
    }
    assert!(
        v["security_events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "impersonation.start"),
        "{v}"
    );

    // On PostgreSQL the runtime role sees no other company's support sessions.
    crate::bookkeeping::rls_hides(&app, &a, &b, &["impersonations"]).await;
}
