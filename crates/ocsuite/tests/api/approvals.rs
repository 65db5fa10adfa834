//! Approvals: the policy's roles, exactly-once approval under concurrency, rejection,
//! automatic approval of read-only capabilities, undo, and the outcome reaching the
//! person who called the meeting (notification over the bus, email via the outbox and
//! a local SMTP sink).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::board::{detail, find, meeting};
use crate::dual;
use crate::helpers::{Db, TestApp, User};
use crate::tasks::{owner, start, wait_status};

/// Holds an offline meeting; returns (meeting id, the echo item's task id).
async fn proposed_task(app: &TestApp, u: &User, t: &str) -> (String, String) {
    let (s, evs) = meeting(
        app,
        u,
        t,
        json!({"agenda": "Log today's decision", "personas": ["cfo"]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let id = find(&evs, "meeting_end")[0]["meeting_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = detail(app, u, t, &id).await;
    let task = d["action_items"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|i| i["task_id"].as_str())
        .unwrap()
        .to_owned();
    (id, task)
}

async fn decide(
    app: &TestApp,
    u: &User,
    t: &str,
    task: &str,
    verb: &str,
    body: Value,
) -> (StatusCode, Value) {
    app.as_(u)
        .tenant(t)
        .post(&format!("/api/v1/tasks/{task}/{verb}"), body)
        .await
}

dual!(
    roles_policy_and_exactly_once_approval,
    rejection_needs_a_rationale_and_ends_the_task,
    undo_proposes_the_compensation,
    outcome_reaches_the_requester,
);

async fn roles_policy_and_exactly_once_approval(app: TestApp) {
    let (own, t) = owner(&app, "own@acme.test").await;
    let mem = app.signup("mem@acme.test").await;
    app.add_member(&own, &t, &mem, "member").await;
    let (_, task) = proposed_task(&app, &own, &t).await;

    // The approval queue shows the preview.
    let (s, v) = app.as_(&mem).tenant(&t).get("/api/v1/approvals").await;
    assert_eq!(s, StatusCode::OK);
    let p = &v["approvals"][0];
    assert_eq!(p["task"]["id"], task.as_str());
    assert_eq!(p["task"]["capability"], "diagnostics.echo");
    assert_eq!(p["side_effect"], "none");
    assert_eq!(p["risk"], json!([]));
    assert_eq!(p["undo"]["how"], "none");
    assert_eq!(p["approver_role"], "member");
    assert_eq!(p["can_approve"], true);
    assert!(p["title"].as_str().unwrap().contains("Record"));

    // Raise the bar: members may no longer approve even harmless tasks.
    let (s, _) = app
        .as_(&mem)
        .tenant(&t)
        .put(
            "/api/v1/approval-policy",
            json!({"min_roles": {"none": "admin"}}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = app
        .as_(&own)
        .tenant(&t)
        .put(
            "/api/v1/approval-policy",
            json!({"min_roles": {"none": "admin"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["min_roles"]["none"], "admin");
    assert_eq!(v["min_roles"]["external-send"], "admin");
    let (s, v) = decide(&app, &mem, &t, &task, "approve", json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("admin"),
        "{v}"
    );
    let (_, v) = app.as_(&mem).tenant(&t).get("/api/v1/approvals").await;
    assert_eq!(v["approvals"][0]["can_approve"], false);
    // Floors and unknown names.
    for body in [
        json!({"min_roles": {"external-send": "member"}}),
        json!({"min_roles": {"financial": "viewer"}}),
        json!({"min_roles": {"teleport": "admin"}}),
        json!({"modes": {"nope.thing": "auto"}}),
        json!({"modes": {"diagnostics.echo": "sometimes"}}),
    ] {
        let (s, v) = app
            .as_(&own)
            .tenant(&t)
            .put("/api/v1/approval-policy", body.clone())
            .await;
        assert!(
            s == StatusCode::UNPROCESSABLE_ENTITY || s == StatusCode::BAD_REQUEST,
            "{body}: {s} {v}"
        );
    }

    // Two approvals at once: one wins, the job runs once.
    let (a, b) = tokio::join!(
        decide(&app, &own, &t, &task, "approve", json!({"rationale": "go"})),
        decide(
            &app,
            &own,
            &t,
            &task,
            "approve",
            json!({"rationale": "go too"})
        ),
    );
    let mut codes = [a.0, b.0];
    codes.sort();
    assert_eq!(codes, [StatusCode::OK, StatusCode::CONFLICT], "{a:?} {b:?}");
    let d = wait_status(&app, &own, &t, &task, "succeeded").await;
    assert_eq!(d["task"]["attempts"], 1);
    assert!(
        d["task"]["decided_by"]
            .as_str()
            .unwrap()
            .starts_with("user:")
    );
    let approvals = d["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "approved")
        .count();
    assert_eq!(approvals, 1);
    let (s, _) = decide(&app, &own, &t, &task, "approve", json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (_, v) = app.as_(&own).tenant(&t).get("/api/v1/approvals").await;
    assert_eq!(v["approvals"], json!([]));

    // Automatic approval for a read-only capability.
    let (s, v) = app
        .as_(&own)
        .tenant(&t)
        .put(
            "/api/v1/approval-policy",
            json!({"modes": {"diagnostics.echo": "auto"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["modes"]["diagnostics.echo"], "auto");
    let (_, task) = proposed_task(&app, &own, &t).await;
    let d = wait_status(&app, &own, &t, &task, "succeeded").await;
    assert_eq!(d["task"]["decided_by"], "policy:auto");
    let (_, v) = app
        .as_(&mem)
        .tenant(&t)
        .get("/api/v1/approval-policy")
        .await;
    assert_eq!(v["modes"]["diagnostics.echo"], "auto");
    // Another company keeps the default policy.
    let (bob, b) = owner(&app, "bob@b.test").await;
    let (_, v) = app
        .as_(&bob)
        .tenant(&b)
        .get("/api/v1/approval-policy")
        .await;
    assert_eq!(v["modes"], json!({}));
    assert_eq!(v["min_roles"]["none"], "member");
    let (_, v) = app
        .as_(&own)
        .tenant(&t)
        .put(
            "/api/v1/approval-policy",
            json!({"modes": {"diagnostics.echo": "ask"}}),
        )
        .await;
    assert_eq!(v["modes"], json!({}));
}

async fn rejection_needs_a_rationale_and_ends_the_task(app: TestApp) {
    let (own, t) = owner(&app, "own@acme.test").await;
    let (meeting_id, task) = proposed_task(&app, &own, &t).await;
    let (s, v) = decide(&app, &own, &t, &task, "reject", json!({})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = decide(
        &app,
        &own,
        &t,
        &task,
        "reject",
        json!({"rationale": "r".repeat(3000)}),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = decide(
        &app,
        &own,
        &t,
        &task,
        "reject",
        json!({"rationale": "not now"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "rejected");
    assert_eq!(v["decision_rationale"], "not now");
    let (_, d) = app
        .as_(&own)
        .tenant(&t)
        .get(&format!("/api/v1/tasks/{task}"))
        .await;
    assert!(
        d["next_steps"]
            .as_str()
            .unwrap()
            .starts_with("Rejected (not now)"),
        "{d}"
    );
    let (s, _) = decide(&app, &own, &t, &task, "approve", json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = app
        .as_(&own)
        .tenant(&t)
        .post(&format!("/api/v1/tasks/{task}/cancel"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let d = detail(&app, &own, &t, &meeting_id).await;
    let item = d["action_items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["task_id"] == task.as_str())
        .unwrap()
        .clone();
    assert_eq!(item["task_status"], "rejected");
    // Unknown and malformed ids.
    let (s, _) = decide(
        &app,
        &own,
        &t,
        "tsk_00000000000000000000000000000000",
        "approve",
        json!({}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = decide(&app, &own, &t, "nope", "approve", json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = decide(&app, &own, &t, &task, "approve", json!({"rationale": 5})).await;
    assert!(s.is_client_error());
    let (s, v) = app.as_(&own).tenant(&t).get("/api/v1/audit?limit=50").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "task.reject")
    );
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "meeting.held")
    );
}

async fn undo_proposes_the_compensation(app: TestApp) {
    let (own, t) = owner(&app, "own@acme.test").await;
    let id = start(&app, &own, &t, "diagnostics.flip", json!({"value": true})).await;
    let d = wait_status(&app, &own, &t, &id, "succeeded").await;
    assert_eq!(d["task"]["result"], json!({"value": false}));
    assert!(
        d["next_steps"].as_str().unwrap().contains("can be undone"),
        "{d}"
    );
    let (s, v) = app
        .as_(&own)
        .tenant(&t)
        .post(&format!("/api/v1/tasks/{id}/undo"), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let undo = v["task"]["id"].as_str().unwrap().to_owned();
    assert_eq!(v["task"]["status"], "proposed");
    assert_eq!(v["task"]["undo_of"], id.as_str());
    assert_eq!(v["task"]["input"], json!({"value": false}));
    let (s, _) = app
        .as_(&own)
        .tenant(&t)
        .post(&format!("/api/v1/tasks/{id}/undo"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "one undo at a time");
    let (s, _) = app
        .as_(&own)
        .tenant(&t)
        .post(&format!("/api/v1/tasks/{undo}/undo"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "a proposed task cannot be undone");
    let (s, v) = decide(
        &app,
        &own,
        &t,
        &undo,
        "approve",
        json!({"rationale": "revert"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let d = wait_status(&app, &own, &t, &undo, "succeeded").await;
    assert_eq!(d["task"]["result"], json!({"value": true}));

    let echo = start(&app, &own, &t, "diagnostics.echo", json!({"a": 1})).await;
    wait_status(&app, &own, &t, &echo, "succeeded").await;
    let (s, v) = app
        .as_(&own)
        .tenant(&t)
        .post(&format!("/api/v1/tasks/{echo}/undo"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be undone"),
        "{v}"
    );
    let (bob, b) = owner(&app, "bob@b.test").await;
    let (s, _) = app
        .as_(&bob)
        .tenant(&b)
        .post(&format!("/api/v1/tasks/{id}/undo"), json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // A failed task says what to do about it.
    let failing = start(
        &app,
        &own,
        &t,
        "diagnostics.fail",
        json!({"mode": "permanent", "message": "quota exceeded"}),
    )
    .await;
    let d = wait_status(&app, &own, &t, &failing, "failed").await;
    let next = d["next_steps"].as_str().unwrap();
    assert!(
        next.contains("quota exceeded") && next.contains("will not be retried"),
        "{d}"
    );
}

async fn outcome_reaches_the_requester(app: TestApp) {
    let (own, t) = owner(&app, "own@acme.test").await;
    let mut ws = crate::realtime::connect(&app, &own.token, &t).await;
    crate::realtime::send(
        &mut ws,
        json!({"type": "subscribe", "topic": "notifications"}),
    )
    .await;
    let (_, task) = proposed_task(&app, &own, &t).await;
    let (s, _) = decide(&app, &own, &t, &task, "approve", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    wait_status(&app, &own, &t, &task, "succeeded").await;

    // Over the bus.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let event = loop {
        let ev = tokio::time::timeout_at(deadline, crate::realtime::next(&mut ws))
            .await
            .expect("no notification event")
            .expect("socket closed");
        if ev["kind"] == "task.succeeded" {
            break ev;
        }
    };
    assert_eq!(event["data"]["task_id"], task.as_str());
    assert_eq!(event["data"]["user_id"], own.id.as_str());

    // In the notification centre.
    let (s, v) = app
        .as_(&own)
        .tenant(&t)
        .get("/api/v1/notifications?unread=true")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["unread"], 1);
    let n = &v["notifications"][0];
    assert_eq!(n["task_id"], task.as_str());
    assert!(n["title"].as_str().unwrap().ends_with(": done"), "{n}");
    let (s, v) = app
        .as_(&own)
        .tenant(&t)
        .post("/api/v1/notifications/read", json!({"ids": [n["id"]]}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["marked"], 1);
    let (_, v) = app.as_(&own).tenant(&t).get("/api/v1/notifications").await;
    assert_eq!(v["unread"], 0);
    assert_eq!(v["notifications"].as_array().unwrap().len(), 1);

    // In the outbox: held in the dev mailbox (no SMTP here).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (s, v) = app.as_(&own).tenant(&t).get("/api/v1/mailbox").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["smtp_configured"], false);
        let m = &v["messages"][0];
        if m["status"] == "held" {
            assert_eq!(m["to_email"], own.email.as_str());
            assert!(m["subject"].as_str().unwrap().contains("done"));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never held: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Others see none of it.
    let mem = app.signup("mem@acme.test").await;
    app.add_member(&own, &t, &mem, "member").await;
    let (_, v) = app.as_(&mem).tenant(&t).get("/api/v1/notifications").await;
    assert_eq!(v["notifications"], json!([]));
    let (s, _) = app.as_(&mem).tenant(&t).get("/api/v1/mailbox").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (bob, b) = owner(&app, "bob@b.test").await;
    let (_, v) = app.as_(&bob).tenant(&b).get("/api/v1/mailbox").await;
    assert_eq!(v["messages"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_goes_out_through_smtp() {
    let (port, got) = crate::helpers::smtp_sink().await;
    let app = TestApp::start_with(Db::Sqlite, |c| {
        c.smtp_url = Some(ocsuite::config::Secret::new(format!(
            "smtp://127.0.0.1:{port}"
        )));
        c.smtp_from = "Board <board@acme.test>".into();
    })
    .await
    .unwrap();
    let (own, t) = owner(&app, "own@acme.test").await;
    let (_, task) = proposed_task(&app, &own, &t).await;
    decide(&app, &own, &t, &task, "approve", json!({})).await;
    wait_status(&app, &own, &t, &task, "succeeded").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = app.as_(&own).tenant(&t).get("/api/v1/mailbox").await;
        if v["messages"][0]["status"] == "sent" {
            assert_eq!(v["smtp_configured"], true);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never sent: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert!(got[0].0[0].contains("own@acme.test"), "{got:?}");
    assert!(
        got[0].1.contains("From: Board <board@acme.test>"),
        "{}",
        got[0].1
    );
    assert!(got[0].1.contains("done"), "{}", got[0].1);
}
