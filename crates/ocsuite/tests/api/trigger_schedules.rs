//! Schedules on the test clock (never a sleep): cron in an IANA time zone firing at its
//! local time once, across daylight-saving changes in Berlin and New York; a schedule
//! missed while the server was down firing once after a restart; two nodes on one
//! PostgreSQL database firing a due schedule once.

use chrono::{DateTime, Days, Duration, NaiveDate, Utc};
use reqwest::StatusCode;
use serde_json::json;

use crate::dual;
use crate::helpers::{Db, TestApp};
use crate::tasks::owner;
use crate::triggers::{alert, create_id, fire, get, runs, tick, time, unwrap, utc, wait_runs};

fn berlin_day(t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&chrono_tz::Europe::Berlin).date_naive()
}

dual!(
    cron_fires_at_its_local_time_once,
    daylight_saving_changes_keep_the_local_time,
);

async fn cron_fires_at_its_local_time_once(app: TestApp) {
    let (u, t) = owner(&app, "cron@trg.example").await;
    let clock = &app.state.clock;
    clock.set(utc(2027, 1, 4, 7, 0)); // Monday 08:00 in Berlin
    let id = create_id(
        &app,
        &u,
        &t,
        json!({"name": "Berlin Monday", "condition": {"kind": "schedule", "cron": "0 9 * * MON", "timezone": "Europe/Berlin"},
               "action": {"kind": "alert", "severity": "info", "title": "Due: {{trigger}}"}}),
    )
    .await;
    clock.set(utc(2027, 1, 4, 7, 59));
    tick(&app).await;
    assert!(runs(&app, &u, &t, &id).await.is_empty());

    clock.set(utc(2027, 1, 4, 8, 0) + Duration::seconds(5));
    tick(&app).await;
    let r = wait_runs(&app, &u, &t, &id, 1).await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (r[0]["reason"].as_str(), r[0]["status"].as_str()),
        (Some("schedule"), Some("succeeded")),
        "{r:?}"
    );
    assert_eq!(time(&r[0]["scheduled_for"]), utc(2027, 1, 4, 8, 0));
    let a = alert(&app, &u, &t, r[0]["output"]["alert_id"].as_str().unwrap()).await;
    assert_eq!(a["title"], "Due: Berlin Monday", "{a}");
    assert_eq!(
        (a["severity"].as_str(), a["trigger_id"].as_str()),
        (Some("info"), Some(id.as_str()))
    );
    let v = get(&app, &u, &t, &id).await;
    assert_eq!(time(&v["next_run_at"]), utc(2027, 1, 11, 8, 0));
    assert_eq!(v["last_status"], "succeeded", "{v}");
    assert!(v["last_run_at"].is_string(), "{v}");

    // Ticking again, now or later that day, fires nothing more.
    tick(&app).await;
    clock.set(utc(2027, 1, 4, 12, 0));
    tick(&app).await;
    assert_eq!(runs(&app, &u, &t, &id).await.len(), 1);

    // Paused over the next Monday: no run. Unpaused later: rescheduled from now, the
    // missed Monday is not replayed.
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .patch(&format!("/api/v1/triggers/{id}"), json!({"paused": true}))
        .await;
    assert_eq!(s, StatusCode::OK);
    clock.set(utc(2027, 1, 11, 8, 0) + Duration::seconds(5));
    tick(&app).await;
    clock.set(utc(2027, 1, 11, 10, 0));
    let (_, v) = app
        .as_(&u)
        .tenant(&t)
        .patch(&format!("/api/v1/triggers/{id}"), json!({"paused": false}))
        .await;
    assert_eq!(
        time(&unwrap(v, "trigger")["next_run_at"]),
        utc(2027, 1, 18, 8, 0)
    );
    tick(&app).await;
    assert_eq!(runs(&app, &u, &t, &id).await.len(), 1);

    // Fire now: always a new run, newest first.
    let run = fire(&app, &u, &t, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let r = runs(&app, &u, &t, &id).await;
    assert_eq!(r.len(), 2);
    assert_eq!(
        (r[0]["reason"].as_str(), r[1]["reason"].as_str()),
        (Some("manual"), Some("schedule"))
    );
}

