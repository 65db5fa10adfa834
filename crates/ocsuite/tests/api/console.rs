//! The operator console: super-admins search companies, open one company's page, and
//! suspend and unsuspend it (writes 403 `tenant_suspended`, reads go on, jobs wait).
//! Everyone else gets 404. Support sessions ("view as") are in `support.rs`, which
//! shares the helpers here.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::dual;
use crate::helpers::{PASSWORD, TestApp, User};
use crate::tasks::owner;

pub const HQ: &str = "ten_00000000000000000000000000000000";
pub const UNKNOWN: &str = "ten_0123456789abcdef0123456789abcdef";
pub const REASON: &str = "Customer asked for help with import";
const WHY: &str = "Unpaid invoice for November";

pub async fn login(app: &TestApp, email: &str) -> User {
    let (s, v) = app.login(email, PASSWORD).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    User {
        id: v["user"]["id"].as_str().unwrap().to_owned(),
        email: email.to_owned(),
        token: v["token"].as_str().unwrap().to_owned(),
    }
}

pub async fn root(app: &TestApp, email: &str) -> User {
    ocsuite::auth::admin::create_super_admin(app.config.clone(), email, None, PASSWORD.into())
        .await
        .unwrap();
    login(app, email).await
}

/// A signed-up person and the company they own, under its own name.
async fn company(app: &TestApp, email: &str, name: &str) -> (User, String) {
    let u = app.signup(email).await;
    let t = app.create_tenant(&u, name).await;
    (u, t)
}

async fn tenants(app: &TestApp, root: &User, query: &str) -> Value {
    let (s, v) = app
        .as_(root)
        .get(&format!("/api/v1/admin/tenants{query}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{query}: {v}");
    v
}

fn ids(v: &Value) -> Vec<&str> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect()
}

pub async fn start(app: &TestApp, root: &User, tenant: &str) -> (StatusCode, Value) {
    app.as_(root)
        .post(
            "/api/v1/admin/impersonations",
            json!({"tenant_id": tenant, "reason": REASON, "minutes": 30}),
        )
        .await
}

pub async fn audit(app: &TestApp, u: &User, t: &str) -> Vec<Value> {
    let (s, v) = app.as_(u).tenant(t).get("/api/v1/audit").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v.as_array().unwrap().clone()
}

pub async fn sessions_of(app: &TestApp, u: &User, t: &str) -> Vec<Value> {
    let (s, v) = app.as_(u).tenant(t).get("/api/v1/impersonations").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().clone()
}

async fn platform_audit(app: &TestApp, target: &str) -> Vec<String> {
    let mut tx = app.state.store.platform_read().await.unwrap();
    let rows: Vec<(String,)> = tx
        .fetch_all(
            ocsuite::store::sql(
                "SELECT action FROM platform_audit WHERE target = $1 ORDER BY created_at, id",
            )
            .bind(target),
        )
        .await
        .unwrap();
    rows.into_iter().map(|(a,)| a).collect()
}

dual!(
    operators_find_companies_by_name_email_or_id,
    operator_routes_are_hidden_and_a_company_page_shows_it,
    a_suspended_company_reads_but_cannot_write,
    bad_suspensions_are_refused_and_a_companys_own_pause_stays,
);

