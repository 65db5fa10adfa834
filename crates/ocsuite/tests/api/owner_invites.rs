//! Owner invites: an operator invites someone to start a company on a plan; the email
//! carries the link; accepting it, signed in as that address, creates the company with
//! them as owner on the plan, once. Expired, withdrawn and used invites are refused.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Db, TestApp};

fn token_of(link: &str) -> String {
    link.rsplit('/').next().unwrap().to_owned()
}

async fn invite(app: &TestApp, root: &str, email: &str, company: &str, plan: &str) -> Value {
    let (s, v) = app
        .as_(root)
        .post(
            "/api/v1/admin/owner-invites",
            json!({"email": email, "company_name": company, "plan": plan}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v
}

async fn with_smtp(db: Db) -> Option<(TestApp, crate::helpers::Inbox)> {
    let (port, inbox) = crate::helpers::smtp_sink().await;
    let app = TestApp::start_with(db, |c| {
        c.smtp_url = Some(ocsuite::config::Secret::new(format!(
            "smtp://127.0.0.1:{port}"
        )));
        c.smtp_from = "ocsuite <hello@ocsuite.test>".into();
        c.public_url = Some("https://app.ocsuite.test".into());
    })
    .await?;
    Some((app, inbox))
}

async fn an_invite_creates_the_company_with_its_owner_on_the_plan(db: Db) {
    let Some((app, inbox)) = with_smtp(db).await else {
        return;
    };
    let root = app.super_admin("root@ops.example").await;
    let v = invite(&app, &root, " Dana@Example.COM ", "Dana's Bakery", "pro").await;
    assert_eq!(v["email"], "dana@example.com");
    assert_eq!(v["status"], "pending");
    let link = v["link"].as_str().unwrap().to_owned();
    assert!(
        link.starts_with("https://app.ocsuite.test/owner-invite/ocs_o_"),
        "{link}"
    );
    let token = token_of(&link);

    // The branded email goes out through the outbox with the link.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if !inbox.lock().unwrap().is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no email was sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (to, data) = inbox.lock().unwrap()[0].clone();
    assert!(to[0].contains("dana@example.com"), "{to:?}");
    assert!(data.contains("Dana's Bakery"), "{data}");
    assert!(
        data.contains(&token[..20]),
        "the link is in the email: {data}"
    );

    // The link's page offers a sign-up with the address fixed.
    let page = app
        .http
        .get(app.url(&format!("/owner-invite/{token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("value=\"dana@example.com\" readonly"),
        "{html}"
    );
    assert!(html.contains("Dana&#x27;s Bakery") || html.contains("Dana&#39;s Bakery"));

    // Someone else, signed in, cannot accept it.
    let eve = app.signup("eve@example.com").await;
    let path = format!("/api/v1/owner-invites/{token}/accept");
    let (s, v) = app.as_(&eve).post(&path, json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("dana@example.com")
    );

    // Dana signs up and accepts: her company, on pro, with her as owner.
    let dana = app.signup("dana@example.com").await;
    let (s, t) = app.as_(&dana).post(&path, json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    assert_eq!(t["name"], "Dana's Bakery");
    assert_eq!(t["role"], "owner");
    let tenant = t["id"].as_str().unwrap().to_owned();
    let (s, u) = app.as_(&dana).tenant(&tenant).get("/api/v1/usage").await;
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(u["plan"], "pro");
    let (_, members) = app.as_(&dana).tenant(&tenant).get("/api/v1/members").await;
    assert_eq!(members[0]["email"], "dana@example.com");
    assert_eq!(members[0]["role"], "owner");

    // Used once: a second acceptance (hers or anyone's) is refused and makes nothing.
    let (s, _) = app.as_(&dana).post(&path, json!({})).await;
    assert_eq!(s, StatusCode::GONE);
    let (_, mine) = app.as_(&dana).get("/api/v1/tenants").await;
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");

    // The operator sees it accepted, with the company it made.
    let (s, list) = app.as_(&root).get("/api/v1/admin/owner-invites").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["items"][0]["status"], "accepted");
    assert_eq!(list["items"][0]["created_tenant"], tenant.as_str());
    let html = app
        .http
        .get(app.url(&format!("/owner-invite/{token}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("was already used"), "{html}");
}

async fn withdrawn_expired_and_bad_invites_are_refused(db: Db) {
    let Some(app) = TestApp::start(db).await else {
        return;
    };
    let root = app.super_admin("root@ops2.example").await;
    let (s, _) = app
        .as_(&root)
        .post(
            "/api/v1/admin/owner-invites",
            json!({"email": "not-an-email", "company_name": "X"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, v) = app
        .as_(&root)
        .post(
            "/api/v1/admin/owner-invites",
            json!({"email": "a@b.example", "company_name": "  "}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "company_name");
    let (s, _) = app
        .as_(&root)
        .post(
            "/api/v1/admin/owner-invites",
            json!({"email": "a@b.example", "company_name": "X", "plan": "platinum"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // Only operators find the routes.
    let someone = app.signup("someone@b.example").await;
    let (s, _) = app
        .as_(&someone)
        .post(
            "/api/v1/admin/owner-invites",
            json!({"email": "a@b.example", "company_name": "X"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app.as_(&someone).get("/api/v1/admin/owner-invites").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Withdrawn: refused, and cannot be withdrawn twice.
    let v = invite(&app, &root, "gil@b.example", "Gil Co", "free").await;
    let id = v["id"].as_str().unwrap().to_owned();
    let token = token_of(v["link"].as_str().unwrap());
    let (s, w) = app
        .as_(&root)
        .delete(&format!("/api/v1/admin/owner-invites/{id}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{w}");
    assert_eq!(w["status"], "revoked");
    let (s, _) = app
        .as_(&root)
        .delete(&format!("/api/v1/admin/owner-invites/{id}"))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let gil = app.signup("gil@b.example").await;
    let (s, _) = app
        .as_(&gil)
        .post(&format!("/api/v1/owner-invites/{token}/accept"), json!({}))
        .await;
    assert_eq!(s, StatusCode::GONE);

    // Expired.
    let v = invite(&app, &root, "gil@b.example", "Gil Co", "free").await;
    let token = token_of(v["link"].as_str().unwrap());
    let mut tx = app.state.store.platform().await.unwrap();
    tx.execute(
        ocsuite::store::sql("UPDATE owner_invites SET expires_at = $1 WHERE id = $2")
            .bind(chrono::Utc::now() - chrono::Duration::minutes(1))
            .bind(v["id"].as_str().unwrap()),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (s, e) = app
        .as_(&gil)
        .post(&format!("/api/v1/owner-invites/{token}/accept"), json!({}))
        .await;
    assert_eq!(s, StatusCode::GONE, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("expired"));

    // Unknown and malformed tokens, unknown ids, and no sign-in.
    for t in ["ocs_o_nothing", "nope", "ocs_i_abc"] {
        let (s, _) = app
            .as_(&gil)
            .post(&format!("/api/v1/owner-invites/{t}/accept"), json!({}))
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{t}");
    }
    let (s, _) = app
        .as_(&root)
        .delete("/api/v1/admin/owner-invites/inv_0123456789abcdef0123456789abcdef")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .anon()
        .post(&format!("/api/v1/owner-invites/{token}/accept"), json!({}))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let page = app
        .http
        .get(app.url("/owner-invite/ocs_o_nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::NOT_FOUND);
    let (_, mine) = app.as_(&gil).get("/api/v1/tenants").await;
    assert_eq!(
        mine.as_array().unwrap().len(),
        0,
        "no company was made: {mine}"
    );
}

mod an_invite_creates_the_company {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::an_invite_creates_the_company_with_its_owner_on_the_plan(crate::helpers::Db::Sqlite)
            .await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::an_invite_creates_the_company_with_its_owner_on_the_plan(
            crate::helpers::Db::Postgres,
        )
        .await;
    }
}

mod bad_invites {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::withdrawn_expired_and_bad_invites_are_refused(crate::helpers::Db::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::withdrawn_expired_and_bad_invites_are_refused(crate::helpers::Db::Postgres).await;
    }
}
