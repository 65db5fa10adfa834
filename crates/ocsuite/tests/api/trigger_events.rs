//! Event triggers, one platform event each (a task dead-lettered, a knowledge source
//! failed, a proposal waiting too long, a connector expired, a campaign that bounced,
//! usage at 80 % and 100 % of the plan), each firing once for its own event only; and
//! every action (board meeting on a templated agenda, a brief, a proposal that never
//! runs unapproved, the digest), including an action whose capability was disabled.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{Duration, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::board::{detail, find, meeting};
use crate::dual;
use crate::helpers::{Db, TestApp, User, smtp_sink};
use crate::llm::{delta, finish, sse_body};
use crate::tasks::{owner, start, wait_status};
use crate::triggers::{alert, create_id, finished, fire, runs, tick, until, wait_runs};

/// An event trigger whose action raises a warning titled after the event.
async fn on(app: &TestApp, u: &User, t: &str, condition: Value) -> String {
    let name = format!("On {}", condition["event"].as_str().unwrap());
    create_id(
        app,
        u,
        t,
        json!({"name": name, "condition": condition,
               "action": {"kind": "alert", "severity": "warning", "title": "{{event}}: {{summary}}"}}),
    )
    .await
}

/// Ticks until the trigger's first run finished; checks it ran for an event and raised
/// an alert carrying that event; returns the alert.
async fn fired(app: &TestApp, u: &User, t: &str, id: &str, event: &str) -> Value {
    let run = until(30, &format!("{event} to fire {id}"), async || {
        tick(app).await;
        let r = runs(app, u, t, id).await;
        // Newest first: the last is the first run.
        match r.last().filter(|x| finished(x)).cloned() {
            Some(first) => Ok(first),
            None => Err(Value::Array(r)),
        }
    })
    .await;
    assert_eq!(
        (run["reason"].as_str(), run["status"].as_str()),
        (Some("event"), Some("succeeded")),
        "{run}"
    );
    let a = alert(app, u, t, run["output"]["alert_id"].as_str().unwrap()).await;
    assert_eq!(a["trigger_id"], id, "{a}");
    assert_eq!(a["evidence"]["event"]["type"], event, "{a}");
    assert!(a["title"].as_str().unwrap().starts_with(event), "{a}");
    a
}

