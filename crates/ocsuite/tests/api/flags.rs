//! Feature flags: operators set them (super-admins only; everyone else gets 404), every
//! change is audited in the platform log, `GET /features` gives each caller the answer
//! for them and their company, and a change on one node reaches another within seconds.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::dual;
use crate::helpers::{Db, TestApp, User};
use crate::tasks::owner;

async fn features(app: &TestApp, u: &User, t: &str) -> Value {
    let (s, v) = app.as_(u).tenant(t).get("/api/v1/features").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["features"].clone()
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
    operators_set_flags_and_callers_get_their_answer,
    bad_flags_are_refused,
    the_system_banner_shows_on_every_page_until_it_ends,
);

async fn operators_set_flags_and_callers_get_their_answer(app: TestApp) {
    let root = app.super_admin("root@flags.example").await;
    let (alice, a) = owner(&app, "alice@flags.example").await;
    let (bob, b) = owner(&app, "bob@flags.example").await;

    // Nobody but a super-admin finds the operator routes.
    for (method, path) in [
        ("get", "/api/v1/admin/flags"),
        ("put", "/api/v1/admin/flags/x"),
        ("delete", "/api/v1/admin/flags/x"),
    ] {
        let as_alice = app.as_(&alice).tenant(&a);
        let (s, v) = match method {
            "get" => as_alice.get(path).await,
            "put" => as_alice.put(path, json!({"stage": "ga"})).await,
            _ => as_alice.delete(path).await,
        };
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {path}: {v}");
    }
    assert_eq!(features(&app, &alice, &a).await, json!({}));

    // Alpha: only the company it names.
    let (s, v) = app
        .as_(&root)
        .put(
            "/api/v1/admin/flags/new-inbox",
            json!({"stage": "alpha", "tenants": [a], "description": "The new inbox"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["stage"], "alpha");
    assert_eq!(features(&app, &alice, &a).await["new-inbox"], true);
    assert_eq!(features(&app, &bob, &b).await["new-inbox"], false);

    // Beta by plan: Bob's company on enterprise gets it; Alice keeps hers by name.
    let (s, _) = app
        .as_(&root)
        .put(
            &format!("/api/v1/admin/tenants/{b}/plan"),
            json!({"plan": "enterprise"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .as_(&root)
        .put(
            "/api/v1/admin/flags/new-inbox",
            json!({"stage": "beta", "tenants": [a], "plans": ["enterprise"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(features(&app, &bob, &b).await["new-inbox"], true);
    assert_eq!(features(&app, &alice, &a).await["new-inbox"], true);

    // A person targeted by id gets it in any company.
    let (s, _) = app
        .as_(&root)
        .put(
            "/api/v1/admin/flags/reports",
            json!({"stage": "alpha", "users": [bob.id]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(features(&app, &bob, &b).await["reports"], true);
    assert_eq!(features(&app, &alice, &a).await["reports"], false);

    // The kill switch wins over everything; GA reaches everyone.
    let (s, _) = app
        .as_(&root)
        .put(
            "/api/v1/admin/flags/new-inbox",
            json!({"stage": "ga", "killed": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(features(&app, &alice, &a).await["new-inbox"], false);
    let (s, _) = app
        .as_(&root)
        .put("/api/v1/admin/flags/new-inbox", json!({"stage": "ga"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(features(&app, &bob, &b).await["new-inbox"], true);
    // Server code asks the same function.
    assert!(app.state.flags.enabled(
        "new-inbox",
        &ocsuite::flags::Subject {
            user: None,
            tenant: Some(&a),
            plan: Some("free")
        }
    ));

    let (s, v) = app.as_(&root).get("/api/v1/admin/flags").await;
    assert_eq!(s, StatusCode::OK);
    let keys: Vec<&str> = v["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["new-inbox", "reports"]);

    let (s, _) = app.as_(&root).delete("/api/v1/admin/flags/new-inbox").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(features(&app, &alice, &a).await.get("new-inbox").is_none());
    let (s, _) = app.as_(&root).delete("/api/v1/admin/flags/new-inbox").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Every change is in the platform's audit log.
    assert_eq!(
        platform_audit(&app, "flag:new-inbox").await,
        [
            "flag.create",
            "flag.update",
            "flag.update",
            "flag.update",
            "flag.delete"
        ]
    );
}

async fn bad_flags_are_refused(app: TestApp) {
    let root = app.super_admin("root@badflags.example").await;
    let cases = [
        (
            "/api/v1/admin/flags/Bad Key",
            json!({"stage": "ga"}),
            "invalid_key",
        ),
        (
            "/api/v1/admin/flags/ok",
            json!({"stage": "beta", "rollout_percent": 101}),
            "invalid_percent",
        ),
        (
            "/api/v1/admin/flags/ok",
            json!({"stage": "beta", "tenants": ["ten_00000000000000000000000000000001"]}),
            "unknown_tenant",
        ),
        (
            "/api/v1/admin/flags/ok",
            json!({"stage": "beta", "tenants": ["ten_00000000000000000000000000000000"]}),
            "unknown_tenant",
        ),
        (
            "/api/v1/admin/flags/ok",
            json!({"stage": "beta", "tenants": ["'; DROP TABLE tenants; --"]}),
            "unknown_tenant",
        ),
        (
            "/api/v1/admin/flags/ok",
            json!({"stage": "beta", "users": ["usr_00000000000000000000000000000001"]}),
            "unknown_user",
        ),
        (
            "/api/v1/admin/flags/ok",
            json!({"stage": "beta", "plans": ["platinum"]}),
            "unknown_plan",
        ),
    ];
    for (path, body, code) in cases {
        let (s, v) = app.as_(&root).put(path, body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{path} {body}: {v}");
        assert_eq!(v["error"]["code"], code, "{v}");
    }
    let (s, _) = app
        .as_(&root)
        .put("/api/v1/admin/flags/ok", json!({"stage": "sometimes"}))
        .await;
    assert!(s.is_client_error());
    let (s, _) = app
        .as_(&root)
        .put(
            "/api/v1/admin/flags/ok",
            json!({"stage": "ga", "colour": "red"}),
        )
        .await;
    assert!(s.is_client_error());
    let (s, v) = app.as_(&root).get("/api/v1/admin/flags").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["flags"], json!([]), "nothing refused was stored");
}

/// A flag changed through one node is seen by another within seconds (each reloads its
/// copy every two seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_reaches_the_other_node_within_seconds_postgres() {
    let Some(a) = TestApp::start(Db::Postgres).await else {
        return;
    };
    let b = TestApp::start_config(a.config.clone()).await;
    let root = a.super_admin("root@nodes-flags.example").await;
    let (u, t) = owner(&a, "u@nodes-flags.example").await;
    assert_eq!(features(&b, &u, &t).await.get("fast"), None);
    let (s, _) = a
        .as_(&root)
        .put("/api/v1/admin/flags/fast", json!({"stage": "ga"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let started = Instant::now();
    loop {
        if features(&b, &u, &t).await["fast"] == true {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "node B never saw the flag"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn the_system_banner_shows_on_every_page_until_it_ends(app: TestApp) {
    let root = app.super_admin("root@banner.example").await;
    let (u, t) = owner(&app, "u@banner.example").await;
    let (s, v) = app.as_(&u).get("/api/v1/banner").await;
    assert_eq!((s, &v["banner"]), (StatusCode::OK, &Value::Null));
    // Only operators set it.
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .put(
            "/api/v1/admin/banner",
            json!({"level": "info", "text": "hi"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    for bad in [
        json!({"level": "info", "text": "   "}),
        json!({"level": "info", "text": "x".repeat(301)}),
        json!({"level": "info", "text": "past", "ends_at": "2020-01-01T00:00:00Z"}),
    ] {
        let (s, v) = app.as_(&root).put("/api/v1/admin/banner", bad).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    }
    let (s, _) = app
        .as_(&root)
        .put(
            "/api/v1/admin/banner",
            json!({"level": "loud", "text": "x"}),
        )
        .await;
    assert!(s.is_client_error());

    let text = "Maintenance on Sunday 02:00–03:00 UTC <b>bold</b>";
    let (s, v) = app
        .as_(&root)
        .put(
            "/api/v1/admin/banner",
            json!({"level": "warning", "text": text, "ends_at": "2099-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = app.as_(&u).get("/api/v1/banner").await;
    assert_eq!(
        (v["banner"]["level"].as_str(), v["banner"]["text"].as_str()),
        (Some("warning"), Some(text))
    );
    for path in ["/dashboard", "/alerts", "/settings"] {
        let (s, _, html) = crate::web::page(&app, Some(&u), path).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert!(html.contains("system-banner warning"), "{path}");
        assert!(
            html.contains("Maintenance on Sunday 02:00–03:00 UTC") && !html.contains("<b>bold</b>"),
            "{path}: escaped text"
        );
    }
    let (s, _) = app.as_(&root).delete("/api/v1/admin/banner").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, _, html) = crate::web::page(&app, Some(&u), "/dashboard").await;
    assert!(!html.contains("system-banner"));
    let (s, _) = app.as_(&root).delete("/api/v1/admin/banner").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        platform_audit(&app, "banner").await,
        ["banner.set", "banner.clear"]
    );
}