async fn operators_find_companies_by_name_email_or_id(app: TestApp) {
    let root = root(&app, "root@console.example").await;
    let (_, a) = company(&app, "alpha-owner@console.example", "Zephyr Widgets").await;
    let (_, b) = company(&app, "bravo-owner@console.example", "Quokka Bakery").await;
    let (_, c) = company(&app, "charlie-owner@console.example", "Narwhal Freight").await;

    let all = tenants(&app, &root, "").await;
    let total = all["total"].as_i64().unwrap();
    assert!(total >= 3, "{all}");
    let order = ids(&all);
    assert_eq!(
        order[..3].to_vec(),
        vec![c.as_str(), b.as_str(), a.as_str()],
        "newest first: {all}"
    );
    let item = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == a.as_str())
        .unwrap();
    assert_eq!(item["name"], "Zephyr Widgets");
    assert_eq!(item["status"], "active");
    assert_eq!(item["owner_email"], "alpha-owner@console.example");
    assert_eq!(item["members"], 1);
    assert!(
        item["plan"].is_string() && item["created_at"].is_string(),
        "{item}"
    );
    for k in [
        "last_active",
        "tokens",
        "cost_micros",
        "tasks",
        "storage_bytes",
    ] {
        assert!(item.get(k).is_some(), "{k} missing: {item}");
    }
    for k in ["tokens", "cost_micros", "tasks", "storage_bytes"] {
        assert_eq!(item[k], 0, "{k}: {item}");
    }
    assert!(item.get("total").is_none() && item.get("suspended_at").is_none());

    // A part of a name (any case, spaces trimmed), of an owner's email, or a whole id.
    let by_id = format!("?q={c}");
    for (query, want) in [
        ("?q=zEPHYR", &a),
        ("?q=%20Bakery%20", &b),
        ("?q=bravo-OWNER", &b),
        (by_id.as_str(), &c),
    ] {
        let v = tenants(&app, &root, query).await;
        assert_eq!(ids(&v), [want.as_str()], "{query}: {v}");
        assert_eq!(v["total"], 1, "{query}: {v}");
    }
    let v = tenants(&app, &root, "?q=console.example").await;
    assert_eq!(v["total"], 3, "{v}");
    // LIKE wildcards are plain characters; nothing else matches either.
    for query in ["?q=%25", "?q=_", "?q=%5C", "?q=zzz-nothing", "?q=ten_"] {
        let v = tenants(&app, &root, query).await;
        assert_eq!(v["total"], 0, "{query}: {v}");
        assert_eq!(v["items"], json!([]), "{query}: {v}");
    }

    // Paging keeps the full count, also past the end.
    let v = tenants(&app, &root, "?limit=1&offset=1").await;
    assert_eq!(ids(&v), [b.as_str()], "{v}");
    assert_eq!(
        (
            v["total"].as_i64(),
            v["limit"].as_i64(),
            v["offset"].as_i64()
        ),
        (Some(total), Some(1), Some(1))
    );
    let v = tenants(&app, &root, "?limit=2&offset=1000").await;
    assert_eq!(v["items"], json!([]));
    assert_eq!(v["total"], total, "past the end still counts: {v}");

    let long = format!("?q={}", "x".repeat(201));
    for query in [
        "?limit=0",
        "?limit=201",
        "?limit=500",
        "?offset=-1",
        long.as_str(),
    ] {
        let (s, v) = app
            .as_(&root)
            .get(&format!("/api/v1/admin/tenants{query}"))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {v}");
    }
    for query in ["?colour=red", "?limit=many"] {
        let (s, v) = app
            .as_(&root)
            .get(&format!("/api/v1/admin/tenants{query}"))
            .await;
        assert!(s.is_client_error(), "{query}: {s} {v}");
    }

    // The reserved HQ tenant is no company: its page, suspension and support sessions
    // all answer 404, so the list leaves it out too.
    assert!(!order.contains(&HQ), "HQ listed as a company: {all}");
    assert_eq!(total, 3, "{all}");
}

