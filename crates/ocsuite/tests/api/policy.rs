//! Policy as code: the default policy keeps today's behaviour and logs every decision;
//! a company's own policy takes effect at once, is versioned with diff and rollback,
//! is validated against the schema (Cedar's message with line and column) and cannot
//! loosen a platform floor; simulation answers what-if questions and lists the past
//! decisions a draft would change; companies never see each other's policies.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::dual;
use crate::helpers::{TestApp, User};
use crate::tasks::owner;

const NEEDS_MFA: &str = r#"@id("keys-need-mfa")
forbid(principal, action == Ocsuite::Action::"api_key.create", resource)
unless { context.mfa };
"#;

async fn create_key(app: &TestApp, u: &User, t: &str) -> (StatusCode, Value) {
    app.as_(u)
        .tenant(t)
        .post("/api/v1/api-keys", json!({"name": "k", "role": "member"}))
        .await
}

async fn default_policy(app: &TestApp, u: &User, t: &str) -> String {
    let (s, v) = app.as_(u).tenant(t).get("/api/v1/policy/schema").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["schema"].as_str().unwrap().contains("namespace Ocsuite"));
    assert!(
        v["floors"]
            .as_str()
            .unwrap()
            .contains("floor.support-no-credentials")
    );
    v["default_policy"].as_str().unwrap().to_owned()
}

dual!(
    the_default_policy_decides_and_logs,
    a_company_policy_takes_effect_and_rolls_back,
    bad_policies_are_refused_with_positions,
    simulate_lists_changed_decisions,
    policies_are_isolated
);

async fn the_default_policy_decides_and_logs(app: TestApp) {
    let (u, t) = owner(&app, "pol@a.example").await;
    let (s, v) = app.as_(&u).tenant(&t).get("/api/v1/policy").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["version"], 0);
    let (s, v) = create_key(&app, &u, &t).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, d) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/policy/decisions?action=api_key.create")
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let first = &d[0];
    assert_eq!(first["allowed"], true, "{d}");
    assert_eq!(first["policies"], json!(["default.admins-manage"]));
    assert_eq!(first["version"], 0);
    assert_eq!(first["principal_id"], u.id.as_str());
    assert_eq!(first["question"]["principal"]["role"], "owner");
    // The decision is sealed like every audit entry.
    let (_, r) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/receipts?action=policy.allow")
        .await;
    assert!(!r.as_array().unwrap().is_empty(), "{r}");
    // The Trust page shows the policy, the decision and the signed log.
    let (s, html) = app.page(&u.token, "/trust").await;
    assert_eq!(s, StatusCode::OK);
    for want in [
        "data-policy",
        "default.admins-manage",
        "api_key.create",
        "data-receipts",
        "Start an export",
    ] {
        assert!(html.contains(want), "{want} missing from the Trust page");
    }
    // A member is stopped by the role check before the policy, as before.
    let m = app.signup("pol-member@a.example").await;
    app.add_member(&u, &t, &m, "member").await;
    let (s, _) = create_key(&app, &m, &t).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = app.as_(&m).tenant(&t).get("/api/v1/policy").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, html) = app.page(&m.token, "/trust").await;
    assert!(html.contains("for owners and admins") && !html.contains("default.admins-manage"));
}

