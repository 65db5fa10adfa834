//! Security events: recorded where they happen (failed and locked sign-ins, new
//! devices, an API key from a new address, a refused attempt on a company, MFA changes,
//! support sessions), shown to a company's admins for their company and members only,
//! to operators all with filters; a burst raises one alert in the company's inbox.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Db, PASSWORD, TestApp};
use crate::tasks::owner;

fn actions(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

async fn events_are_recorded_and_shown_to_their_company(db: Db) {
    let Some(app) = TestApp::start_with(db, |c| c.login_max_failures = 100).await else {
        return;
    };
    let (alice, a) = owner(&app, "alice@sec.example").await;
    let (bob, b) = owner(&app, "bob@sec.example").await;

    // A wrong password, then a sign-in from a new browser.
    let (s, _) = app.login("alice@sec.example", "wrong password here").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let res = app
        .http
        .post(app.url("/api/v1/auth/login"))
        .header("user-agent", "NewBrowser/1.0")
        .json(&json!({"email": "alice@sec.example", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // Signing in again from it is not new.
    let res = app
        .http
        .post(app.url("/api/v1/auth/login"))
        .header("user-agent", "NewBrowser/1.0")
        .json(&json!({"email": "alice@sec.example", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // An API key used from an address it never saw: once.
    let (_, key) = app.api_key(&alice, &a, "member").await;
    for _ in 0..2 {
        let (s, _) = app.as_(&key).get("/api/v1/members").await;
        assert_eq!(s, StatusCode::OK);
    }
    // Bob reaches for Alice's company: refused with 404, and recorded.
    let (s, _) = app.as_(&bob).tenant(&a).get("/api/v1/members").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, v) = app
        .as_(&alice)
        .tenant(&a)
        .get("/api/v1/security-events")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let seen = actions(&v);
    for want in [
        "login.failed",
        "login.new_device",
        "api_key.new_address",
        "tenant.denied",
    ] {
        assert!(seen.iter().any(|a| a == want), "{want} missing: {seen:?}");
    }
    assert_eq!(
        seen.iter().filter(|a| *a == "login.new_device").count(),
        1,
        "{seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|a| *a == "api_key.new_address").count(),
        1,
        "{seen:?}"
    );
    let (_, only) = app
        .as_(&alice)
        .tenant(&a)
        .get("/api/v1/security-events?action=login.failed")
        .await;
    assert!(actions(&only).iter().all(|a| a == "login.failed"), "{only}");

    // Bob's company sees its own member's refused attempt, none of Alice's events.
    let (_, v) = app
        .as_(&bob)
        .tenant(&b)
        .get("/api/v1/security-events")
        .await;
    let theirs = actions(&v);
    assert!(theirs.contains(&"tenant.denied".to_owned()), "{theirs:?}");
    assert!(
        !theirs
            .iter()
            .any(|a| a == "api_key.new_address" || a == "login.failed"),
        "{theirs:?}"
    );
    for item in v["items"].as_array().unwrap() {
        assert_ne!(item["email"], "alice@sec.example", "{v}");
    }

    // Only admins; bad filters are explained.
    let carol = app.signup("carol@sec.example").await;
    app.add_member(&alice, &a, &carol, "member").await;
    let (s, _) = app
        .as_(&carol)
        .tenant(&a)
        .get("/api/v1/security-events")
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = app
        .as_(&alice)
        .tenant(&a)
        .get("/api/v1/security-events?limit=0")
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    // Operators see everything, filtered.
    let root = app.super_admin("root@sec.example").await;
    let (s, v) = app
        .as_(&root)
        .get("/api/v1/admin/security-events?action=tenant.denied")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(!v["items"].as_array().unwrap().is_empty());
    assert!(actions(&v).iter().all(|a| a == "tenant.denied"));
    let (_, v) = app
        .as_(&root)
        .get("/api/v1/admin/security-events?email=ALICE@sec.example")
        .await;
    assert!(!v["items"].as_array().unwrap().is_empty(), "{v}");
}

async fn a_burst_of_failed_sign_ins_raises_one_alert(db: Db) {
    let Some(app) = TestApp::start_with(db, |c| c.login_max_failures = 100).await else {
        return;
    };
    let (alice, a) = owner(&app, "alice@burst.example").await;
    let (_, b) = owner(&app, "bob@burst.example").await;
    let _ = b;
    for _ in 0..(ocsuite::security::BURST + 3) {
        let (s, _) = app.login("alice@burst.example", "not the password").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, v) = app.as_(&alice).tenant(&a).get("/api/v1/alerts").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let text = v.to_string();
    let alerts: Vec<&Value> = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| {
            x["title"]
                .as_str()
                .unwrap_or("")
                .contains("failed sign-ins")
        })
        .collect();
    assert_eq!(alerts.len(), 1, "one alert per window: {text}");
    assert_eq!(alerts[0]["severity"], "warning");
}

mod recorded_and_shown {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::events_are_recorded_and_shown_to_their_company(crate::helpers::Db::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::events_are_recorded_and_shown_to_their_company(crate::helpers::Db::Postgres).await;
    }
}

mod bursts {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::a_burst_of_failed_sign_ins_raises_one_alert(crate::helpers::Db::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_burst_of_failed_sign_ins_raises_one_alert(crate::helpers::Db::Postgres).await;
    }
}