async fn operator_routes_are_hidden_and_a_company_page_shows_it(app: TestApp) {
    let root = root(&app, "root@page.example").await;
    let (alice, a) = owner(&app, "alice@page.example").await;
    let page = format!("/api/v1/admin/tenants/{a}");
    let suspend = format!("{page}/suspend");
    let unsuspend = format!("{page}/unsuspend");
    let gets = [
        "/api/v1/admin/tenants",
        page.as_str(),
        "/api/v1/admin/health",
        "/api/v1/admin/security-events",
        "/api/v1/admin/audit",
    ];
    // A company's owner, with or without their company, finds no operator route.
    for who in [app.as_(&alice), app.as_(&alice).tenant(&a)] {
        for path in gets {
            let (s, v) = who.get(path).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "GET {path}: {v}");
        }
        let posts = [
            (suspend.as_str(), json!({"reason": WHY})),
            (unsuspend.as_str(), json!({})),
            (
                "/api/v1/admin/impersonations",
                json!({"tenant_id": a, "reason": REASON, "minutes": 30}),
            ),
        ];
        for (path, body) in posts {
            let (s, v) = who.post(path, body).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "POST {path}: {v}");
        }
        let (s, v) = who.delete("/api/v1/admin/impersonations/current").await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    }

    // A day of model use, as the usage ledger records it.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let tid = ocsuite::ids::TenantId::parse(&a).unwrap();
    let mut tx = app.state.store.tenant(&tid).await.unwrap();
    tx.execute(
        ocsuite::store::scoped(
            "INSERT INTO usage_ledger (tenant_id, day, persona, model, requests, prompt_tokens, completion_tokens, cost_micros) \
             VALUES ($1, $2, 'cfo', 'm', 3, 1000, 500, 2500000)",
        )
        .bind(today.as_str()),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let (s, v) = app.as_(&root).get(&page).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["usage"][0]["day"], today.as_str(), "{v}");
    assert_eq!(v["usage"][0]["tokens"], 1500, "{v}");
    assert_eq!(v["usage"][0]["cost_micros"], 2_500_000, "{v}");
    let (_, list) = app
        .as_(&root)
        .get(&format!("/api/v1/admin/tenants?q={a}"))
        .await;
    assert_eq!(list["items"][0]["tokens"], 1500, "{list}");
    assert_eq!(list["items"][0]["cost_micros"], 2_500_000, "{list}");
    assert_eq!(v["tenant"]["id"], a.as_str());
    assert_eq!(v["tenant"]["name"], "Co");
    assert!(v["tenant"]["plan"].is_string(), "{v}");
    assert!(v["tenant"]["created_at"].is_string(), "{v}");
    assert!(
        v["tenant"]["suspended_at"].is_null(),
        "nothing above suspended it: {v}"
    );
    assert_eq!(v["status"], "active");
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{v}");
    assert_eq!(members[0]["email"], alice.email.as_str());
    assert_eq!(members[0]["role"], "owner");
    assert!(v["usage"].is_array() && v["audit"].is_array(), "{v}");
    let queues = v["queues"].as_array().unwrap();
    assert!(!queues.is_empty(), "{v}");
    for q in queues {
        for k in ["queue", "ready", "running", "dead"] {
            assert!(q.get(k).is_some(), "{k} missing: {q}");
        }
    }
    assert_eq!(v["impersonations"], json!([]));
    for id in [UNKNOWN, "nope", HQ] {
        let (s, v) = app
            .as_(&root)
            .get(&format!("/api/v1/admin/tenants/{id}"))
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{id}: {v}");
    }
}