async fn connector_status(app: &TestApp, u: &User, t: &str) -> Value {
    let (_, v) = app.as_(u).tenant(t).get("/api/v1/connectors").await;
    v["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["provider"] == "acme")
        .cloned()
        .unwrap_or_else(|| panic!("{v}"))
}

dual!(
    dead_letters_failed_sources_and_waiting_proposals_fire_their_triggers,
    actions_hold_meetings_write_briefs_propose_and_digest,
    a_disabled_capability_fails_the_run_visibly,
);

async fn dead_letters_failed_sources_and_waiting_proposals_fire_their_triggers(app: TestApp) {
    let (u, t) = owner(&app, "events@trg.example").await;
    let dead = on(
        &app,
        &u,
        &t,
        json!({"kind": "event", "event": "task.dead_lettered"}),
    )
    .await;
    let failed = on(
        &app,
        &u,
        &t,
        json!({"kind": "event", "event": "knowledge.source_failed"}),
    )
    .await;
    let waiting = on(
        &app,
        &u,
        &t,
        json!({"kind": "event", "event": "approval.waiting", "minutes": 30}),
    )
    .await;

    // A task that keeps failing ends in the dead-letter queue.
    let task = start(
        &app,
        &u,
        &t,
        "diagnostics.fail",
        json!({"message": "upstream down"}),
    )
    .await;
    wait_status(&app, &u, &t, &task, "dead").await;
    let a = fired(&app, &u, &t, &dead, "task.dead_lettered").await;
    assert!(a["evidence"].to_string().contains(&task), "{a}");
    assert!(runs(&app, &u, &t, &failed).await.is_empty());
    assert!(runs(&app, &u, &t, &waiting).await.is_empty());

    // A document that cannot be read.
    let mut corrupt = crate::knowledge::pdf(&["fine"]);
    corrupt.truncate(40);
    let (s, src) = crate::knowledge::upload(
        &app,
        &u.token,
        Some(&t),
        "/api/v1/knowledge/sources",
        "broken.pdf",
        corrupt,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{src}");
    let source = src["id"].as_str().unwrap().to_owned();
    let settled = crate::knowledge::settled(
        &app,
        &u.token,
        Some(&t),
        &format!("/api/v1/knowledge/sources/{source}"),
    )
    .await;
    assert_eq!(settled["status"], "failed", "{settled}");
    let a = fired(&app, &u, &t, &failed, "knowledge.source_failed").await;
    assert!(a["evidence"].to_string().contains(&source), "{a}");

    // A proposal: nothing while it has waited under 30 minutes, one alert after.
    app.state.clock.set(Utc::now());
    let (s, evs) = meeting(
        &app,
        &u,
        &t,
        json!({"agenda": "Log today's decision", "personas": ["cfo"]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let mid = find(&evs, "meeting_end")[0]["meeting_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let proposals: Vec<String> = detail(&app, &u, &t, &mid).await["action_items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["task_id"].as_str().map(str::to_owned))
        .collect();
    assert!(!proposals.is_empty());
    tick(&app).await;
    assert!(
        runs(&app, &u, &t, &waiting).await.is_empty(),
        "fired before 30 minutes"
    );
    app.state.clock.advance(Duration::minutes(31));
    let a = fired(&app, &u, &t, &waiting, "approval.waiting").await;
    assert!(
        proposals
            .iter()
            .any(|p| a["evidence"].to_string().contains(p.as_str())),
        "{a}"
    );
    let r = wait_runs(&app, &u, &t, &waiting, proposals.len()).await;
    // Evaluated again later: the same proposals do not alert twice.
    app.state.clock.advance(Duration::minutes(20));
    tick(&app).await;
    tick(&app).await;
    assert_eq!(runs(&app, &u, &t, &waiting).await.len(), r.len());
    assert_eq!(
        r.len(),
        proposals.len(),
        "one alert per waiting proposal: {r:?}"
    );
    // Each trigger fired for its own event, once.
    assert_eq!(runs(&app, &u, &t, &dead).await.len(), 1);
    assert_eq!(runs(&app, &u, &t, &failed).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_connector_fires_its_trigger_sqlite() {
    an_expired_connector_fires_its_trigger(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_connector_fires_its_trigger_postgres() {
    an_expired_connector_fires_its_trigger(Db::Postgres).await;
}

async fn an_expired_connector_fires_its_trigger(db: Db) {
    let idp = crate::fake_idp::FakeIdp::start().await;
    let providers = vec![idp.provider("acme")];
    let Some(app) = TestApp::start_with(db, |c| c.connector_providers = providers).await else {
        return;
    };
    let (u, t) = owner(&app, "conn@trg.example").await;
    let expired = on(
        &app,
        &u,
        &t,
        json!({"kind": "event", "event": "connector.expired"}),
    )
    .await;
    let dead = on(
        &app,
        &u,
        &t,
        json!({"kind": "event", "event": "task.dead_lettered"}),
    )
    .await;
    crate::connectors::connect(&app, &u, &t, "acme").await;
    until(20, "the first sync", async || {
        let c = connector_status(&app, &u, &t).await;
        if c["sync_pending"] == false {
            Ok(())
        } else {
            Err(c)
        }
    })
    .await;
    assert!(runs(&app, &u, &t, &expired).await.is_empty());
    // The user removes the app at the provider: the next sync finds the grant dead.
    idp.revoke_everything();
    app.as_(&u)
        .tenant(&t)
        .post("/api/v1/connectors/acme/sync", json!({}))
        .await;
    until(20, "the connector to expire", async || {
        let c = connector_status(&app, &u, &t).await;
        if c["status"] == "expired" || c["status"] == "revoked" {
            Ok(())
        } else {
            Err(c)
        }
    })
    .await;
    let a = fired(&app, &u, &t, &expired, "connector.expired").await;
    assert!(a["evidence"].to_string().contains("acme"), "{a}");
    tick(&app).await;
    assert_eq!(runs(&app, &u, &t, &expired).await.len(), 1);
    assert!(runs(&app, &u, &t, &dead).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounced_campaign_fires_its_trigger_sqlite() {
    a_bounced_campaign_fires_its_trigger(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounced_campaign_fires_its_trigger_postgres() {
    a_bounced_campaign_fires_its_trigger(Db::Postgres).await;
}

async fn a_bounced_campaign_fires_its_trigger(db: Db) {
    let (port, _inbox) = smtp_sink().await;
    let Some(app) = TestApp::start_with(db, |c| {
        c.smtp_url = Some(ocsuite::config::Secret::new(format!(
            "smtp://127.0.0.1:{port}"
        )));
        c.smtp_from = "Outreach <outreach@acme.test>".into();
    })
    .await
    else {
        return;
    };
    let (u, t) = owner(&app, "bounce@trg.example").await;
    let bounced = on(
        &app,
        &u,
        &t,
        json!({"kind": "event", "event": "campaign.bounced"}),
    )
    .await;
    crate::email::lead(&app, &u, &t, "Ann Lee", "ann@x.test", "qualified").await;
    crate::email::lead(&app, &u, &t, "Bo Unce", "bounce@x.test", "qualified").await;
    let id = crate::email::campaign(
        &app,
        &u,
        &t,
        json!({"name": "Check-in", "subject": "Hello", "body": "Hi {{first_name}}.", "audience": {"stages": ["qualified"]}, "rate_per_minute": 600}),
    )
    .await;
    let task = crate::email::send(&app, &u, &t, &id).await;
    wait_status(&app, &u, &t, &task, "succeeded").await;
    let v = crate::email::wait_campaign(&app, &u, &t, &id, "sent").await;
    assert_eq!(v["stats"]["failed"], 1, "{v}");
    let a = fired(&app, &u, &t, &bounced, "campaign.bounced").await;
    assert!(a["evidence"].to_string().contains(&id), "{a}");
    tick(&app).await;
    assert_eq!(runs(&app, &u, &t, &bounced).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_thresholds_fire_at_80_and_100_percent_sqlite() {
    usage_thresholds_fire_at_80_and_100_percent(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_thresholds_fire_at_80_and_100_percent_postgres() {
    usage_thresholds_fire_at_80_and_100_percent(Db::Postgres).await;
}

/// A model server that says it used 85,000 tokens on the first call and 20,000 on the
/// next, against a 100,000-token plan: 85 %, then 105 %.
async fn usage_thresholds_fire_at_80_and_100_percent(db: Db) {
    let server = MockServer::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(move |_: &Request| {
            let used = if counter.fetch_add(1, Ordering::SeqCst) == 0 { 85_000 } else { 20_000 };
            let usage = json!({"choices": [], "usage": {"prompt_tokens": used - 100, "completion_tokens": 100}});
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(sse_body(&[delta("Noted."), finish(), usage], true))
        })
        .mount(&server)
        .await;
    let uri = server.uri();
    let Some(app) = TestApp::start_with(db, |c| {
        c.llm_base_url = format!("{uri}/v1");
        c.llm_api_key = Some(ocsuite::config::Secret::new("sk-test"));
        c.llm_model = "usage-model".into();
        c.llm_read_timeout_secs = 5;
        c.llm_max_retries = 0;
        c.plan_free_monthly_tokens = 100_000;
    })
    .await
    else {
        return;
    };
    let (u, t) = owner(&app, "usage@trg.example").await;
    let at80 = on(
        &app,
        &u,
        &t,
        json!({"kind": "event", "event": "usage.threshold", "percent": 80}),
    )
    .await;
    let at100 = on(
        &app,
        &u,
        &t,
        json!({"kind": "event", "event": "usage.threshold", "percent": 100}),
    )
    .await;
    let (s, _) =
        crate::chat::chat(&app, &u, &t, "ceo", json!({"message": "How are we doing?"})).await;
    assert_eq!(s, StatusCode::OK);
    let (_, usage) = app.as_(&u).tenant(&t).get("/api/v1/usage").await;
    assert_eq!(
        usage["prompt_tokens"].as_i64().unwrap() + usage["completion_tokens"].as_i64().unwrap(),
        85_000,
        "{usage}"
    );
    fired(&app, &u, &t, &at80, "usage.threshold").await;
    tick(&app).await;
    assert!(
        runs(&app, &u, &t, &at100).await.is_empty(),
        "85 % is not 100 %"
    );

    let (s, _) = crate::chat::chat(&app, &u, &t, "ceo", json!({"message": "And now?"})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    fired(&app, &u, &t, &at100, "usage.threshold").await;
    tick(&app).await;
    assert_eq!(
        runs(&app, &u, &t, &at80).await.len(),
        1,
        "80 % is crossed once a month"
    );
    assert_eq!(runs(&app, &u, &t, &at100).await.len(), 1);
}

async fn actions_hold_meetings_write_briefs_propose_and_digest(app: TestApp) {
    let (u, t) = owner(&app, "actions@trg.example").await;
    let weekly = json!({"kind": "schedule", "every_hours": 168});

    // A board meeting on a templated agenda.
    let id = create_id(&app, &u, &t, json!({"name": "Pricing review", "condition": weekly,
        "action": {"kind": "board_meeting", "agenda": "{{trigger}}: should we raise prices?", "personas": ["ceo", "cfo"]}})).await;
    let run = fire(&app, &u, &t, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let mid = run["output"]["meeting_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{run}"))
        .to_owned();
    assert!(mid.starts_with("mtg_"), "{run}");
    let d = until(60, "the meeting to end", async || {
        // The meeting may still be starting (not stored yet) or running.
        let (s, d) = app
            .as_(&u)
            .tenant(&t)
            .get(&format!("/api/v1/board-meetings/{mid}"))
            .await;
        if s == StatusCode::OK && d["meeting"]["status"] != "running" {
            Ok(d)
        } else {
            Err(d)
        }
    })
    .await;
    assert_eq!(d["meeting"]["status"], "complete", "{d}");
    assert_eq!(
        d["meeting"]["agenda"],
        "Pricing review: should we raise prices?"
    );
    assert_eq!(d["meeting"]["personas"], json!(["ceo", "cfo"]));

    // A written brief from one officer.
    let id = create_id(&app, &u, &t, json!({"name": "Cash brief", "condition": weekly,
        "action": {"kind": "brief", "persona": "cfo", "prompt": "Write the {{trigger}} for this week."}})).await;
    let run = fire(&app, &u, &t, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let conversation = run["output"]["conversation_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{run}"))
        .to_owned();
    let d = until(30, "the brief to be written", async || {
        let d = crate::chat::detail(&app, &u, &t, &conversation).await;
        let done = d["messages"].as_array().unwrap().iter().any(|m| {
            m["role"] == "assistant"
                && m["status"] == "complete"
                && !m["content"].as_str().unwrap_or("").is_empty()
        });
        if done { Ok(d) } else { Err(d) }
    })
    .await;
    assert!(
        d["messages"].to_string().contains("Cash brief"),
        "the filled prompt: {d}"
    );

    // A proposal: it waits for a person and runs only once approved.
    let id = create_id(&app, &u, &t, json!({"name": "Log it", "condition": weekly,
        "action": {"kind": "propose", "capability": "diagnostics.echo", "input": {"note": "from a trigger"}}})).await;
    let run = fire(&app, &u, &t, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let task = run["output"]["task_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{run}"))
        .to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (_, v) = app
        .as_(&u)
        .tenant(&t)
        .get(&format!("/api/v1/tasks/{task}"))
        .await;
    assert_eq!(v["task"]["status"], "proposed", "{v}");
    let (_, v) = app.as_(&u).tenant(&t).get("/api/v1/approvals").await;
    assert!(
        v["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["task"]["id"] == task.as_str()),
        "{v}"
    );
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(&format!("/api/v1/tasks/{task}/approve"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let d = wait_status(&app, &u, &t, &task, "succeeded").await;
    assert_eq!(
        d["task"]["result"],
        json!({"echo": {"note": "from a trigger"}})
    );

    // The digest, stored and listed.
    let id = create_id(
        &app,
        &u,
        &t,
        json!({"name": "Digest now", "condition": weekly, "action": {"kind": "digest"}}),
    )
    .await;
    let run = fire(&app, &u, &t, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let digest = run["output"]["digest_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{run}"))
        .to_owned();
    assert!(digest.starts_with("dig_"), "{run}");
    assert!(run["output"]["recipients"].as_u64().is_some(), "{run}");
    let (s, v) = app.as_(&u).tenant(&t).get("/api/v1/digests").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let d = v["digests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == digest.as_str())
        .unwrap_or_else(|| panic!("{v}"));
    assert!(!d["body"].as_str().unwrap().trim().is_empty(), "{d}");
}

/// The capability a trigger proposes is turned off: the run fails with the reason and
/// an alert says so; nothing is proposed.
async fn a_disabled_capability_fails_the_run_visibly(app: TestApp) {
    let (u, t) = owner(&app, "disabled@trg.example").await;
    let id = create_id(
        &app,
        &u,
        &t,
        json!({"name": "Echo proposal", "condition": {"kind": "schedule", "every_hours": 24},
        "action": {"kind": "propose", "capability": "diagnostics.echo", "input": {}}}),
    )
    .await;
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post("/api/v1/modules/diagnostics/disable", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let run = fire(&app, &u, &t, &id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(!run["error"].as_str().unwrap_or("").is_empty(), "{run}");
    assert!(run["output"]["task_id"].is_null(), "{run}");
    let v = crate::triggers::get(&app, &u, &t, &id).await;
    assert_eq!(v["last_status"], "failed", "{v}");
    let (_, v) = app.as_(&u).tenant(&t).get("/api/v1/approvals").await;
    assert_eq!(v["approvals"], json!([]), "{v}");
    until(30, "an alert about the failed run", async || {
        let (_, v) = app.as_(&u).tenant(&t).get("/api/v1/alerts").await;
        let said = v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["trigger_id"] == id.as_str() || a.to_string().contains("Echo proposal"));
        if said { Ok(()) } else { Err(v) }
    })
    .await;
}
