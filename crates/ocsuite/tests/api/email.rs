//! The Email Orchestrator: campaigns to a local SMTP sink with per-recipient status,
//! permanent and temporary SMTP failures, the unsubscribe link and suppression list,
//! cancellation, bad input and isolation. Gmail and the board's preview: `email_gmail.rs`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Db, Inbox, TestApp, User, smtp_sink};
use crate::tasks::{owner, start, wait_status};

/// An app whose email goes to a local SMTP sink, and that sink's inbox.
pub async fn smtp_app(db: Db) -> Option<(TestApp, Inbox)> {
    let (port, inbox) = smtp_sink().await;
    let app = TestApp::start_with(db, |c| {
        c.smtp_url = Some(ocsuite::config::Secret::new(format!(
            "smtp://127.0.0.1:{port}"
        )));
        c.smtp_from = "Outreach <outreach@acme.test>".into();
    })
    .await?;
    Some((app, inbox))
}

pub async fn lead(app: &TestApp, u: &User, t: &str, name: &str, email: &str, stage: &str) {
    let (s, v) = app
        .as_(u)
        .tenant(t)
        .post(
            "/api/v1/leadtracker/leads",
            json!({"name": name, "email": email, "company": "Acme", "stage": stage}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

pub async fn campaign(app: &TestApp, u: &User, t: &str, body: Value) -> String {
    let (s, v) = app
        .as_(u)
        .tenant(t)
        .post("/api/v1/email/campaigns", body)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["status"], "draft");
    v["id"].as_str().unwrap().to_owned()
}

pub async fn send(app: &TestApp, u: &User, t: &str, id: &str) -> String {
    let (s, v) = app
        .as_(u)
        .tenant(t)
        .post(&format!("/api/v1/email/campaigns/{id}/send"), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["campaign"]["status"], "scheduled");
    v["task_id"].as_str().unwrap().to_owned()
}

pub async fn wait_campaign(app: &TestApp, u: &User, t: &str, id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (s, v) = app
            .as_(u)
            .tenant(t)
            .get(&format!("/api/v1/email/campaigns/{id}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if v["status"] == status {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "campaign never got {status}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn recipient(app: &TestApp, u: &User, t: &str, id: &str, email: &str) -> Value {
    let (_, v) = app
        .as_(u)
        .tenant(t)
        .get(&format!("/api/v1/email/campaigns/{id}/recipients"))
        .await;
    v["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["email"] == email)
        .cloned()
        .unwrap_or_else(|| panic!("{email} not in {v}"))
}

/// The `List-Unsubscribe` URL of a received message.
fn unsubscribe_url(data: &str) -> String {
    let unfolded = data.replace("\n ", " ").replace("\n\t", " ");
    let at = unfolded
        .find("List-Unsubscribe: <")
        .expect("List-Unsubscribe header")
        + "List-Unsubscribe: <".len();
    let end = unfolded[at..].find('>').unwrap();
    unfolded[at..at + end].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_over_smtp_sqlite() {
    campaign_over_smtp(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_over_smtp_postgres() {
    campaign_over_smtp(Db::Postgres).await;
}

async fn campaign_over_smtp(db: Db) {
    let Some((app, inbox)) = smtp_app(db).await else {
        return;
    };
    let (u, t) = owner(&app, "mail@a.example").await;
    lead(&app, &u, &t, "Ann Lee", "ann@x.test", "qualified").await;
    lead(&app, &u, &t, "Bo Unce", "bounce@x.test", "qualified").await;
    lead(&app, &u, &t, "Sue Pressed", "sup@x.test", "qualified").await;
    lead(&app, &u, &t, "Nina New", "nina@x.test", "new").await;
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .post("/api/v1/email/suppressions", json!({"email": "SUP@x.test"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let id = campaign(
        &app,
        &u,
        &t,
        json!({"name": "Check-in", "subject": "Hello {{ first_name | friend }}", "body": "Hi {{first_name}} at {{ company | your company }}.\nTalk soon.",
               "audience": {"stages": ["qualified"]}, "rate_per_minute": 600}),
    )
    .await;
    let (_, v) = app
        .as_(&u)
        .tenant(&t)
        .get(&format!("/api/v1/email/campaigns/{id}"))
        .await;
    assert_eq!(
        v["audience_reach"],
        json!({"recipients": 2, "skipped": 1}),
        "{v}"
    );

    let task = send(&app, &u, &t, &id).await;
    let d = wait_status(&app, &u, &t, &task, "succeeded").await;
    assert_eq!(
        (
            d["task"]["result"]["queued"].as_i64(),
            d["task"]["result"]["skipped"].as_i64()
        ),
        (Some(2), Some(1)),
        "{d}"
    );
    let v = wait_campaign(&app, &u, &t, &id, "sent").await;
    assert_eq!(
        (
            v["stats"]["sent"].as_i64(),
            v["stats"]["failed"].as_i64(),
            v["stats"]["skipped"].as_i64(),
            v["stats"]["pending"].as_i64()
        ),
        (Some(1), Some(1), Some(1), Some(0)),
        "{v}"
    );
    let bounced = recipient(&app, &u, &t, &id, "bounce@x.test").await;
    assert_eq!(bounced["status"], "failed");
    assert_eq!(bounced["attempts"], 1, "a 5xx is not retried: {bounced}");
    assert!(
        bounced["reason"].as_str().unwrap().contains("550"),
        "{bounced}"
    );
    let skipped = recipient(&app, &u, &t, &id, "sup@x.test").await;
    assert!(
        skipped["reason"].as_str().unwrap().contains("suppressed"),
        "{skipped}"
    );

    let got = inbox.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, vec!["<ann@x.test>".to_owned()]);
    let data = &got[0].1;
    assert!(data.contains("Subject: Hello Ann"), "{data}");
    assert!(data.contains("Hi Ann at Acme."), "{data}");
    assert!(
        data.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
        "{data}"
    );
    assert!(data.contains("From: Co <outreach@acme.test>"), "{data}");

    // The link: a page that asks, then the POST that unsubscribes.
    let url = unsubscribe_url(data);
    let path = url
        .split_once("/unsubscribe/")
        .map(|(_, tok)| format!("/unsubscribe/{tok}"))
        .unwrap();
    let page = app.http.get(app.url(&path)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("ann@x.test") && html.contains("<form method=\"post\">"),
        "{html}"
    );
    let (_, sup) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/email/suppressions")
        .await;
    assert_eq!(
        sup["suppressions"].as_array().unwrap().len(),
        1,
        "a GET changes nothing: {sup}"
    );
    let done = app
        .http
        .post(app.url(&path))
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    assert!(done.text().await.unwrap().contains("unsubscribed"));
    let (_, sup) = app
        .as_(&u)
        .tenant(&t)
        .get("/api/v1/email/suppressions")
        .await;
    let ann = sup["suppressions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["email"] == "ann@x.test")
        .cloned()
        .unwrap();
    assert_eq!(
        (ann["reason"].as_str(), ann["campaign_id"].as_str()),
        (Some("unsubscribed"), Some(id.as_str()))
    );
    let (_, v) = app
        .as_(&u)
        .tenant(&t)
        .get(&format!("/api/v1/email/campaigns/{id}"))
        .await;
    assert_eq!(v["stats"]["unsubscribed"], 1);
    // A tampered or foreign token is a 404 that says nothing more.
    let mut forged = path.clone();
    forged.pop();
    forged.push(if path.ends_with('A') { 'B' } else { 'A' });
    for p in [
        forged,
        "/unsubscribe/nonsense".to_owned(),
        path.replacen(&t[4..], &"0".repeat(32), 1),
    ] {
        let r = app.http.post(app.url(&p)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{p}");
    }

    // A second campaign to a list: the unsubscribed address is skipped, a busy server is
    // retried until attempts run out, a new address gets its message.
    let id2 = campaign(
        &app,
        &u,
        &t,
        json!({"name": "List", "subject": "Plan {{ plan }}", "body": "Your plan: {{plan}}. {{ unsubscribe_url }}",
               "audience": {"recipients": [
                   {"email": "ann@x.test", "vars": {"plan": "Pro"}},
                   {"email": "busy@x.test", "vars": {"plan": "Pro"}},
                   {"email": "Zed@X.test", "name": "Zed Zero", "vars": {"plan": "Team"}}
               ]}, "rate_per_minute": 600}),
    )
    .await;
    send(&app, &u, &t, &id2).await;
    let v = wait_campaign(&app, &u, &t, &id2, "sent").await;
    assert_eq!(
        (
            v["stats"]["sent"].as_i64(),
            v["stats"]["failed"].as_i64(),
            v["stats"]["skipped"].as_i64()
        ),
        (Some(1), Some(1), Some(1)),
        "{v}"
    );
    let busy = recipient(&app, &u, &t, &id2, "busy@x.test").await;
    assert_eq!(busy["attempts"], 5, "temporary failures retry: {busy}");
    assert!(busy["reason"].as_str().unwrap().contains("451"), "{busy}");
    // The dead delivery is in the dead-letter queue; retrying it sends (fails) again.
    let (_, dead) = app.as_(&u).tenant(&t).get("/api/v1/queues/dead").await;
    let job = dead["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["payload"]["recipient_id"] == busy["id"])
        .cloned()
        .unwrap_or_else(|| panic!("{dead}"));
    assert_eq!(job["queue"], "deliver-email-dlq", "{job}");
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(
            &format!("/api/v1/queues/dead/{}/retry", job["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert!(s.is_success(), "{v}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, dead) = app.as_(&u).tenant(&t).get("/api/v1/queues/dead").await;
        let again = dead["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == job["id"] && j["died_at"] != job["died_at"]);
        let (_, v) = app
            .as_(&u)
            .tenant(&t)
            .get(&format!("/api/v1/email/campaigns/{id2}"))
            .await;
        if again && v["status"] == "sent" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retried delivery never ran: {dead}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = recipient(&app, &u, &t, &id2, "busy@x.test").await;
    assert_eq!(r["status"], "failed", "{r}");

    let got = inbox.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    assert!(got[1].1.contains("Your plan: Team."), "{}", got[1].1);
    assert!(
        !got[1].1.contains("To stop receiving"),
        "the body placed the link itself"
    );
    assert!(got[1].1.contains("/unsubscribe/"));

    // Cancelling stops what has not gone out.
    let id3 = campaign(
        &app,
        &u,
        &t,
        json!({"name": "Slow", "subject": "S", "body": "B",
               "audience": {"recipients": [{"email": "one@x.test"}, {"email": "two@x.test"}, {"email": "three@x.test"}]}, "rate_per_minute": 1}),
    )
    .await;
    send(&app, &u, &t, &id3).await;
    wait_campaign(&app, &u, &t, &id3, "sending").await;
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(&format!("/api/v1/email/campaigns/{id3}/cancel"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "cancelled");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, v) = app
        .as_(&u)
        .tenant(&t)
        .get(&format!("/api/v1/email/campaigns/{id3}"))
        .await;
    assert!(v["stats"]["cancelled"].as_i64().unwrap() >= 2, "{v}");
    assert!(inbox.lock().unwrap().len() <= 3);
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .post(&format!("/api/v1/email/campaigns/{id3}/send"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    // The email figures reach the snapshot.
    let (_, m) = app.as_(&u).tenant(&t).get("/api/v1/metrics").await;
    let em = m["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["module"] == "email")
        .cloned()
        .unwrap();
    let sent = em["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["key"] == "emails_sent_30d")
        .cloned()
        .unwrap();
    assert!(sent["value"]["value"].as_i64().unwrap() >= 2, "{em}");

    // Another tenant sees none of it, in the API or (PostgreSQL) in raw SQL.
    let (b, tb) = owner(&app, "mailb@b.example").await;
    let (s, _) = app
        .as_(&b)
        .tenant(&tb)
        .get(&format!("/api/v1/email/campaigns/{id}/recipients"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, v) = app
        .as_(&b)
        .tenant(&tb)
        .get("/api/v1/email/suppressions")
        .await;
    assert_eq!(v["suppressions"], json!([]));
    crate::bookkeeping::rls_hides(
        &app,
        &t,
        &tb,
        &["email_campaigns", "email_recipients", "email_suppressions"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_campaigns_are_refused_and_campaigns_are_isolated() {
    let Some((app, _inbox)) = smtp_app(Db::Sqlite).await else {
        return;
    };
    let (a, ta) = owner(&app, "ema@a.example").await;
    let (b, tb) = owner(&app, "emb@b.example").await;
    let base = json!({"name": "N", "subject": "S", "body": "B", "audience": {"recipients": [{"email": "x@x.test"}]}});
    for (patch, field) in [
        (json!({"subject": "Hi {{ frist_name }}"}), "subject"),
        (json!({"body": "Hi {{ name"}), "body"),
        (json!({"channel": "fax"}), "channel"),
        (json!({"rate_per_minute": 0}), "rate_per_minute"),
        (json!({"audience": {"stages": ["nope"]}}), "stage"),
        (
            json!({"audience": {"recipients": [{"email": "broken"}]}}),
            "audience",
        ),
        (json!({"audience": {"recipients": []}}), "audience"),
        (
            json!({"audience": {"stages": [], "recipients": [{"email": "x@x.test"}]}}),
            "audience",
        ),
        (json!({"subject": "line\nbreak"}), "subject"),
        (json!({"name": ""}), "name"),
    ] {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, v) = app
            .as_(&a)
            .tenant(&ta)
            .post("/api/v1/email/campaigns", body)
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{patch}: {v}");
        assert_eq!(v["error"]["field"], field, "{patch}: {v}");
    }
    let id = campaign(&app, &a, &ta, base.clone()).await;
    let path = format!("/api/v1/email/campaigns/{id}");
    for (method, p) in [
        (reqwest::Method::GET, path.clone()),
        (reqwest::Method::PATCH, path.clone()),
        (reqwest::Method::DELETE, path.clone()),
        (reqwest::Method::POST, format!("{path}/send")),
        (reqwest::Method::POST, format!("{path}/cancel")),
        (reqwest::Method::GET, format!("{path}/recipients")),
    ] {
        let body = (method != reqwest::Method::GET && method != reqwest::Method::DELETE)
            .then(|| json!({}));
        let (s, _) = app
            .call(method.clone(), &p, Some(&b.token), Some(&tb), body)
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {p}");
    }
    let (_, v) = app.as_(&b).tenant(&tb).get("/api/v1/email/campaigns").await;
    assert_eq!(v["campaigns"], json!([]));
    let task = start(
        &app,
        &b,
        &tb,
        "email.campaign_send",
        json!({"campaign_id": id}),
    )
    .await;
    let d = wait_status(&app, &b, &tb, &task, "failed").await;
    assert!(
        d["task"]["error"].as_str().unwrap().contains("not found"),
        "{d}"
    );
    let (_, v) = app.as_(&a).tenant(&ta).get(&path).await;
    assert_eq!(v["status"], "draft", "B's task did not touch A's campaign");
    // Members cannot send when the policy asks for admins.
    let member = app.signup("emm@a.example").await;
    app.add_member(&a, &ta, &member, "member").await;
    let (s, v) = app
        .as_(&a)
        .tenant(&ta)
        .put(
            "/api/v1/approval-policy",
            json!({"min_roles": {"external-send": "admin"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = app
        .as_(&member)
        .tenant(&ta)
        .post(&format!("{path}/send"), json!({}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    // Sending, then editing, is a conflict.
    send(&app, &a, &ta, &id).await;
    let (s, _) = app
        .as_(&a)
        .tenant(&ta)
        .patch(&path, json!({"name": "later"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
}