async fn a_suspended_company_reads_but_cannot_write(app: TestApp) {
    let root = root(&app, "root@suspend.example").await;
    let (alice, a) = owner(&app, "alice@suspend.example").await;
    let (bob, b) = owner(&app, "bob@suspend.example").await;
    let suspend = format!("/api/v1/admin/tenants/{a}/suspend");
    let unsuspend = format!("/api/v1/admin/tenants/{a}/unsuspend");

    let (s, v) = app.as_(&root).post(&suspend, json!({"reason": WHY})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["id"], a.as_str());
    assert!(v["suspended_at"].is_string(), "{v}");
    assert_eq!(v["suspended_reason"], WHY);
    assert!(v["jobs_paused_at"].is_string(), "{v}");
    let (s, v) = app.as_(&root).post(&suspend, json!({"reason": WHY})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    // Writes are refused with the reason, the kill switch included; reads go on.
    let as_alice = app.as_(&alice).tenant(&a);
    let (s, v) = as_alice
        .patch("/api/v1/tenant", json!({"name": "Renamed"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "tenant_suspended");
    assert!(v["error"]["message"].as_str().unwrap().contains(WHY), "{v}");
    let (s, v) = as_alice.post("/api/v1/queues/resume", json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "tenant_suspended");
    for path in ["/api/v1/members", "/api/v1/audit", "/api/v1/tenant"] {
        let (s, v) = as_alice.get(path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
    }
    // Its jobs wait behind the kill switch.
    let (s, q) = as_alice.get("/api/v1/queues").await;
    assert_eq!(s, StatusCode::OK, "{q}");
    assert!(q["paused_at"].is_string(), "jobs wait: {q}");
    // The company sees who did it, and why.
    let log = audit(&app, &alice, &a).await;
    let entry = log
        .iter()
        .find(|e| e["action"] == "tenant.suspend")
        .expect("tenant.suspend in the company's log");
    assert_eq!(entry["actor_type"], "support_admin");
    assert_eq!(entry["actor_id"], root.id.as_str());
    assert_eq!(entry["details"]["reason"], WHY);

    // Another company goes on as before.
    let (s, v) = app
        .as_(&bob)
        .tenant(&b)
        .patch("/api/v1/tenant", json!({"name": "Bob's"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, q) = app.as_(&bob).tenant(&b).get("/api/v1/queues").await;
    assert!(q["paused_at"].is_null(), "{q}");

    // The console shows it suspended.
    let v = tenants(&app, &root, &format!("?q={a}")).await;
    assert_eq!(v["items"][0]["status"], "suspended", "{v}");
    let v = tenants(&app, &root, &format!("?q={b}")).await;
    assert_eq!(v["items"][0]["status"], "active", "{v}");
    let (_, v) = app
        .as_(&root)
        .get(&format!("/api/v1/admin/tenants/{a}"))
        .await;
    assert_eq!(v["status"], "suspended", "{v}");
    assert_eq!(v["tenant"]["suspended_reason"], WHY);

    // Lifted: writes and jobs resume; lifting again is a conflict.
    let (s, v) = app.as_(&root).post(&unsuspend, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["suspended_at"].is_null(), "{v}");
    assert!(v["suspended_reason"].is_null(), "{v}");
    assert!(v["jobs_paused_at"].is_null(), "{v}");
    let (s, v) = as_alice
        .patch("/api/v1/tenant", json!({"name": "Renamed"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, q) = as_alice.get("/api/v1/queues").await;
    assert!(q["paused_at"].is_null(), "{q}");
    let (s, v) = app.as_(&root).post(&unsuspend, json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let log = audit(&app, &alice, &a).await;
    let entry = log
        .iter()
        .find(|e| e["action"] == "tenant.unsuspend")
        .expect("tenant.unsuspend in the company's log");
    assert_eq!(entry["actor_type"], "support_admin");
    assert_eq!(entry["details"]["jobs_resumed"], true);
    assert_eq!(
        platform_audit(&app, &format!("tenant:{a}")).await,
        ["tenant.suspend", "tenant.unsuspend"]
    );
}

async fn bad_suspensions_are_refused_and_a_companys_own_pause_stays(app: TestApp) {
    let root = root(&app, "root@badsuspend.example").await;
    let (bob, b) = owner(&app, "bob@badsuspend.example").await;
    let suspend = format!("/api/v1/admin/tenants/{b}/suspend");
    let unsuspend = format!("/api/v1/admin/tenants/{b}/unsuspend");
    for body in [
        json!({"reason": "x"}),
        json!({"reason": "   ab   "}),
        json!({"reason": "y".repeat(501)}),
        json!({}),
        json!({"reason": 5}),
        json!({"reason": WHY, "notify": true}),
    ] {
        let (s, v) = app.as_(&root).post(&suspend, body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
    }
    let (_, v) = app.as_(&root).post(&suspend, json!({"reason": "x"})).await;
    assert_eq!(v["error"]["field"], "reason", "{v}");
    for id in [UNKNOWN, "nope", HQ] {
        for action in ["suspend", "unsuspend"] {
            let (s, v) = app
                .as_(&root)
                .post(
                    &format!("/api/v1/admin/tenants/{id}/{action}"),
                    json!({"reason": WHY}),
                )
                .await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{action} {id}: {v}");
        }
    }
    // Nothing above suspended it.
    let (s, v) = app.as_(&root).post(&unsuspend, json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        platform_audit(&app, &format!("tenant:{b}"))
            .await
            .is_empty()
    );

    // The company had stopped its own jobs: lifting the suspension leaves them stopped.
    let (s, q) = app
        .as_(&bob)
        .tenant(&b)
        .post("/api/v1/queues/pause", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{q}");
    let paused = q["paused_at"].clone();
    assert!(paused.is_string(), "{q}");
    let (s, v) = app.as_(&root).post(&suspend, json!({"reason": WHY})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["jobs_paused_at"], paused, "{v}");
    let (s, v) = app.as_(&root).post(&unsuspend, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["jobs_paused_at"], paused, "{v}");
    let (_, q) = app.as_(&bob).tenant(&b).get("/api/v1/queues").await;
    assert_eq!(
        q["paused_at"], paused,
        "the company's own kill switch stays on: {q}"
    );
    let log = audit(&app, &bob, &b).await;
    let entry = log
        .iter()
        .find(|e| e["action"] == "tenant.unsuspend")
        .expect("tenant.unsuspend in the company's log");
    assert_eq!(entry["details"]["jobs_resumed"], false);
    let (s, q) = app
        .as_(&bob)
        .tenant(&b)
        .post("/api/v1/queues/resume", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{q}");
    assert!(q["paused_at"].is_null(), "{q}");
}
