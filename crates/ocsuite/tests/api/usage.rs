//! Metering and budgets: refusal before the model is called, plan changes, usage totals
//! and cost, and concurrent chats that cannot overshoot the budget.

use reqwest::StatusCode;
use serde_json::json;

use crate::chat::chat;
use crate::helpers::TestApp;
use crate::tasks::owner;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_refuses_before_calling_the_model_and_plans_raise_it() {
    let app = TestApp::start_with(crate::helpers::Db::Sqlite, |c| {
        c.plan_free_monthly_tokens = 3_000;
        c.llm_prices = vec![ocsuite::config::LlmPrice {
            model: "offline".into(),
            input_usd_per_mtok: "1.00".into(),
            output_usd_per_mtok: "2.00".into(),
        }];
    })
    .await
    .unwrap();
    let (u, t) = owner(&app, "budget@x.example").await;
    let mut refused = None;
    for i in 0..5 {
        let (s, evs) = chat(
            &app,
            &u,
            &t,
            "ceo",
            json!({"message": format!("Question {i}?")}),
        )
        .await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            refused = Some((i, evs));
            break;
        }
        assert_eq!(s, StatusCode::OK);
    }
    let (i, body) = refused.expect("the budget was never enforced");
    assert!(i >= 1, "the first request fits the budget");
    let err = &body[0].1["error"];
    assert_eq!(err["code"], "budget_exceeded");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("free plan") && msg.contains("3000 tokens") && msg.contains("resets on"),
        "{msg}"
    );
    // Nothing of the refused request was stored.
    let (_, list) = app.as_(&u).tenant(&t).get("/api/v1/conversations").await;
    assert_eq!(list["conversations"].as_array().unwrap().len(), i);
    let (_, usage) = app.as_(&u).tenant(&t).get("/api/v1/usage").await;
    assert_eq!(usage["plan"], "free");
    assert_eq!(usage["limits"]["monthly_tokens"], 3000);
    assert_eq!(usage["requests"], i as i64);
    assert_eq!(usage["in_flight_tokens"], 0);
    let used =
        usage["prompt_tokens"].as_i64().unwrap() + usage["completion_tokens"].as_i64().unwrap();
    assert!(used <= 3000, "{usage}");
    assert_eq!(usage["remaining_tokens"].as_i64().unwrap(), 3000 - used);
    let expected_cost = (usage["prompt_tokens"].as_i64().unwrap()
        + 2 * usage["completion_tokens"].as_i64().unwrap()) as f64;
    assert!(
        (usage["cost_micros"].as_i64().unwrap() as f64 - expected_cost).abs() <= i as f64,
        "{usage}"
    );

    // A super-admin moves the tenant to pro: chats resume. Tenant admins cannot.
    let (s, _) = app
        .as_(&u)
        .put(
            &format!("/api/v1/admin/tenants/{t}/plan"),
            json!({"plan": "pro"}),
        )
        .await;
    // Operator routes do not exist for anyone else.
    assert_eq!(s, StatusCode::NOT_FOUND);
    ocsuite::auth::admin::create_super_admin(
        app.config.clone(),
        "root@budget.example",
        None,
        crate::helpers::PASSWORD.into(),
    )
    .await
    .unwrap();
    let (_, v) = app
        .login("root@budget.example", crate::helpers::PASSWORD)
        .await;
    let root = v["token"].as_str().unwrap().to_owned();
    let (s, v) = app
        .as_(&root)
        .put(
            &format!("/api/v1/admin/tenants/{t}/plan"),
            json!({"plan": "pro"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = chat(&app, &u, &t, "ceo", json!({"message": "Now?"})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .as_(&root)
        .put(
            "/api/v1/admin/tenants/ten_00000000000000000000000000000000/plan",
            json!({"plan": "pro"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_chats_cannot_overshoot_the_budget_sqlite() {
    concurrent_chats_cannot_overshoot_the_budget(crate::helpers::Db::Sqlite).await;
}

/// On PostgreSQL this also proves concurrent chats of one tenant do not deadlock on the
/// tenant row (budget lock against foreign-key checks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_chats_cannot_overshoot_the_budget_postgres() {
    concurrent_chats_cannot_overshoot_the_budget(crate::helpers::Db::Postgres).await;
}

async fn concurrent_chats_cannot_overshoot_the_budget(db: crate::helpers::Db) {
    let Some(app) = TestApp::start_with(db, |c| {
        c.plan_free_monthly_tokens = 6_000;
        c.plan_free_chats_per_minute = 1000;
    })
    .await
    else {
        return;
    };
    let (u, t) = owner(&app, "burst@x.example").await;
    let results = futures_util::future::join_all((0..10).map(|i| {
        let (app, u, t) = (&app, &u, &t);
        async move {
            chat(app, u, t, "cfo", json!({"message": format!("burst {i}")}))
                .await
                .0
        }
    }))
    .await;
    let ok = results.iter().filter(|s| **s == StatusCode::OK).count();
    assert!((1..10).contains(&ok), "{results:?}");
    assert!(
        results
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::TOO_MANY_REQUESTS)
    );
    let (_, usage) = app.as_(&u).tenant(&t).get("/api/v1/usage").await;
    let used =
        usage["prompt_tokens"].as_i64().unwrap() + usage["completion_tokens"].as_i64().unwrap();
    assert!(used <= 6_000, "{usage}");
}