async fn daylight_saving_changes_keep_the_local_time(app: TestApp) {
    let (u, t) = owner(&app, "dst@trg.example").await;
    let clock = &app.state.clock;
    let daily = |name: &str, cron: &str, tz: &str| json!({"name": name, "condition": {"kind": "schedule", "cron": cron, "timezone": tz}, "action": {"kind": "alert", "severity": "info"}});
    let next = async |id: &str| time(&get(&app, &u, &t, id).await["next_run_at"]);
    let fire_at = async |id: &str, at: DateTime<Utc>, n: usize| {
        clock.set(at + Duration::minutes(1));
        tick(&app).await;
        let r = wait_runs(&app, &u, &t, id, n).await;
        assert_eq!(r.len(), n, "{r:?}");
        r
    };

    // Berlin springs forward on 2027-03-28: 02:30 does not exist that day.
    clock.set(utc(2027, 3, 27, 0, 0));
    let spring = create_id(
        &app,
        &u,
        &t,
        daily("Berlin 02:30", "30 2 * * *", "Europe/Berlin"),
    )
    .await;
    let first = next(&spring).await;
    assert_eq!(first, utc(2027, 3, 27, 1, 30), "02:30 CET");
    fire_at(&spring, first, 1).await;
    let second = next(&spring).await;
    assert_eq!(
        berlin_day(second),
        NaiveDate::from_ymd_opt(2027, 3, 28).unwrap(),
        "{second}"
    );
    assert!(
        (utc(2027, 3, 28, 1, 0)..=utc(2027, 3, 28, 1, 30)).contains(&second),
        "after the gap (03:00-03:30 CEST): {second}"
    );
    fire_at(&spring, second, 2).await;
    let third = next(&spring).await;
    assert_eq!(third, utc(2027, 3, 29, 0, 30), "02:30 CEST");
    let r = fire_at(&spring, third, 3).await;
    let mut days: Vec<NaiveDate> = r
        .iter()
        .map(|x| berlin_day(time(&x["scheduled_for"])))
        .collect();
    days.sort();
    let expect: Vec<NaiveDate> = (27..=29)
        .map(|d| NaiveDate::from_ymd_opt(2027, 3, d).unwrap())
        .collect();
    assert_eq!(days, expect, "one run per local day");
    app.as_(&u)
        .tenant(&t)
        .delete(&format!("/api/v1/triggers/{spring}"))
        .await;

    // Berlin falls back on 2027-10-31: 02:30 happens twice, and runs once.
    clock.set(utc(2027, 10, 30, 12, 0));
    let fall = create_id(
        &app,
        &u,
        &t,
        daily("Berlin 02:30 in autumn", "30 2 * * *", "Europe/Berlin"),
    )
    .await;
    let first = next(&fall).await;
    assert_eq!(first, utc(2027, 10, 31, 0, 30), "the first 02:30 (CEST)");
    fire_at(&fall, first, 1).await;
    assert_eq!(
        next(&fall).await,
        utc(2027, 11, 1, 1, 30),
        "not the second 02:30 that day"
    );
    clock.set(utc(2027, 10, 31, 1, 31));
    tick(&app).await;
    assert_eq!(runs(&app, &u, &t, &fall).await.len(), 1);
    app.as_(&u)
        .tenant(&t)
        .delete(&format!("/api/v1/triggers/{fall}"))
        .await;

    // New York falls back on 2027-11-07: 09:00 is 13:00Z before, 14:00Z after.
    clock.set(utc(2027, 11, 6, 12, 0));
    let ny = create_id(
        &app,
        &u,
        &t,
        daily("New York 09:00", "0 9 * * *", "America/New_York"),
    )
    .await;
    let first = next(&ny).await;
    assert_eq!(first, utc(2027, 11, 6, 13, 0), "09:00 EDT");
    fire_at(&ny, first, 1).await;
    let second = next(&ny).await;
    assert_eq!(second, utc(2027, 11, 7, 14, 0), "09:00 EST");
    fire_at(&ny, second, 2).await;
    assert_eq!(next(&ny).await, utc(2027, 11, 8, 14, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_schedule_fires_once_after_a_restart_sqlite() {
    missed_schedule_fires_once_after_a_restart(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_schedule_fires_once_after_a_restart_postgres() {
    missed_schedule_fires_once_after_a_restart(Db::Postgres).await;
}

/// The server is down from 00:30 to 05:10 over four hourly due times: on start the
/// schedule runs once, the next run is computed from now, and starting yet again does
/// not run it a second time.
async fn missed_schedule_fires_once_after_a_restart(db: Db) {
    let Some(app) = TestApp::start(db).await else {
        return;
    };
    let (u, t) = owner(&app, "restart@trg.example").await;
    app.state
        .clock
        .set(utc(2027, 1, 1, 0, 0) + Duration::seconds(30));
    let id = create_id(&app, &u, &t, json!({"name": "Hourly", "condition": {"kind": "schedule", "cron": "0 * * * *"}, "action": {"kind": "alert", "severity": "info"}})).await;
    assert_eq!(
        time(&get(&app, &u, &t, &id).await["next_run_at"]),
        utc(2027, 1, 1, 1, 0)
    );
    let config = app.config.clone();
    drop(app);

    let app = TestApp::start_config(config).await;
    app.state.clock.set(utc(2027, 1, 1, 5, 10));
    tick(&app).await;
    tick(&app).await;
    let r = wait_runs(&app, &u, &t, &id, 1).await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (r[0]["reason"].as_str(), r[0]["status"].as_str()),
        (Some("schedule"), Some("succeeded"))
    );
    assert_eq!(
        time(&get(&app, &u, &t, &id).await["next_run_at"]),
        utc(2027, 1, 1, 6, 0)
    );

    let config = app.config.clone();
    drop(app);
    let app = TestApp::start_config(config).await;
    app.state.clock.set(utc(2027, 1, 1, 5, 15));
    tick(&app).await;
    assert_eq!(runs(&app, &u, &t, &id).await.len(), 1);
    app.state
        .clock
        .set(utc(2027, 1, 1, 6, 0) + Duration::seconds(5));
    tick(&app).await;
    assert_eq!(wait_runs(&app, &u, &t, &id, 2).await.len(), 2);
}

/// Two server processes on one PostgreSQL database, their clocks at the same instant,
/// tick at once: each due schedule runs exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_fire_a_due_schedule_once_postgres() {
    let Some(a) = TestApp::start(Db::Postgres).await else {
        return;
    };
    let b = TestApp::start_config(a.config.clone()).await;
    let (u, t) = owner(&a, "nodes@trg.example").await;
    let set = |at: DateTime<Utc>| {
        a.state.clock.set(at);
        b.state.clock.set(at);
    };
    set(utc(2027, 1, 4, 6, 0));
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(create_id(&a, &u, &t, json!({"name": format!("Race {i}"), "condition": {"kind": "schedule", "cron": "0 7 * * *"}, "action": {"kind": "alert", "severity": "info"}})).await);
    }
    for day in 0..3u64 {
        set(utc(2027, 1, 4, 7, 0) + Days::new(day) + Duration::seconds(5));
        let (x, y) = tokio::join!(tick(&a), tick(&b));
        assert!(x + y <= ids.len() + 1, "{x} + {y} fired");
        for id in &ids {
            let r = wait_runs(&b, &u, &t, id, day as usize + 1).await;
            assert_eq!(r.len(), day as usize + 1, "{id}: {r:?}");
        }
    }
    for id in &ids {
        let r = runs(&a, &u, &t, id).await;
        let mut due: Vec<DateTime<Utc>> = r.iter().map(|x| time(&x["scheduled_for"])).collect();
        due.sort();
        assert_eq!(
            due,
            [
                utc(2027, 1, 4, 7, 0),
                utc(2027, 1, 5, 7, 0),
                utc(2027, 1, 6, 7, 0)
            ],
            "{r:?}"
        );
    }
}
