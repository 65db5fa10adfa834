//! Demo data: one call fills an empty company with a pipeline, books and a draft
//! campaign whose figures are consistent; it loads once and removes only itself.

use reqwest::StatusCode;
use serde_json::json;

use crate::dual;
use crate::helpers::TestApp;
use crate::tasks::owner;

dual!(demo_data_loads_once_and_removes_only_itself);

async fn demo_data_loads_once_and_removes_only_itself(app: TestApp) {
    let (u, t) = owner(&app, "demo@a.example").await;
    let (s, own) = app
        .as_(&u)
        .tenant(&t)
        .post("/api/v1/leadtracker/leads", json!({"name": "My own lead"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{own}");
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post("/api/v1/demo-data", json!({}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (
            v["leads"].as_u64(),
            v["transactions"].as_u64(),
            v["campaigns"].as_u64()
        ),
        (Some(10), Some(48), Some(1)),
        "{v}"
    );
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .post("/api/v1/demo-data", json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    let (_, p) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/leadtracker/summary")
        .await;
    assert_eq!(p["total_leads"], 11);
    assert!(p["won_count"].as_i64().unwrap() >= 1, "{p}");
    let (_, f) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/bookkeeping/summary")
        .await;
    assert!(
        f["revenue_minor"].as_i64().unwrap() > 0 && f["expenses_minor"].as_i64().unwrap() > 0,
        "{f}"
    );
    assert!(f["monthly_burn_minor"].as_i64().unwrap() >= 0);
    let (_, m) = app.as_(&u).tenant(&t).get("/api/v1/metrics").await;
    let modules: Vec<&str> = m["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["module"].as_str().unwrap())
        .collect();
    assert_eq!(modules, ["bookkeeping", "email", "leadtracker"]);
    let (_, c) = app.as_(&u).tenant(&t).get("/api/v1/email/campaigns").await;
    assert_eq!(c["campaigns"][0]["status"], "draft");

    // Members cannot load or remove it.
    let member = app.signup("demomember@a.example").await;
    app.add_member(&u, &t, &member, "member").await;
    let (s, _) = app
        .as_(&member)
        .tenant(&t)
        .delete("/api/v1/demo-data")
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let (s, _) = app.as_(&u).tenant(&t).delete("/api/v1/demo-data").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, v) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/leadtracker/leads")
        .await;
    assert_eq!(v["leads"].as_array().unwrap().len(), 1);
    assert_eq!(v["leads"][0]["name"], "My own lead");
    let (_, v) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/bookkeeping/transactions")
        .await;
    assert_eq!(v["transactions"], json!([]));
    let (s, _) = app.as_(&u).tenant(&t).delete("/api/v1/demo-data").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Another tenant was never touched.
    let (b, tb) = owner(&app, "demob@b.example").await;
    let (_, v) = app
        .as_(&b)
        .tenant(&tb)
        .get("/api/v1/leadtracker/leads")
        .await;
    assert_eq!(v["leads"], json!([]));
}
