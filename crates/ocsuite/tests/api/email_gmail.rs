//! The Email Orchestrator through the tenant's Gmail (fake Google endpoints), and a board
//! meeting proposing a campaign: the approval preview counts who it reaches.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::email::{campaign, lead, recipient, send, wait_campaign};
use crate::fake_idp::FakeIdp;
use crate::helpers::{Db, TestApp};
use crate::tasks::{owner, start, wait_status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaigns_and_single_emails_go_through_gmail() {
    let idp = FakeIdp::start().await;
    let providers = vec![idp.provider("google")];
    let app = TestApp::start_with(Db::Sqlite, |c| c.connector_providers = providers)
        .await
        .unwrap();
    let (u, t) = owner(&app, "gmail@a.example").await;
    let body = json!({"name": "Via Gmail", "subject": "Hi {{name}}", "body": "Plan {{ plan }}", "channel": "gmail",
                      "audience": {"recipients": [{"email": "pat@x.test", "name": "Pat Doe", "vars": {"plan": "Pro"}}]}});
    let id = campaign(&app, &u, &t, body).await;
    // Not connected yet: refused with what to do.
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(&format!("/api/v1/email/campaigns/{id}/send"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("connect"),
        "{v}"
    );
    // Nor is there SMTP for the smtp channel.
    let smtp = campaign(&app, &u, &t, json!({"name": "S", "subject": "S", "body": "B", "audience": {"recipients": [{"email": "a@x.test"}]}})).await;
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(&format!("/api/v1/email/campaigns/{smtp}/send"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("SMTP"),
        "{v}"
    );

    crate::connectors::connect(&app, &u, &t, "google").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = app.as_(&u).tenant(&t).get("/api/v1/connectors").await;
        if v.to_string().contains(crate::fake_idp::ACCOUNT) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send(&app, &u, &t, &id).await;
    wait_campaign(&app, &u, &t, &id, "sent").await;
    let r = recipient(&app, &u, &t, &id, "pat@x.test").await;
    assert_eq!(
        (r["status"].as_str(), r["message_id"].as_str()),
        (Some("sent"), Some("gm1")),
        "{r}"
    );
    let raw = idp.with(|i| i.gmail_sent.clone());
    assert_eq!(raw.len(), 1);
    assert!(
        raw[0].contains(&format!("From: Co <{}>", crate::fake_idp::ACCOUNT)),
        "{}",
        raw[0]
    );
    assert!(
        raw[0].contains("To: \"Pat Doe\" <pat@x.test>")
            || raw[0].contains("To: Pat Doe <pat@x.test>"),
        "{}",
        raw[0]
    );
    assert!(
        raw[0].contains("Subject: Hi Pat Doe")
            && raw[0].contains("Plan Pro")
            && raw[0].contains("List-Unsubscribe"),
        "{}",
        raw[0]
    );

    // A single email through the same account; a suppressed recipient is skipped.
    app.as_(&u)
        .tenant(&t)
        .post("/api/v1/email/suppressions", json!({"email": "no@x.test"}))
        .await;
    let task = start(&app, &u, &t, "email.send", json!({"to": ["lee@x.test", "no@x.test"], "subject": "Note", "body": "Hello", "channel": "gmail"})).await;
    let d = wait_status(&app, &u, &t, &task, "succeeded").await;
    let out = &d["task"]["result"];
    assert_eq!(
        out["sent"][0],
        json!({"email": "lee@x.test", "message_id": "gm2"}),
        "{out}"
    );
    assert_eq!(out["skipped"][0]["email"], "no@x.test");
    // A revoked grant fails for good, naming the fix.
    idp.revoke_everything();
    let task = start(
        &app,
        &u,
        &t,
        "email.send",
        json!({"to": ["lee@x.test"], "subject": "Note", "body": "Hello", "channel": "gmail"}),
    )
    .await;
    let d = wait_status(&app, &u, &t, &task, "failed").await;
    assert!(
        d["task"]["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("reconnect"),
        "{d}"
    );
}

/// A board proposes a campaign; the approval preview counts who it reaches, and every
/// member's prompt carries the modules' current figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn board_proposal_preview_counts_recipients_and_members_see_figures() {
    use wiremock::matchers::{body_string_contains, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use crate::llm::{delta, finish, sse_body};
    let server = MockServer::start().await;
    let app = crate::llm::upstream_app(&server, |c| c.llm_max_retries = 0).await;
    let (u, t) = owner(&app, "boardmail@a.example").await;
    for (name, email) in [
        ("Ann", "ann@x.test"),
        ("Bea", "bea@x.test"),
        ("Cy", "cy@x.test"),
    ] {
        lead(&app, &u, &t, name, email, "qualified").await;
    }
    app.as_(&u)
        .tenant(&t)
        .post("/api/v1/email/suppressions", json!({"email": "cy@x.test"}))
        .await;
    let id = campaign(&app, &u, &t, json!({"name": "Win-back", "subject": "S", "body": "B", "audience": {"stages": ["qualified"]}})).await;

    let sse = |text: &str| {
        ResponseTemplate::new(200)
            .insert_header("content-type", "text/event-stream")
            .set_body_string(sse_body(&[delta(text), finish()], true))
    };
    let items = json!({"items": [{"title": "Send the win-back campaign", "description": "Re-engage qualified leads", "owner": "cmo",
        "capability": "email.campaign_send", "input_json": json!({"campaign_id": id}).to_string(), "priority": "high",
        "due_date": null, "expected_impact": "pipeline"}]});
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("response_format"))
        .respond_with(sse(&items.to_string()))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("Current figures"))
        .and(body_string_contains("Open leads: 3 leads"))
        .respond_with(sse("I can see our figures."))
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(sse("I see no figures."))
        .with_priority(5)
        .mount(&server)
        .await;

    let (s, evs) = crate::board::meeting(
        &app,
        &u,
        &t,
        json!({"agenda": "Re-engage leads?", "personas": ["ceo", "cmo"]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    for end in crate::board::find(&evs, "turn_end") {
        assert_eq!(end["status"], "complete", "{end}");
    }
    let mid = crate::board::find(&evs, "meeting_end")[0]["meeting_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = crate::board::detail(&app, &u, &t, &mid).await;
    for turn in d["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["persona"] != "chair")
    {
        assert_eq!(turn["content"], "I can see our figures.", "{turn}");
    }
    let (_, v) = app.as_(&u).tenant(&t).get("/api/v1/approvals").await;
    let preview = v["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["task"]["capability"] == "email.campaign_send")
        .cloned()
        .unwrap_or_else(|| panic!("{v}"));
    let risk = preview["risk"].to_string();
    assert!(risk.contains("external_send"), "{risk}");
    assert!(
        risk.contains("goes to 2 recipient(s); 1 more are suppressed"),
        "{risk}"
    );
}
