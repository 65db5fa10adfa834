//! Metric rules over the modules' figures: a threshold that alerts once per crossing
//! (true, still true, cleared, true again), a figure that deviates from its trailing
//! mean, and isolation of triggers, runs, alerts and every new table (HTTP and
//! PostgreSQL row-level security).

use chrono::{Datelike, Days, Duration, Months, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::dual;
use crate::helpers::{TestApp, User};
use crate::tasks::{owner, start, wait_status};
use crate::triggers::{
    alert, create, create_id, figure, finished, get, runs, tick, until, wait_runs,
};

/// The value of one metric in the module's current snapshot.
pub async fn metric(app: &TestApp, u: &User, t: &str, module: &str, key: &str) -> Value {
    let (_, m) = app.as_(u).tenant(t).get("/api/v1/metrics").await;
    let found = m["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["module"] == module)
        .and_then(|s| {
            s["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["key"] == key)
        })
        .unwrap_or_else(|| panic!("no {module}.{key}: {m}"));
    found["value"].clone()
}

/// The 10th of last month (inside the 3-month burn window, before today).
pub fn last_month() -> String {
    let today = Utc::now().date_naive();
    let first = today.with_day(1).unwrap() - Months::new(1);
    (first + Days::new(9)).format("%Y-%m-%d").to_string()
}

/// Opens the books with 10,000.00 in the bank.
pub async fn open_books(app: &TestApp, u: &User, t: &str) {
    let (s, v) = app
        .as_(u)
        .tenant(t)
        .post(
            "/api/v1/bookkeeping/accounts",
            json!({"name": "Checking", "opening_balance": "10000.00"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// Books `amount` last month.
pub async fn book(app: &TestApp, u: &User, t: &str, amount: &str) {
    let (s, v) = app
        .as_(u)
        .tenant(t)
        .post(
            "/api/v1/bookkeeping/transactions",
            json!({"date": last_month(), "amount": amount, "counterparty": "Test counterparty"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// 10,000.00 opening and 6,000.00 spent last month: cash 4,000.00, burn 2,000.00 a
/// month, runway 2 months.
pub async fn runway_two_months(app: &TestApp, u: &User, t: &str) {
    open_books(app, u, t).await;
    book(app, u, t, "-6000.00").await;
    assert_eq!(
        metric(app, u, t, "bookkeeping", "runway_months").await,
        json!({"type": "ratio", "value": 2.0})
    );
}

/// Moves the test clock on 20 minutes (past the 15-minute re-evaluation) and ticks.
async fn later(app: &TestApp) {
    app.state.clock.advance(Duration::minutes(20));
    tick(app).await;
}

dual!(
    metric_threshold_alerts_once_per_crossing,
    deviation_from_the_trailing_mean_alerts,
    triggers_runs_and_alerts_are_isolated,
);

/// Runway under six months raises one alert however often it is evaluated; clearing and
/// recurring raises a second.
async fn metric_threshold_alerts_once_per_crossing(app: TestApp) {
    let (u, t) = owner(&app, "runway@trg.example").await;
    app.state.clock.set(Utc::now());
    let id = create_id(
        &app,
        &u,
        &t,
        json!({"name": "Runway watch", "condition": {"kind": "metric", "rule": "runway_months < 6"},
               "action": {"kind": "alert", "severity": "critical", "title": "Runway is {{value}}"}}),
    )
    .await;
    runway_two_months(&app, &u, &t).await;
    later(&app).await;
    let r = wait_runs(&app, &u, &t, &id, 1).await;
    assert_eq!(
        (r[0]["reason"].as_str(), r[0]["status"].as_str()),
        (Some("metric"), Some("succeeded")),
        "{r:?}"
    );
    let first = alert(&app, &u, &t, r[0]["output"]["alert_id"].as_str().unwrap()).await;
    assert_eq!(
        (first["trigger_id"].as_str(), first["severity"].as_str()),
        (Some(id.as_str()), Some("critical"))
    );
    let f = figure(&first, "runway_months");
    assert_eq!(f["value"].as_f64(), Some(2.0), "{first}");
    assert_eq!(
        first["title"],
        format!("Runway is {}", f["display"].as_str().unwrap())
    );
    assert_eq!(get(&app, &u, &t, &id).await["firing"], true);

    // Still true: evaluated again (and again), nothing new.
    later(&app).await;
    later(&app).await;
    assert_eq!(runs(&app, &u, &t, &id).await.len(), 1);

    // Revenue: runway 17 months, the condition clears.
    book(&app, &u, &t, "4500.00").await;
    assert_eq!(
        metric(&app, &u, &t, "bookkeeping", "runway_months").await,
        json!({"type": "ratio", "value": 17.0})
    );
    later(&app).await;
    until(10, "the condition to clear", async || {
        let v = get(&app, &u, &t, &id).await;
        if v["firing"] == false { Ok(()) } else { Err(v) }
    })
    .await;
    assert_eq!(runs(&app, &u, &t, &id).await.len(), 1);

    // It drops again: a new episode, a second alert.
    book(&app, &u, &t, "-6000.00").await;
    assert_eq!(
        metric(&app, &u, &t, "bookkeeping", "runway_months").await,
        json!({"type": "ratio", "value": 1.0})
    );
    later(&app).await;
    let r = wait_runs(&app, &u, &t, &id, 2).await;
    assert_eq!(r.len(), 2, "{r:?}");
    let second = alert(&app, &u, &t, r[0]["output"]["alert_id"].as_str().unwrap()).await;
    assert_ne!(second["id"], first["id"]);
    assert_eq!(
        figure(&second, "runway_months")["value"].as_f64(),
        Some(1.0),
        "{second}"
    );
    later(&app).await;
    assert_eq!(runs(&app, &u, &t, &id).await.len(), 2);
    let (_, list) = app.as_(&u).tenant(&t).get("/api/v1/alerts").await;
    let mine = list["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["trigger_id"] == id.as_str())
        .count();
    assert_eq!(mine, 2, "{list}");
}

/// Cash has moved by about 20.00 a day for ten days; a drop of 5,000.00 is far more
/// than three standard deviations from that mean.
async fn deviation_from_the_trailing_mean_alerts(app: TestApp) {
    let (u, t) = owner(&app, "swing@trg.example").await;
    let now = Utc::now();
    app.state.clock.set(now);
    open_books(&app, &u, &t).await;
    let v = create(
        &app,
        &u,
        &t,
        json!({"name": "Cash swing", "condition": {"kind": "metric", "metric": "cash_balance", "op": "deviates", "value": 3, "window": 14},
               "action": {"kind": "alert", "severity": "warning"}}),
    )
    .await;
    let id = v["id"].as_str().unwrap().to_owned();
    let c = &v["condition"];
    assert_eq!(
        (c["op"].as_str(), c["value"].as_f64(), c["window"].as_u64()),
        (Some("deviates"), Some(3.0), Some(14)),
        "{v}"
    );

    // Ten days of history (the daily figures the module would have left), alternating
    // 10,020.00 and 10,000.00: mean 10,010.00, one standard deviation about 10.00.
    let (_, m) = app.as_(&u).tenant(&t).get("/api/v1/metrics").await;
    let today: Vec<Value> = m["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["module"] == "bookkeeping")
        .unwrap_or_else(|| panic!("{m}"))["metrics"]
        .as_array()
        .unwrap()
        .clone();
    let tenant = ocsuite::ids::TenantId::parse(&t).unwrap();
    let mut tx = app.state.store.tenant(&tenant).await.unwrap();
    for back in 1..=10u64 {
        let mut figures = today.clone();
        for f in &mut figures {
            if f["key"] == "cash_balance" {
                f["value"]["minor_units"] =
                    json!(if back % 2 == 0 { 1_002_000 } else { 1_000_000 });
            }
        }
        let day = (now.date_naive() - Days::new(back))
            .format("%Y-%m-%d")
            .to_string();
        tx.execute(
            ocsuite::store::sql("INSERT INTO metric_history (tenant_id, module, day, metrics) VALUES ($1, 'bookkeeping', $2, $3)")
                .bind(&tenant)
                .bind(day)
                .bind(Value::Array(figures).to_string()),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();

    // Today at 10,000.00: one standard deviation, nothing to say.
    later(&app).await;
    later(&app).await;
    assert!(runs(&app, &u, &t, &id).await.is_empty());

    book(&app, &u, &t, "-5000.00").await;
    later(&app).await;
    let r = wait_runs(&app, &u, &t, &id, 1).await;
    assert_eq!(
        (r[0]["reason"].as_str(), r[0]["status"].as_str()),
        (Some("metric"), Some("succeeded")),
        "{r:?}"
    );
    let a = alert(&app, &u, &t, r[0]["output"]["alert_id"].as_str().unwrap()).await;
    let cash = figure(&a, "cash_balance");
    assert!(cash["value"].is_number(), "{a}");
    assert!(!cash["display"].as_str().unwrap().is_empty(), "{a}");
    later(&app).await;
    assert_eq!(
        runs(&app, &u, &t, &id).await.len(),
        1,
        "stays deviated: one alert"
    );
}

async fn triggers_runs_and_alerts_are_isolated(app: TestApp) {
    let (a, ta) = owner(&app, "a@iso-trg.example").await;
    let (b, tb) = owner(&app, "b@iso-trg.example").await;
    let (_, b_key) = app.api_key(&b, &tb, "admin").await;
    app.state.clock.set(Utc::now());
    // A's books say two months of runway; B has the same rule and no books.
    runway_two_months(&app, &a, &ta).await;
    let rule = json!({"name": "Runway watch", "condition": {"kind": "metric", "rule": "runway_months < 6"}, "action": {"kind": "alert", "severity": "critical"}});
    let a_trg = create_id(&app, &a, &ta, rule.clone()).await;
    let b_trg = create_id(&app, &b, &tb, rule).await;
    let dead = json!({"name": "Dead letters", "condition": {"kind": "event", "event": "task.dead_lettered"}, "action": {"kind": "alert"}});
    let a_dead = create_id(&app, &a, &ta, dead.clone()).await;
    let b_dead = create_id(&app, &b, &tb, dead).await;
    later(&app).await;
    let r = wait_runs(&app, &a, &ta, &a_trg, 1).await;
    let a_alert = r[0]["output"]["alert_id"].as_str().unwrap().to_owned();
    // An event in A does not reach B's trigger.
    let task = start(
        &app,
        &a,
        &ta,
        "diagnostics.fail",
        json!({"message": "down"}),
    )
    .await;
    wait_status(&app, &a, &ta, &task, "dead").await;
    until(30, "A's dead-letter trigger", async || {
        tick(&app).await;
        let r = runs(&app, &a, &ta, &a_dead).await;
        if r.first().is_some_and(finished) {
            Ok(())
        } else {
            Err(Value::Array(r))
        }
    })
    .await;
    later(&app).await;
    assert!(
        runs(&app, &b, &tb, &b_trg).await.is_empty(),
        "B's rule saw A's figures"
    );
    assert!(
        runs(&app, &b, &tb, &b_dead).await.is_empty(),
        "B's trigger saw A's event"
    );
    let (_, v) = app.as_(&b).tenant(&tb).get("/api/v1/alerts").await;
    assert_eq!(v["alerts"], json!([]), "{v}");

    for token in [b.token.as_str(), b_key.as_str()] {
        for (m, path, body) in [
            (Method::GET, format!("/api/v1/triggers/{a_trg}"), None),
            (
                Method::PATCH,
                format!("/api/v1/triggers/{a_trg}"),
                Some(json!({"paused": true})),
            ),
            (Method::DELETE, format!("/api/v1/triggers/{a_trg}"), None),
            (
                Method::POST,
                format!("/api/v1/triggers/{a_trg}/run"),
                Some(json!({})),
            ),
            (Method::GET, format!("/api/v1/triggers/{a_trg}/runs"), None),
            (Method::GET, format!("/api/v1/alerts/{a_alert}"), None),
            (
                Method::POST,
                format!("/api/v1/alerts/{a_alert}/ack"),
                Some(json!({})),
            ),
            (
                Method::POST,
                format!("/api/v1/alerts/{a_alert}/snooze"),
                Some(json!({"hours": 1})),
            ),
            (
                Method::POST,
                format!("/api/v1/alerts/{a_alert}/resolve"),
                Some(json!({"note": "mine now"})),
            ),
            (
                Method::POST,
                format!("/api/v1/alerts/{a_alert}/escalate"),
                Some(json!({})),
            ),
        ] {
            for tenant in [&tb, &ta] {
                let (s, v) = app
                    .call(m.clone(), &path, Some(token), Some(tenant), body.clone())
                    .await;
                assert_eq!(s, StatusCode::NOT_FOUND, "{m} {path} as B in {tenant}: {v}");
            }
        }
        let (_, list) = app.as_(token).tenant(&tb).get("/api/v1/triggers").await;
        let listed = list.to_string();
        assert!(
            !listed.contains(&a_trg) && !listed.contains(&a_dead),
            "{listed}"
        );
    }
    // Nothing of A's changed.
    let v = get(&app, &a, &ta, &a_trg).await;
    assert_eq!(v["paused"], false);
    assert_eq!(runs(&app, &a, &ta, &a_trg).await.len(), 1);
    assert_eq!(alert(&app, &a, &ta, &a_alert).await["status"], "open");
    rls_covers_the_new_tables(&app, &ta, &tb).await;
}

/// On PostgreSQL: every table this issue added that holds tenant rows hides A's rows
/// from the runtime role with no tenant or with B set.
pub async fn rls_covers_the_new_tables(app: &TestApp, a: &str, b: &str) {
    use sqlx::Connection;
    if app.config.is_sqlite() {
        return;
    }
    let mut owner =
        sqlx::PgConnection::connect(app.config.migration_database_url.as_deref().unwrap())
            .await
            .unwrap();
    let mut tables: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT table_name::text FROM information_schema.columns WHERE table_schema = 'public' AND column_name = 'tenant_id'",
    )
    .fetch_all(&mut owner)
    .await
    .unwrap();
    tables.retain(|t| {
        [
            "trigger",
            "alert",
            "webhook",
            "digest",
            "notification_pref",
            "metric_history",
        ]
        .iter()
        .any(|p| t.contains(p))
    });
    for must in ["triggers", "alerts", "webhooks"] {
        assert!(
            tables.iter().any(|t| t == must),
            "{must} not found: {tables:?}"
        );
    }
    // A has triggers: the helper checks the first table has A's rows.
    tables.sort_by_key(|t| (t != "triggers", t.clone()));
    let names: Vec<&str> = tables.iter().map(String::as_str).collect();
    crate::bookkeeping::rls_hides(app, a, b, &names).await;
}
