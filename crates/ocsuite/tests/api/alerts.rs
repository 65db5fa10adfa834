//! The alert inbox (acknowledge, snooze on the test clock, resolve with a note,
//! escalate to a board meeting that carries the evidence), notification preferences and
//! their routing to in-app notifications, email (the dev mailbox) and tenant webhooks,
//! digests by each person's preference, and isolation.

use chrono::{DateTime, Duration, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::dual;
use crate::helpers::{TestApp, User};
use crate::tasks::owner;
use crate::trigger_metrics::runway_two_months;
use crate::triggers::{alert, create_id, fire, raise, tick, time, until, unwrap, wait_runs};
use crate::webhooks::{deliveries, received, sink, webhook};

const CATEGORIES: [&str; 6] = [
    "alerts.critical",
    "alerts.warning",
    "alerts.info",
    "approvals",
    "task_outcomes",
    "digests",
];

async fn act(
    app: &TestApp,
    u: &User,
    t: &str,
    id: &str,
    verb: &str,
    body: Value,
) -> (StatusCode, Value) {
    let (s, v) = app
        .as_(u)
        .tenant(t)
        .post(&format!("/api/v1/alerts/{id}/{verb}"), body)
        .await;
    (s, unwrap(v, "alert"))
}

/// The alert list for `query` (`""` for the default) and its open count.
async fn listed(app: &TestApp, u: &User, t: &str, query: &str) -> (Vec<String>, i64) {
    let (s, v) = app
        .as_(u)
        .tenant(t)
        .get(&format!("/api/v1/alerts{query}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let ids = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    (
        ids,
        v["open"]
            .as_i64()
            .unwrap_or_else(|| panic!("no open count: {v}")),
    )
}

async fn prefs(app: &TestApp, u: &User, t: &str, categories: Value) -> Value {
    let (s, v) = app
        .as_(u)
        .tenant(t)
        .put(
            "/api/v1/me/notification-preferences",
            json!({"categories": categories}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

/// The titles of `u`'s notifications.
async fn notified(app: &TestApp, u: &User, t: &str) -> Vec<String> {
    let (s, v) = app.as_(u).tenant(t).get("/api/v1/notifications").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["title"].as_str().unwrap().to_owned())
        .collect()
}

/// The dev mailbox: (to, subject, body) of every message (owners and admins read it).
async fn mailbox(app: &TestApp, admin: &User, t: &str) -> Vec<(String, String, String)> {
    let (s, v) = app.as_(admin).tenant(t).get("/api/v1/mailbox").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let f = |k: &str| m[k].as_str().unwrap_or("").to_owned();
            (f("to_email"), f("subject"), f("body"))
        })
        .collect()
}

fn mail_to(mail: &[(String, String, String)], to: &str, about: &str) -> usize {
    mail.iter()
        .filter(|(t, s, b)| t == to && (s.contains(about) || b.contains(about)))
        .count()
}

dual!(
    inbox_actions_follow_the_alert_lifecycle,
    escalating_holds_a_meeting_with_the_evidence,
    preferences_have_defaults_and_refuse_unknown_categories,
    preferences_route_alerts_to_each_channel,
    digests_reach_members_by_their_preferences,
    alerts_preferences_and_digests_are_isolated,
);

async fn inbox_actions_follow_the_alert_lifecycle(app: TestApp) {
    let (u, t) = owner(&app, "inbox@alr.example").await;
    let mem = app.signup("member@alr.example").await;
    app.add_member(&u, &t, &mem, "member").await;
    let t0: DateTime<Utc> = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    app.state.clock.set(t0);
    let id = raise(&app, &u, &t, "Card declined", "critical").await;

    // Members read the alert with its evidence.
    let a = alert(&app, &mem, &t, &id).await;
    assert_eq!(a["id"], id.as_str());
    assert_eq!(
        (
            a["status"].as_str(),
            a["severity"].as_str(),
            a["title"].as_str()
        ),
        (Some("open"), Some("critical"), Some("Card declined")),
        "{a}"
    );
    assert!(
        a["body"].as_str().unwrap().contains("Raised by a test."),
        "{a}"
    );
    assert!(a["trigger_id"].as_str().unwrap().starts_with("trg_"), "{a}");
    assert!(
        a["evidence"]["figures"].is_array() && a["evidence"]["links"].is_array(),
        "{a}"
    );
    assert!(
        a["snoozed_until"].is_null() && a["resolved_note"].is_null() && a["meeting_id"].is_null(),
        "{a}"
    );
    let (ids, open) = listed(&app, &mem, &t, "").await;
    assert_eq!((ids, open), (vec![id.clone()], 1));

    // A member acknowledges it: no longer open, still active.
    let (s, a) = act(&app, &mem, &t, &id, "ack", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(a["status"], "acknowledged");
    assert_eq!(listed(&app, &u, &t, "").await, (vec![id.clone()], 0));
    assert!(listed(&app, &u, &t, "?status=open").await.0.is_empty());
    assert_eq!(
        listed(&app, &u, &t, "?status=acknowledged").await.0,
        std::slice::from_ref(&id)
    );

    // Snooze: not into the past; for two hours, then it is back among the open ones.
    let (s, v) = act(
        &app,
        &u,
        &t,
        &id,
        "snooze",
        json!({"until": (t0 - Duration::hours(1)).to_rfc3339()}),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, a) = act(&app, &u, &t, &id, "snooze", json!({"hours": 2})).await;
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(a["status"], "snoozed");
    let until_at = time(&a["snoozed_until"]);
    assert!(
        (until_at - (t0 + Duration::hours(2))).num_seconds().abs() <= 1,
        "{a}"
    );
    assert_eq!(
        listed(&app, &u, &t, "?status=snoozed").await.0,
        std::slice::from_ref(&id)
    );
    assert_eq!(listed(&app, &u, &t, "?status=open").await, (vec![], 0));
    app.state.clock.set(t0 + Duration::hours(3));
    assert_eq!(
        listed(&app, &u, &t, "?status=open").await,
        (vec![id.clone()], 1)
    );
    assert!(listed(&app, &u, &t, "").await.0.contains(&id));
    let (s, a) = act(
        &app,
        &u,
        &t,
        &id,
        "snooze",
        json!({"until": (t0 + Duration::hours(5)).to_rfc3339()}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    assert!(
        (time(&a["snoozed_until"]) - (t0 + Duration::hours(5)))
            .num_seconds()
            .abs()
            <= 1,
        "{a}"
    );

    // Resolve with a note; a resolved alert does not change again.
    let (s, a) = act(
        &app,
        &mem,
        &t,
        &id,
        "resolve",
        json!({"note": "Card replaced"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(
        (a["status"].as_str(), a["resolved_note"].as_str()),
        (Some("resolved"), Some("Card replaced"))
    );
    let (s, v) = act(&app, &u, &t, &id, "resolve", json!({"note": "again"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(
        alert(&app, &u, &t, &id).await["resolved_note"],
        "Card replaced"
    );
    assert_eq!(listed(&app, &u, &t, "").await, (vec![], 0));
    assert_eq!(
        listed(&app, &u, &t, "?status=resolved").await.0,
        std::slice::from_ref(&id)
    );

    // Bad input and unknown ids.
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/alerts?status=bogus")
        .await;
    assert!(s.is_client_error(), "{s}");
    let other = raise(&app, &u, &t, "Second", "info").await;
    for body in [
        json!({"hours": 0}),
        json!({"hours": -3}),
        json!({"until": "soon"}),
        json!({}),
    ] {
        let (s, v) = act(&app, &u, &t, &other, "snooze", body.clone()).await;
        assert!(
            s == StatusCode::UNPROCESSABLE_ENTITY || s == StatusCode::BAD_REQUEST,
            "{body}: {s} {v}"
        );
    }
    for path in [
        "/api/v1/alerts/alr_nope",
        "/api/v1/alerts/alr_00000000000000000000000000000000",
    ] {
        let (s, _) = app.as_(&u).tenant(&t).get(path).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
    }
    let (s, _) = act(
        &app,
        &u,
        &t,
        "alr_00000000000000000000000000000000",
        "ack",
        json!({}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn escalating_holds_a_meeting_with_the_evidence(app: TestApp) {
    let (u, t) = owner(&app, "escalate@alr.example").await;
    app.state.clock.set(Utc::now());
    let trg = create_id(
        &app,
        &u,
        &t,
        json!({"name": "Runway watch", "condition": {"kind": "metric", "rule": "runway_months < 6"},
               "action": {"kind": "alert", "severity": "critical", "title": "Runway is {{value}}"}}),
    )
    .await;
    runway_two_months(&app, &u, &t).await;
    app.state.clock.advance(Duration::minutes(20));
    tick(&app).await;
    let r = wait_runs(&app, &u, &t, &trg, 1).await;
    let id = r[0]["output"]["alert_id"].as_str().unwrap().to_owned();
    let a = alert(&app, &u, &t, &id).await;
    let fig = crate::triggers::figure(&a, "runway_months").clone();
    let (label, display) = (
        fig["label"].as_str().unwrap(),
        fig["display"].as_str().unwrap(),
    );

    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(&format!("/api/v1/alerts/{id}/escalate"), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let mid = v["meeting_id"].as_str().unwrap().to_owned();
    assert!(mid.starts_with("mtg_"), "{v}");
    assert_eq!(v["alert"]["meeting_id"], mid.as_str(), "{v}");
    assert_eq!(alert(&app, &u, &t, &id).await["meeting_id"], mid.as_str());
    let d = until(60, "the escalation meeting to end", async || {
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
    assert!(
        d["meeting"]["agenda"]
            .as_str()
            .unwrap()
            .contains(a["title"].as_str().unwrap()),
        "{d}"
    );
    let context = d["meeting"]["context"]
        .as_str()
        .unwrap_or_else(|| panic!("no context: {d}"));
    assert!(
        context.contains(label) && context.contains(display),
        "{context}"
    );
    let (_, list) = app.as_(&u).tenant(&t).get("/api/v1/board-meetings").await;
    assert!(list.to_string().contains(&mid), "{list}");
}

async fn preferences_have_defaults_and_refuse_unknown_categories(app: TestApp) {
    let (u, t) = owner(&app, "prefs@alr.example").await;
    let path = "/api/v1/me/notification-preferences";
    let (s, v) = app.as_(&u).tenant(&t).get(path).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let cats = v["categories"].as_object().unwrap();
    let mut keys: Vec<&str> = cats.keys().map(String::as_str).collect();
    keys.sort();
    let mut known = CATEGORIES.to_vec();
    known.sort();
    assert_eq!(keys, known);
    for (_, c) in cats {
        assert!(c["in_app"].is_boolean() && c["email"].is_boolean(), "{v}");
    }
    assert_eq!(
        v["categories"]["alerts.critical"],
        json!({"in_app": true, "email": true})
    );

    let v = prefs(
        &app,
        &u,
        &t,
        json!({"alerts.warning": {"in_app": false, "email": true}}),
    )
    .await;
    assert_eq!(
        v["categories"]["alerts.warning"],
        json!({"in_app": false, "email": true})
    );
    assert_eq!(
        v["categories"]["alerts.critical"],
        json!({"in_app": true, "email": true}),
        "untouched"
    );
    let (_, stored) = app.as_(&u).tenant(&t).get(path).await;
    assert_eq!(stored, v);
    // A later PUT of another category keeps the first.
    let v = prefs(
        &app,
        &u,
        &t,
        json!({"digests": {"in_app": true, "email": false}}),
    )
    .await;
    assert_eq!(
        v["categories"]["alerts.warning"],
        json!({"in_app": false, "email": true})
    );

    let (s, e) = app
        .as_(&u)
        .tenant(&t)
        .put(
            path,
            json!({"categories": {"alerts.urgent": {"in_app": true, "email": true}}}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(CATEGORIES.iter().all(|c| msg.contains(c)), "{msg}");
    for body in [
        json!({"categories": {"digests": {"in_app": "yes", "email": true}}}),
        json!({"categories": {"digests": {"in_app": true, "email": true, "sms": true}}}),
        json!({"categories": "all"}),
    ] {
        let (s, e) = app.as_(&u).tenant(&t).put(path, body.clone()).await;
        assert!(
            s == StatusCode::UNPROCESSABLE_ENTITY || s == StatusCode::BAD_REQUEST,
            "{body}: {s} {e}"
        );
    }
    let (_, after) = app.as_(&u).tenant(&t).get(path).await;
    assert_eq!(after, v, "refused changes stored nothing");
    // Someone else in the company has their own (default) preferences.
    let mem = app.signup("other@alr.example").await;
    app.add_member(&u, &t, &mem, "member").await;
    let (_, theirs) = app.as_(&mem).tenant(&t).get(path).await;
    assert_eq!(
        theirs["categories"]["alerts.warning"]["in_app"], true,
        "{theirs}"
    );
}

async fn preferences_route_alerts_to_each_channel(app: TestApp) {
    let (own, t) = owner(&app, "route@alr.example").await;
    let mem = app.signup("teammate@alr.example").await;
    app.add_member(&own, &t, &mem, "member").await;
    let warn_hook = sink(200).await;
    let crit_hook = sink(200).await;
    let (warn_id, _) = webhook(&app, &own, &t, json!({"url": format!("{}/warn", warn_hook.uri()), "format": "standard", "categories": ["alerts.warning"]})).await;
    let (crit_id, _) = webhook(&app, &own, &t, json!({"url": format!("{}/crit", crit_hook.uri()), "format": "standard", "categories": ["alerts.critical"]})).await;
    prefs(
        &app,
        &own,
        &t,
        json!({"alerts.warning": {"in_app": true, "email": false}}),
    )
    .await;
    prefs(
        &app,
        &mem,
        &t,
        json!({"alerts.warning": {"in_app": false, "email": true}}),
    )
    .await;

    // A warning: the owner in the app only, the teammate by email only, the warning hook.
    raise(&app, &own, &t, "Churn is rising", "warning").await;
    until(30, "the owner's notification", async || {
        let n = notified(&app, &own, &t).await;
        if n.iter().any(|x| x.contains("Churn is rising")) {
            Ok(())
        } else {
            Err(json!(n))
        }
    })
    .await;
    until(30, "the teammate's email", async || {
        let m = mailbox(&app, &own, &t).await;
        if mail_to(&m, &mem.email, "Churn is rising") == 1 {
            Ok(())
        } else {
            Err(json!(format!("{m:?}")))
        }
    })
    .await;
    until(30, "the warning webhook", async || {
        let r = received(&warn_hook).await;
        if r.len() == 1 {
            Ok(())
        } else {
            Err(json!(r.len()))
        }
    })
    .await;
    assert_eq!(
        mail_to(
            &mailbox(&app, &own, &t).await,
            &own.email,
            "Churn is rising"
        ),
        0
    );
    assert!(
        !notified(&app, &mem, &t)
            .await
            .iter()
            .any(|x| x.contains("Churn is rising"))
    );
    assert!(deliveries(&app, &own, &t, &crit_id).await.is_empty());

    // A critical alert: by default in the app and by email for both; the critical hook.
    raise(&app, &own, &t, "Payroll bounced", "critical").await;
    until(30, "everyone told about the payroll", async || {
        let m = mailbox(&app, &own, &t).await;
        let ok = mail_to(&m, &own.email, "Payroll bounced") == 1
            && mail_to(&m, &mem.email, "Payroll bounced") == 1
            && notified(&app, &own, &t)
                .await
                .iter()
                .any(|x| x.contains("Payroll bounced"))
            && notified(&app, &mem, &t)
                .await
                .iter()
                .any(|x| x.contains("Payroll bounced"))
            && received(&crit_hook).await.len() == 1;
        if ok {
            Ok(())
        } else {
            Err(json!(format!("{m:?}")))
        }
    })
    .await;
    assert_eq!(received(&warn_hook).await.len(), 1);
    assert_eq!(deliveries(&app, &own, &t, &warn_id).await.len(), 1);
}

async fn digests_reach_members_by_their_preferences(app: TestApp) {
    let (own, t) = owner(&app, "digest@alr.example").await;
    let mem = app.signup("reader@alr.example").await;
    app.add_member(&own, &t, &mem, "member").await;
    prefs(&app, &own, &t, json!({"digests": {"in_app": true, "email": true}, "alerts.warning": {"in_app": true, "email": false}})).await;
    prefs(&app, &mem, &t, json!({"digests": {"in_app": true, "email": false}, "alerts.warning": {"in_app": true, "email": false}})).await;
    raise(&app, &own, &t, "Supplier late", "warning").await;
    let before = mailbox(&app, &own, &t).await.len();

    let trg = create_id(&app, &own, &t, json!({"name": "Digest", "condition": {"kind": "schedule", "every_hours": 168}, "action": {"kind": "digest"}})).await;
    let run = fire(&app, &own, &t, &trg).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let digest = run["output"]["digest_id"].as_str().unwrap().to_owned();
    assert!(run["output"]["recipients"].as_u64().unwrap() >= 1, "{run}");
    let (_, v) = app.as_(&mem).tenant(&t).get("/api/v1/digests").await;
    let d = v["digests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == digest.as_str())
        .unwrap_or_else(|| panic!("{v}"))
        .clone();
    assert!(time(&d["period_start"]) < time(&d["period_end"]), "{d}");
    let body = d["body"].as_str().unwrap();
    assert!(
        body.contains("Supplier late"),
        "the open alert is in the digest: {body}"
    );
    // By email to the owner, never to the reader.
    until(30, "the digest by email", async || {
        let m = mailbox(&app, &own, &t).await;
        let to_owner = m.iter().filter(|(to, _, _)| to == &own.email).count();
        if m.len() > before && to_owner >= 1 {
            Ok(())
        } else {
            Err(json!(format!("{m:?}")))
        }
    })
    .await;
    let m = mailbox(&app, &own, &t).await;
    assert!(!m.iter().any(|(to, _, _)| to == &mem.email), "{m:?}");
}

async fn alerts_preferences_and_digests_are_isolated(app: TestApp) {
    let (a, ta) = owner(&app, "a@iso-alr.example").await;
    let (b, tb) = owner(&app, "b@iso-alr.example").await;
    // Ann also belongs to B: her preferences are per company.
    app.add_member(&b, &tb, &a, "member").await;
    prefs(
        &app,
        &a,
        &ta,
        json!({"alerts.critical": {"in_app": false, "email": false}}),
    )
    .await;
    let (_, in_b) = app
        .as_(&a)
        .tenant(&tb)
        .get("/api/v1/me/notification-preferences")
        .await;
    assert_eq!(
        in_b["categories"]["alerts.critical"],
        json!({"in_app": true, "email": true}),
        "{in_b}"
    );

    let id = raise(&app, &a, &ta, "A's secret trouble", "critical").await;
    let trg = create_id(&app, &a, &ta, json!({"name": "Digest", "condition": {"kind": "schedule", "every_hours": 168}, "action": {"kind": "digest"}})).await;
    let digest = fire(&app, &a, &ta, &trg).await["output"]["digest_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (s, v) = app
        .as_(&b)
        .tenant(&tb)
        .get(&format!("/api/v1/alerts/{id}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = app.as_(&b).tenant(&ta).get("/api/v1/alerts").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    for (who, tenant) in [(&b, &tb), (&a, &tb)] {
        let (ids, open) = listed(&app, who, tenant, "").await;
        assert!(!ids.contains(&id), "{ids:?}");
        assert_eq!(open, 0);
        let (_, v) = app.as_(who).tenant(tenant).get("/api/v1/digests").await;
        assert!(!v.to_string().contains(&digest), "{v}");
        assert!(
            !notified(&app, who, tenant)
                .await
                .iter()
                .any(|n| n.contains("A's secret trouble"))
        );
    }
    let (s, _) = app.as_(&b).tenant(&ta).get("/api/v1/digests").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .as_(&b)
        .tenant(&ta)
        .get("/api/v1/me/notification-preferences")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // B's mailbox has none of A's mail.
    assert!(
        mailbox(&app, &b, &tb)
            .await
            .iter()
            .all(|(_, s, body)| !s.contains("A's secret") && !body.contains("A's secret"))
    );
    assert_eq!(alert(&app, &a, &ta, &id).await["status"], "open");
}
