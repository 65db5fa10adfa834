//! Triggers: create, read, change and delete with their roles, conditions and actions
//! normalised, and bad input refused naming the field and the offending part. The
//! helpers here are shared by the other trigger, alert and webhook tests. Schedules:
//! `trigger_schedules.rs`; metric rules and isolation: `trigger_metrics.rs`; events and
//! actions: `trigger_events.rs`.

use std::time::Duration as StdDuration;

use chrono::{DateTime, TimeZone, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::dual;
use crate::helpers::{TestApp, User};
use crate::tasks::owner;

// ---- Helpers -------------------------------------------------------------------------

pub fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

/// An RFC 3339 time from a JSON value.
pub fn time(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// `v[key]` when the answer wraps the object in `{key: …}`, else `v`.
pub fn unwrap(v: Value, key: &str) -> Value {
    match v.get(key) {
        Some(inner) if inner.is_object() => inner.clone(),
        _ => v,
    }
}

/// Polls `f` every 50 ms until it answers `Ok`; after `secs` seconds fails with the last
/// thing it saw.
pub async fn until<T>(secs: u64, what: &str, mut f: impl AsyncFnMut() -> Result<T, Value>) -> T {
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(secs);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) => assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; last seen: {last}"
            ),
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
}

/// The scheduler's tick, as the background loop runs it.
pub async fn tick(app: &TestApp) -> usize {
    ocsuite::triggers::schedule::tick(&app.state).await.unwrap()
}