async fn a_company_policy_takes_effect_and_rolls_back(app: TestApp) {
    let (u, t) = owner(&app, "pol2@a.example").await;
    let base = default_policy(&app, &u, &t).await;
    let me = app.as_(&u).tenant(&t);
    let (s, v) = me
        .put(
            "/api/v1/policy",
            json!({"text": format!("{base}\n{NEEDS_MFA}"), "note": "keys need a second factor"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["version"], 1);
    // At once: the owner has no second factor.
    let (s, v) = create_key(&app, &u, &t).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "policy_denied");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("keys-need-mfa"),
        "{v}"
    );
    let (_, d) = me.get("/api/v1/policy/decisions?decision=deny").await;
    assert_eq!(d[0]["policies"], json!(["keys-need-mfa"]), "{d}");
    assert_eq!(d[0]["version"], 1);
    let (_, d) = me
        .get("/api/v1/policy/decisions?policy=keys-need-mfa")
        .await;
    assert_eq!(d.as_array().unwrap().len(), 1, "{d}");
    let (_, keys) = me.get("/api/v1/api-keys").await;
    assert_eq!(keys.as_array().unwrap().len(), 0, "nothing was created");

    let (s, diff) = me.get("/api/v1/policy/versions/1/diff").await;
    assert_eq!(s, StatusCode::OK, "{diff}");
    assert!(
        diff["diff"]
            .as_str()
            .unwrap()
            .contains("+@id(\"keys-need-mfa\")"),
        "{diff}"
    );
    let (s, v) = me
        .post("/api/v1/policy/rollback", json!({"version": 0}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["version"], 2);
    assert_eq!(v["note"], "rollback to version 0");
    let (s, v) = create_key(&app, &u, &t).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (_, versions) = me.get("/api/v1/policy/versions").await;
    let numbers: Vec<i64> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 1, 0]);
    let (s, _) = me
        .post("/api/v1/policy/rollback", json!({"version": 9}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn bad_policies_are_refused_with_positions(app: TestApp) {
    let (u, t) = owner(&app, "pol3@a.example").await;
    let me = app.as_(&u).tenant(&t);
    let cases = [
        (
            "@id(\"a\")\npermit(principal, action, resource)",
            "policy_invalid",
            Some(2),
        ),
        (
            "@id(\"a\")\npermit(principal, action, resource)\nwhen { resource.colour == \"red\" };",
            "policy_invalid",
            Some(3),
        ),
        (
            "permit(principal, action, resource);",
            "policy_invalid",
            None,
        ),
        (
            "@id(\"a\")\npermit(principal, action, resource);\n@id(\"a\")\nforbid(principal, action, resource);",
            "policy_invalid",
            None,
        ),
        (
            "@id(\"support-may\")\npermit(principal, action == Ocsuite::Action::\"api_key.create\", resource)\nwhen { context.impersonated };",
            "policy_loosens_floor",
            None,
        ),
        (
            "@id(\"floor.one-company\")\npermit(principal, action, resource) when { principal.role == \"owner\" };",
            "policy_loosens_floor",
            None,
        ),
    ];
    for (text, code, line) in cases {
        let (s, v) = me.put("/api/v1/policy", json!({"text": text})).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{text}: {v}");
        assert_eq!(v["error"]["code"], code, "{text}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
        if let Some(line) = line {
            assert_eq!(
                v["error"]["details"]["problems"][0]["line"], line,
                "{text}: {v}"
            );
        }
        if code == "policy_loosens_floor" {
            assert!(
                v["error"]["details"]["floor"]
                    .as_str()
                    .unwrap()
                    .starts_with("floor."),
                "{v}"
            );
        }
    }
    let (s, _) = me
        .put("/api/v1/policy", json!({"text": "x".repeat(70_000)}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // Hostile nesting is refused before Cedar's recursive parser sees it.
    let deep = format!(
        "@id(\"d\")\npermit(principal, action, resource) when {{ {}true{} }};",
        "(".repeat(5000),
        ")".repeat(5000)
    );
    for (path, body) in [
        ("/api/v1/policy", json!({"text": deep})),
        ("/api/v1/policy/simulate", json!({"draft": deep})),
    ] {
        let (s, v) = if path.ends_with("simulate") {
            me.post(path, body).await
        } else {
            me.put(path, body).await
        };
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("nest"),
            "{v}"
        );
    }
    let bangs = format!(
        "@id(\"d\")\npermit(principal, action, resource) when {{ {}true }};",
        "!".repeat(5000)
    );
    let (s, _) = me.put("/api/v1/policy", json!({"text": bangs})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = me.put("/api/v1/policy", json!({"text": 5})).await;
    assert!(s.is_client_error());
    let (s, _) = me
        .put("/api/v1/policy", json!({"text": "", "extra": 1}))
        .await;
    assert!(s.is_client_error());
    let (_, v) = me.get("/api/v1/policy").await;
    assert_eq!(v["version"], 0, "nothing was stored");
    for bad in [
        "/api/v1/policy/decisions?decision=maybe",
        "/api/v1/policy/decisions?limit=0",
        "/api/v1/policy/decisions?policy=%22x",
        "/api/v1/policy/decisions?before=nope",
    ] {
        let (s, v) = me.get(bad).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {v}");
    }
    let (s, _) = me.get("/api/v1/policy/versions/7/diff").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn simulate_lists_changed_decisions(app: TestApp) {
    let (u, t) = owner(&app, "pol4@a.example").await;
    let base = default_policy(&app, &u, &t).await;
    for _ in 0..3 {
        let (s, v) = create_key(&app, &u, &t).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let me = app.as_(&u).tenant(&t);
    let question = json!({
        "action": "api_key.create",
        "principal": {"type": "user", "id": u.id, "role": "admin"},
        "resource": {"kind": "api_key", "operation": "create", "target_role": "member"},
        "context": {"mfa": false}
    });
    let (s, v) = me
        .post(
            "/api/v1/policy/simulate",
            json!({"request": question, "draft": format!("{base}\n{NEEDS_MFA}")}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["current"]["allowed"], true, "{v}");
    assert_eq!(v["draft"]["allowed"], false);
    assert_eq!(v["draft"]["policies"], json!(["keys-need-mfa"]));
    assert_eq!(v["changed"].as_array().unwrap().len(), 3, "{v}");
    assert!(v["replayed"].as_u64().unwrap() >= 3);
    assert_eq!(v["changed"][0]["before"], true);
    assert_eq!(v["changed"][0]["action"], "api_key.create");
    // The floor holds in any draft; a question from another company is denied.
    let mut foreign = question.clone();
    foreign["resource"]["company"] = json!("ten_elsewhere");
    let (_, v) = me
        .post("/api/v1/policy/simulate", json!({"request": foreign}))
        .await;
    assert_eq!(v["current"]["allowed"], false, "{v}");
    assert_eq!(v["current"]["policies"], json!(["floor.one-company"]));
    // Bad questions.
    let (s, _) = me.post("/api/v1/policy/simulate", json!({})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let mut unknown = question.clone();
    unknown["action"] = json!("rocket.launch");
    let (s, v) = me
        .post("/api/v1/policy/simulate", json!({"request": unknown}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, _) = me
        .post("/api/v1/policy/simulate", json!({"draft": "nonsense"}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = me
        .post(
            "/api/v1/policy/simulate",
            json!({"draft": base, "replay": 0}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn policies_are_isolated(app: TestApp) {
    let (ann, a) = owner(&app, "pol-a@a.example").await;
    let (bob, b) = owner(&app, "pol-b@b.example").await;
    let base = default_policy(&app, &bob, &b).await;
    let (s, v) = app
        .as_(&bob)
        .tenant(&b)
        .put(
            "/api/v1/policy",
            json!({"text": format!("{base}\n{NEEDS_MFA}")}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // B's policy binds B only.
    let (s, _) = create_key(&app, &ann, &a).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = create_key(&app, &bob, &b).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, v) = app.as_(&ann).tenant(&a).get("/api/v1/policy").await;
    assert_eq!(v["version"], 0);
    let (_, d) = app
        .as_(&bob)
        .tenant(&b)
        .get("/api/v1/policy/decisions")
        .await;
    assert!(
        d.as_array()
            .unwrap()
            .iter()
            .all(|x| x["principal_id"] == bob.id.as_str()),
        "{d}"
    );
    let (s, _) = app.as_(&bob).tenant(&a).get("/api/v1/policy").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    if app.config.migration_database_url.is_some() {
        use sqlx::{Connection, PgConnection};
        let mut conn = PgConnection::connect(&app.config.database_url)
            .await
            .unwrap();
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(&a)
            .execute(&mut *tx)
            .await
            .unwrap();
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM policy_versions WHERE tenant_id = $1")
                .bind(&b)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        assert_eq!(n, 0, "RLS hides B's policy from A");
        tx.rollback().await.unwrap();
    }
}
