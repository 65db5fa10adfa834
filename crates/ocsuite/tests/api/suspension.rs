//! A suspension stops a company's work, not only its API: a task queued before it waits
//! while the company is suspended (past its run time) and runs once it is lifted; a due
//! automation does not fire meanwhile.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::dual;
use crate::helpers::TestApp;
use crate::tasks::{owner, wait_status};

dual!(suspended_work_waits_and_resumes);

async fn suspended_work_waits_and_resumes(app: TestApp) {
    let root = app.super_admin("root@susp.example").await;
    let (u, t) = owner(&app, "own@susp.example").await;
    let run_at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(
            "/api/v1/tasks/execute",
            json!({"capability": "diagnostics.echo", "input": {}, "run_at": run_at}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let task = v["task"]["id"].as_str().unwrap().to_owned();
    // An hourly automation, due now.
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(
            "/api/v1/triggers",
            json!({"name": "Hourly check", "condition": {"kind": "schedule", "every_hours": 1},
                   "action": {"kind": "alert", "severity": "info", "title": "Hourly"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let tid = ocsuite::ids::TenantId::parse(&t).unwrap();
    let mut tx = app.state.store.tenant(&tid).await.unwrap();
    tx.execute(
        ocsuite::store::scoped("UPDATE triggers SET next_run_at = $2 WHERE tenant_id = $1")
            .bind(chrono::Utc::now() - chrono::Duration::minutes(5)),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (s, v) = app
        .as_(&root)
        .post(
            &format!("/api/v1/admin/tenants/{t}/suspend"),
            json!({"reason": "Payment failed three times"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Past its run time, the task still waits; the scheduler fires nothing for it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, d) = app
        .as_(&u)
        .tenant(&t)
        .get(&format!("/api/v1/tasks/{task}"))
        .await;
    assert_eq!(d["task"]["status"], "queued", "{d}");
    let before: i64 = runs(&app, &t).await;
    ocsuite::triggers::schedule::tick(&app.state).await.unwrap();
    assert_eq!(
        runs(&app, &t).await,
        before,
        "a suspended company's automations wait"
    );
    // The company's people see why, on every page.
    let (_, html) = app.page(&u.token, "/dashboard").await;
    assert!(html.contains("data-suspended-banner"), "{html}");
    assert!(html.contains("Payment failed three times"));

    let (s, _) = app
        .as_(&root)
        .post(&format!("/api/v1/admin/tenants/{t}/unsuspend"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    wait_status(&app, &u, &t, &task, "succeeded").await;
    // Lifted: the due automations fire.
    ocsuite::triggers::schedule::tick(&app.state).await.unwrap();
    assert!(
        runs(&app, &t).await > before,
        "the automation fires once lifted"
    );
}

/// Trigger runs of the company (the weekly digest's included).
async fn runs(app: &TestApp, t: &str) -> i64 {
    let tid = ocsuite::ids::TenantId::parse(t).unwrap();
    let mut tx = app.state.store.tenant_read(&tid).await.unwrap();
    let (n,): (i64,) = tx
        .fetch_one(ocsuite::store::scoped(
            "SELECT count(*) FROM trigger_runs WHERE tenant_id = $1",
        ))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    n
}