pub async fn create(app: &TestApp, u: &User, t: &str, body: Value) -> Value {
    let (s, v) = app.as_(u).tenant(t).post("/api/v1/triggers", body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let v = unwrap(v, "trigger");
    assert!(v["id"].as_str().unwrap().starts_with("trg_"), "{v}");
    v
}

pub async fn create_id(app: &TestApp, u: &User, t: &str, body: Value) -> String {
    create(app, u, t, body).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub async fn get(app: &TestApp, u: &User, t: &str, id: &str) -> Value {
    let (s, v) = app
        .as_(u)
        .tenant(t)
        .get(&format!("/api/v1/triggers/{id}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    unwrap(v, "trigger")
}

/// The trigger's runs, newest first.
pub async fn runs(app: &TestApp, u: &User, t: &str, id: &str) -> Vec<Value> {
    let (s, v) = app
        .as_(u)
        .tenant(t)
        .get(&format!("/api/v1/triggers/{id}/runs"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["runs"].as_array().unwrap().clone()
}

pub fn finished(run: &Value) -> bool {
    run["status"] == "succeeded" || run["status"] == "failed"
}

/// Waits until the trigger has at least `n` runs and all of them finished.
pub async fn wait_runs(app: &TestApp, u: &User, t: &str, id: &str, n: usize) -> Vec<Value> {
    until(30, &format!("{n} finished runs of {id}"), async || {
        let r = runs(app, u, t, id).await;
        if r.len() >= n && r.iter().all(finished) {
            Ok(r)
        } else {
            Err(Value::Array(r))
        }
    })
    .await
}

/// Fires the trigger by hand and waits for that run to finish; returns it.
pub async fn fire(app: &TestApp, u: &User, t: &str, id: &str) -> Value {
    let (s, v) = app
        .as_(u)
        .tenant(t)
        .post(&format!("/api/v1/triggers/{id}/run"), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["run"]["reason"], "manual", "{v}");
    assert_eq!(v["run"]["trigger_id"], id, "{v}");
    let run = v["run"]["id"].as_str().unwrap().to_owned();
    assert!(run.starts_with("trn_"), "{v}");
    until(30, "a manual run to finish", async || {
        let found = runs(app, u, t, id)
            .await
            .into_iter()
            .find(|r| r["id"] == run.as_str());
        match found {
            Some(r) if finished(&r) => Ok(r),
            other => Err(other.unwrap_or(Value::Null)),
        }
    })
    .await
}

pub async fn alert(app: &TestApp, u: &User, t: &str, id: &str) -> Value {
    let (s, v) = app
        .as_(u)
        .tenant(t)
        .get(&format!("/api/v1/alerts/{id}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    unwrap(v, "alert")
}

/// A schedule trigger (every 24 h) whose action raises an alert titled `title`.
pub async fn alert_trigger(
    app: &TestApp,
    u: &User,
    t: &str,
    title: &str,
    severity: &str,
) -> String {
    create_id(
        app,
        u,
        t,
        json!({"name": title, "condition": {"kind": "schedule", "every_hours": 24},
               "action": {"kind": "alert", "severity": severity, "title": title, "body": "Raised by a test."}}),
    )
    .await
}

/// Raises an alert through a trigger fired by hand; returns the alert id.
pub async fn raise(app: &TestApp, u: &User, t: &str, title: &str, severity: &str) -> String {
    let id = alert_trigger(app, u, t, title, severity).await;
    let run = fire(app, u, t, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let a = run["output"]["alert_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no alert: {run}"));
    assert!(a.starts_with("alr_"), "{run}");
    a.to_owned()
}

/// The figure `key` of an alert's evidence.
pub fn figure<'a>(alert: &'a Value, key: &str) -> &'a Value {
    alert["evidence"]["figures"]
        .as_array()
        .unwrap_or_else(|| panic!("no figures: {alert}"))
        .iter()
        .find(|f| f["key"] == key)
        .unwrap_or_else(|| panic!("no {key} figure: {alert}"))
}

// ---- Tests ---------------------------------------------------------------------------

dual!(
    crud_roles_and_normalisation,
    bad_input_is_refused_naming_the_field,
);

async fn crud_roles_and_normalisation(app: TestApp) {
    let (u, t) = owner(&app, "crud@trg.example").await;
    let mem = app.signup("member@trg.example").await;
    app.add_member(&u, &t, &mem, "member").await;
    app.state.clock.set(utc(2027, 1, 4, 7, 0)); // a Monday
    let v = create(
        &app,
        &u,
        &t,
        json!({"name": "Monday board", "condition": {"kind": "schedule", "cron": "0 9 * * MON", "timezone": "Europe/Berlin"},
               "action": {"kind": "board_meeting", "agenda": "Weekly review", "personas": ["ceo", "cfo"]}}),
    )
    .await;
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["name"], "Monday board");
    assert_eq!(
        v["condition"],
        json!({"kind": "schedule", "cron": "0 9 * * MON", "timezone": "Europe/Berlin"})
    );
    assert_eq!(v["action"]["kind"], "board_meeting");
    assert_eq!(v["action"]["agenda"], "Weekly review");
    assert_eq!(
        (v["paused"].as_bool(), v["firing"].as_bool()),
        (Some(false), Some(false))
    );
    assert!(
        v["last_run_at"].is_null() && v["last_status"].is_null(),
        "{v}"
    );
    assert!(
        v["created_at"].is_string() && v["updated_at"].is_string(),
        "{v}"
    );
    // 09:00 in Berlin in January is 08:00 UTC.
    assert_eq!(time(&v["next_run_at"]), utc(2027, 1, 4, 8, 0));

    // Defaults and metric rules come back normalised.
    let v = create(&app, &u, &t, json!({"name": "Hourly", "condition": {"kind": "schedule", "cron": "0 * * * *"}, "action": {"kind": "digest"}})).await;
    assert_eq!(v["condition"]["timezone"], "UTC", "{v}");
    for body in [
        json!({"kind": "metric", "rule": "runway_months < 6"}),
        json!({"kind": "metric", "metric": "runway_months", "op": "<", "value": 6}),
    ] {
        let v = create(&app, &u, &t, json!({"name": "Runway", "condition": body, "action": {"kind": "alert", "severity": "critical"}})).await;
        let c = &v["condition"];
        assert_eq!(
            (
                c["kind"].as_str(),
                c["metric"].as_str(),
                c["op"].as_str(),
                c["value"].as_f64(),
                c["rule"].as_str()
            ),
            (
                Some("metric"),
                Some("runway_months"),
                Some("<"),
                Some(6.0),
                Some("runway_months < 6")
            ),
            "{v}"
        );
    }
    for (rule, metric, op, value) in [
        ("burn_mom_change > 20%", "burn_mom_change", ">", 20.0),
        ("stale_leads >= 5", "stale_leads", ">=", 5.0),
    ] {
        let v = create(&app, &u, &t, json!({"name": rule, "condition": {"kind": "metric", "rule": rule}, "action": {"kind": "alert"}})).await;
        let c = &v["condition"];
        assert_eq!(
            (c["metric"].as_str(), c["op"].as_str(), c["value"].as_f64()),
            (Some(metric), Some(op), Some(value)),
            "{v}"
        );
    }

    // Members read; only admins write.
    let (s, list) = app.as_(&mem).tenant(&t).get("/api/v1/triggers").await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert!(
        list["triggers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == id.as_str()),
        "{list}"
    );
    assert_eq!(get(&app, &mem, &t, &id).await["name"], "Monday board");
    let (s, _) = app
        .as_(&mem)
        .tenant(&t)
        .get(&format!("/api/v1/triggers/{id}/runs"))
        .await;
    assert_eq!(s, StatusCode::OK);
    for (m, path, body) in [
        (
            Method::POST,
            "/api/v1/triggers".to_owned(),
            Some(
                json!({"name": "x", "condition": {"kind": "schedule", "every_hours": 1}, "action": {"kind": "digest"}}),
            ),
        ),
        (
            Method::PATCH,
            format!("/api/v1/triggers/{id}"),
            Some(json!({"paused": true})),
        ),
        (Method::DELETE, format!("/api/v1/triggers/{id}"), None),
        (
            Method::POST,
            format!("/api/v1/triggers/{id}/run"),
            Some(json!({})),
        ),
    ] {
        let (s, v) = app
            .call(m.clone(), &path, Some(&mem.token), Some(&t), body)
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{m} {path}: {v}");
    }

    // PATCH: a rename and a pause; unpausing reschedules from now.
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .patch(
            &format!("/api/v1/triggers/{id}"),
            json!({"name": "Monday board meeting", "paused": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let v = unwrap(v, "trigger");
    assert_eq!(
        (v["name"].as_str(), v["paused"].as_bool()),
        (Some("Monday board meeting"), Some(true))
    );
    let (_, v) = app
        .as_(&u)
        .tenant(&t)
        .patch(&format!("/api/v1/triggers/{id}"), json!({"paused": false}))
        .await;
    assert_eq!(
        time(&unwrap(v, "trigger")["next_run_at"]),
        utc(2027, 1, 4, 8, 0)
    );
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .patch(
            &format!("/api/v1/triggers/{id}"),
            json!({"condition": {"kind": "schedule", "every_hours": 6}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let v = unwrap(v, "trigger");
    assert_eq!(v["condition"]["every_hours"], 6, "{v}");
    assert_eq!(time(&v["next_run_at"]), utc(2027, 1, 4, 13, 0));
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .patch(
            &format!("/api/v1/triggers/{id}"),
            json!({"condition": {"kind": "schedule", "cron": "0 25 * * *"}}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(get(&app, &u, &t, &id).await["condition"]["every_hours"], 6);

    // Delete; then it is gone everywhere.
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .delete(&format!("/api/v1/triggers/{id}"))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for path in [
        format!("/api/v1/triggers/{id}"),
        format!("/api/v1/triggers/{id}/runs"),
        "/api/v1/triggers/trg_nope".to_owned(),
        "/api/v1/triggers/trg_00000000000000000000000000000000".to_owned(),
    ] {
        let (s, _) = app.as_(&u).tenant(&t).get(&path).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
    }
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .delete(&format!("/api/v1/triggers/{id}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .post(&format!("/api/v1/triggers/{id}/run"), json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn bad_input_is_refused_naming_the_field(app: TestApp) {
    let (u, t) = owner(&app, "bad@trg.example").await;
    let count = async || {
        let (_, v) = app.as_(&u).tenant(&t).get("/api/v1/triggers").await;
        v["triggers"].as_array().unwrap().len()
    };
    let before = count().await;
    let post = async |condition: Value, action: Value| {
        app.as_(&u)
            .tenant(&t)
            .post(
                "/api/v1/triggers",
                json!({"name": "Bad", "condition": condition, "action": action}),
            )
            .await
    };
    let alert = json!({"kind": "alert", "severity": "warning"});
    // (condition, code, field, a part of the message)
    for (condition, code, field, part) in [
        (
            json!({"kind": "schedule", "cron": "61 * * * *"}),
            "invalid_cron",
            Some("condition.cron"),
            Some("61"),
        ),
        (
            json!({"kind": "schedule", "cron": "0 9 * * FUNDAY"}),
            "invalid_cron",
            Some("condition.cron"),
            Some("FUNDAY"),
        ),
        (
            json!({"kind": "schedule", "cron": "0 9 * *"}),
            "invalid_cron",
            Some("condition.cron"),
            None,
        ),
        (
            json!({"kind": "schedule", "cron": "0 0 9 * * MON"}),
            "invalid_cron",
            Some("condition.cron"),
            None,
        ),
        (
            json!({"kind": "schedule", "cron": "0 9 * * MON", "timezone": "Mars/Olympus_Mons"}),
            "invalid_timezone",
            Some("condition.timezone"),
            Some("Mars/Olympus_Mons"),
        ),
        (
            json!({"kind": "metric", "rule": "happiness < 3"}),
            "unknown_metric",
            None,
            Some("runway_months"),
        ),
        (
            json!({"kind": "metric", "metric": "happiness", "op": ">", "value": 1}),
            "unknown_metric",
            None,
            Some("runway_months"),
        ),
        (
            json!({"kind": "event", "event": "task.exploded"}),
            "unknown_event",
            None,
            None,
        ),
    ] {
        let (s, v) = post(condition.clone(), alert.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{condition}: {v}");
        assert_eq!(v["error"]["code"], code, "{condition}: {v}");
        if let Some(f) = field {
            assert_eq!(v["error"]["field"], f, "{condition}: {v}");
        }
        if let Some(p) = part {
            assert!(
                v["error"]["message"].as_str().unwrap().contains(p),
                "{condition}: {v}"
            );
        }
    }
    for condition in [
        json!({"kind": "schedule", "every_hours": 0}),
        json!({"kind": "schedule", "every_hours": 721}),
        json!({"kind": "schedule", "cron": "0 9 * * *", "every_hours": 6}),
        json!({"kind": "schedule"}),
        json!({"kind": "metric", "metric": "runway_months", "op": "==", "value": 1}),
        json!({"kind": "event", "event": "approval.waiting"}),
        json!({"kind": "event", "event": "approval.waiting", "minutes": 0}),
        json!({"kind": "event", "event": "approval.waiting", "minutes": 10081}),
        json!({"kind": "event", "event": "usage.threshold"}),
        json!({"kind": "event", "event": "usage.threshold", "percent": 50}),
        json!({"kind": "weather", "event": "rain"}),
    ] {
        let (s, v) = post(condition.clone(), alert.clone()).await;
        assert!(
            s == StatusCode::UNPROCESSABLE_ENTITY || s == StatusCode::BAD_REQUEST,
            "{condition}: {s} {v}"
        );
    }
    let daily = json!({"kind": "schedule", "every_hours": 24});
    let (s, v) = post(
        daily.clone(),
        json!({"kind": "propose", "capability": "nope.nothing", "input": {}}),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "unknown_capability", "{v}");
    for action in [
        json!({"kind": "alert", "severity": "apocalyptic"}),
        json!({"kind": "brief", "persona": "janitor"}),
        json!({"kind": "board_meeting", "agenda": ""}),
        json!({"kind": "board_meeting", "agenda": "x", "personas": ["ceo", "astrologer"]}),
        json!({"kind": "teleport"}),
    ] {
        let (s, v) = post(daily.clone(), action.clone()).await;
        assert!(
            s == StatusCode::UNPROCESSABLE_ENTITY || s == StatusCode::BAD_REQUEST,
            "{action}: {s} {v}"
        );
    }
    for name in [String::new(), "n".repeat(121)] {
        let (s, v) = app
            .as_(&u)
            .tenant(&t)
            .post(
                "/api/v1/triggers",
                json!({"name": name, "condition": daily, "action": alert}),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["error"]["field"], "name", "{v}");
    }
    let res = app
        .http
        .post(app.url("/api/v1/triggers"))
        .bearer_auth(&u.token)
        .header("x-tenant-id", &t)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(count().await, before, "nothing refused was stored");
}
