//! Outgoing webhooks: Standard Webhooks signatures verified here by recomputing the
//! HMAC-SHA256, the test event and the delivery log, alerts by category, retries with
//! backoff into the `deliver-webhook-dlq` queue against a sink that answers 500 (the
//! trigger keeps working), the plain `{"text": …}` format for Slack- and Teams-style
//! endpoints, bad input, the SSRF guard, and isolation.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::dual;
use crate::helpers::{Db, TestApp, User};
use crate::tasks::owner;
use crate::triggers::{alert_trigger, fire, raise, until};

// ---- Helpers (also used by alerts.rs) ------------------------------------------------

/// A local endpoint that answers every POST with `status`.
pub async fn sink(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(status))
        .mount(&server)
        .await;
    server
}

/// What the endpoint received, in order.
pub async fn received(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap()
}

/// Registers an endpoint; returns its id and its secret (shown this once).
pub async fn webhook(app: &TestApp, u: &User, t: &str, body: Value) -> (String, String) {
    let (s, v) = app.as_(u).tenant(t).post("/api/v1/webhooks", body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["webhook"]["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("whk_"), "{v}");
    (id, v["secret"].as_str().unwrap().to_owned())
}

/// The endpoint's delivery log, newest first.
pub async fn deliveries(app: &TestApp, u: &User, t: &str, id: &str) -> Vec<Value> {
    let (s, v) = app
        .as_(u)
        .tenant(t)
        .get(&format!("/api/v1/webhooks/{id}/deliveries"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["deliveries"].as_array().unwrap().clone()
}

/// Waits until the endpoint has `n` deliveries and the newest is `status`.
async fn wait_delivery(
    app: &TestApp,
    u: &User,
    t: &str,
    id: &str,
    n: usize,
    status: &str,
) -> Vec<Value> {
    until(
        60,
        &format!("{n} deliveries, the newest {status}"),
        async || {
            let d = deliveries(app, u, t, id).await;
            if d.len() == n && d[0]["status"] == status {
                Ok(d)
            } else {
                Err(Value::Array(d))
            }
        },
    )
    .await
}

fn header(r: &Request, name: &str) -> String {
    r.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// `v1,` + base64(HMAC-SHA256(base64-decoded secret, "{id}.{timestamp}.{body}")).
fn sign(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Verifies a request the way a Standard Webhooks receiver does; returns its JSON body.
fn verify(secret: &str, r: &Request) -> Value {
    let (id, ts, sig) = (
        header(r, "webhook-id"),
        header(r, "webhook-timestamp"),
        header(r, "webhook-signature"),
    );
    let expected = sign(secret, &id, &ts, &r.body);
    // The header may carry several space-separated signatures.
    assert!(
        sig.split(' ').any(|s| s == expected),
        "signature {sig} does not verify (expected {expected})"
    );
    let age = chrono::Utc::now().timestamp() - ts.parse::<i64>().unwrap();
    assert!(age.abs() <= 300, "timestamp {ts} is {age} s off");
    // Tampering with the body or the time breaks it.
    assert_ne!(sign(secret, &id, &ts, b"{\"type\":\"forged\"}"), expected);
    let later = (ts.parse::<i64>().unwrap() + 1).to_string();
    assert_ne!(sign(secret, &id, &later, &r.body), expected);
    serde_json::from_slice(&r.body).unwrap()
}

// ---- Tests ---------------------------------------------------------------------------

dual!(
    deliveries_are_signed_logged_and_filtered_by_category,
    a_failing_endpoint_is_retried_then_dead_lettered,
    text_endpoints_get_a_plain_message,
    bad_input_and_roles,
    webhooks_are_isolated,
);

async fn deliveries_are_signed_logged_and_filtered_by_category(app: TestApp) {
    let (u, t) = owner(&app, "hooks@whk.example").await;
    let hook = sink(200).await;
    let url = format!("{}/hooks/ocsuite", hook.uri());
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(
            "/api/v1/webhooks",
            json!({"url": url, "format": "standard", "categories": ["alerts.critical"], "description": "Ops pager"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let w = &v["webhook"];
    let id = w["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (
            w["url"].as_str(),
            w["format"].as_str(),
            w["description"].as_str(),
            w["enabled"].as_bool()
        ),
        (
            Some(url.as_str()),
            Some("standard"),
            Some("Ops pager"),
            Some(true)
        ),
        "{v}"
    );
    assert_eq!(w["categories"], json!(["alerts.critical"]));
    let secret = v["secret"].as_str().unwrap().to_owned();
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    assert!(key.len() >= 24, "{secret}");
    // The secret is shown once: never in the list.
    let (s, list) = app.as_(&u).tenant(&t).get("/api/v1/webhooks").await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert!(
        list["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == id.as_str()),
        "{list}"
    );
    let b64 = secret.strip_prefix("whsec_").unwrap();
    assert!(!list.to_string().contains(b64), "{list}");

    // The test event.
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post(&format!("/api/v1/webhooks/{id}/test"), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let delivery = v["delivery"]["id"].as_str().unwrap().to_owned();
    let d = wait_delivery(&app, &u, &t, &id, 1, "delivered").await;
    assert_eq!(d[0]["id"], delivery.as_str());
    assert_eq!(
        (d[0]["attempts"].as_i64(), d[0]["response_status"].as_i64()),
        (Some(1), Some(200)),
        "{d:?}"
    );
    assert!(
        d[0]["duration_ms"].is_number()
            && d[0]["delivered_at"].is_string()
            && d[0]["error"].is_null(),
        "{d:?}"
    );
    let r = received(&hook).await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].url.path(), "/hooks/ocsuite");
    assert_eq!(header(&r[0], "webhook-id"), delivery);
    assert!(header(&r[0], "content-type").starts_with("application/json"));
    let body = verify(&secret, &r[0]);
    assert_eq!(body["type"], d[0]["event_type"], "{body}");
    assert!(
        body["timestamp"].is_string() && body["data"].is_object(),
        "{body}"
    );

    // A critical alert goes out signed; a warning is not in its categories.
    let alert = raise(&app, &u, &t, "Server down", "critical").await;
    let d = wait_delivery(&app, &u, &t, &id, 2, "delivered").await;
    assert_eq!(d[0]["event_type"], "alert.raised");
    let r = received(&hook).await;
    assert_eq!(r.len(), 2);
    let body = verify(&secret, &r[1]);
    assert_eq!(body["type"], "alert.raised");
    assert!(body["data"].to_string().contains(&alert), "{body}");
    assert!(body["data"].to_string().contains("Server down"), "{body}");
    assert_ne!(header(&r[0], "webhook-id"), header(&r[1], "webhook-id"));
    raise(&app, &u, &t, "Disk at 80%", "warning").await;
    assert_eq!(deliveries(&app, &u, &t, &id).await.len(), 2);
}

async fn a_failing_endpoint_is_retried_then_dead_lettered(app: TestApp) {
    let (u, t) = owner(&app, "retry@whk.example").await;
    let hook = sink(500).await;
    let (id, secret) = webhook(&app, &u, &t, json!({"url": format!("{}/down", hook.uri()), "format": "standard", "categories": ["alerts.critical"]})).await;
    let trg = alert_trigger(&app, &u, &t, "Database unreachable", "critical").await;
    let run = fire(&app, &u, &t, &trg).await;
    assert_eq!(
        run["status"], "succeeded",
        "the endpoint does not hold up the trigger: {run}"
    );

    let d = wait_delivery(&app, &u, &t, &id, 1, "failed").await;
    assert_eq!(
        (d[0]["attempts"].as_i64(), d[0]["response_status"].as_i64()),
        (Some(6), Some(500)),
        "{d:?}"
    );
    assert!(d[0]["error"].as_str().unwrap().contains("500"), "{d:?}");
    assert!(d[0]["delivered_at"].is_null());
    // Six signed attempts, one message id (receivers de-duplicate on it).
    let r = received(&hook).await;
    assert_eq!(r.len(), 6);
    for attempt in &r {
        assert_eq!(header(attempt, "webhook-id"), d[0]["id"].as_str().unwrap());
        verify(&secret, attempt);
    }
    // Parked in the dead-letter queue for an admin.
    let (_, dead) = app.as_(&u).tenant(&t).get("/api/v1/queues/dead").await;
    let job = dead["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["queue"] == "deliver-webhook-dlq")
        .unwrap_or_else(|| panic!("{dead}"));
    assert_eq!(job["attempts"], 6, "{job}");
    assert!(
        job["payload"]
            .to_string()
            .contains(d[0]["id"].as_str().unwrap()),
        "{job}"
    );

    // The trigger keeps working.
    let run = fire(&app, &u, &t, &trg).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(run["output"]["alert_id"].is_string(), "{run}");
    assert_eq!(deliveries(&app, &u, &t, &id).await.len(), 2);
}

async fn text_endpoints_get_a_plain_message(app: TestApp) {
    let (u, t) = owner(&app, "slack@whk.example").await;
    let hook = sink(200).await;
    let (id, _) = webhook(&app, &u, &t, json!({"url": format!("{}/services/T000/B000/XXXX", hook.uri()), "format": "text", "categories": ["alerts.warning"]})).await;
    raise(&app, &u, &t, "Stock running low", "warning").await;
    let d = wait_delivery(&app, &u, &t, &id, 1, "delivered").await;
    assert_eq!(d[0]["event_type"], "alert.raised");
    let r = received(&hook).await;
    assert_eq!(r.len(), 1);
    let body: Value = serde_json::from_slice(&r[0].body).unwrap();
    assert_eq!(body.as_object().unwrap().len(), 1, "only text: {body}");
    assert!(
        body["text"].as_str().unwrap().contains("Stock running low"),
        "{body}"
    );
    // The test event is plain text too.
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .post(&format!("/api/v1/webhooks/{id}/test"), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    wait_delivery(&app, &u, &t, &id, 2, "delivered").await;
    let body: Value = serde_json::from_slice(&received(&hook).await[1].body).unwrap();
    assert!(
        body["text"].as_str().is_some_and(|s| !s.is_empty()),
        "{body}"
    );
}

async fn bad_input_and_roles(app: TestApp) {
    let (u, t) = owner(&app, "badhook@whk.example").await;
    let hook = sink(200).await;
    let good = format!("{}/hook", hook.uri());
    for body in [
        json!({"url": "not a url", "format": "standard", "categories": ["alerts.critical"]}),
        json!({"url": "ftp://files.example/hook", "format": "standard", "categories": ["alerts.critical"]}),
        json!({"url": good, "format": "xml", "categories": ["alerts.critical"]}),
        json!({"url": good, "format": "standard", "categories": ["alerts.urgent"]}),
        json!({"format": "standard", "categories": ["alerts.critical"]}),
    ] {
        let (s, v) = app
            .as_(&u)
            .tenant(&t)
            .post("/api/v1/webhooks", body.clone())
            .await;
        assert!(
            s == StatusCode::UNPROCESSABLE_ENTITY || s == StatusCode::BAD_REQUEST,
            "{body}: {s} {v}"
        );
    }
    let res = app
        .http
        .post(app.url("/api/v1/webhooks"))
        .bearer_auth(&u.token)
        .header("x-tenant-id", &t)
        .header("content-type", "application/json")
        .body("{\"url\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let (_, list) = app.as_(&u).tenant(&t).get("/api/v1/webhooks").await;
    assert_eq!(list["webhooks"], json!([]), "nothing refused was stored");

    // Members read; only admins write.
    let (id, _) = webhook(
        &app,
        &u,
        &t,
        json!({"url": good, "format": "standard", "categories": ["alerts.info"]}),
    )
    .await;
    let mem = app.signup("member@whk.example").await;
    app.add_member(&u, &t, &mem, "member").await;
    let (s, _) = app.as_(&mem).tenant(&t).get("/api/v1/webhooks").await;
    assert_eq!(s, StatusCode::OK);
    assert!(deliveries(&app, &mem, &t, &id).await.is_empty());
    for (m, path, body) in [
        (
            Method::POST,
            "/api/v1/webhooks".to_owned(),
            Some(json!({"url": good, "format": "standard", "categories": ["alerts.info"]})),
        ),
        (Method::DELETE, format!("/api/v1/webhooks/{id}"), None),
        (
            Method::POST,
            format!("/api/v1/webhooks/{id}/test"),
            Some(json!({})),
        ),
    ] {
        let (s, v) = app
            .call(m.clone(), &path, Some(&mem.token), Some(&t), body)
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{m} {path}: {v}");
    }
    assert!(received(&hook).await.is_empty());

    // Delete; then it is gone.
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .delete(&format!("/api/v1/webhooks/{id}"))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for (m, path) in [
        (Method::DELETE, format!("/api/v1/webhooks/{id}")),
        (Method::POST, format!("/api/v1/webhooks/{id}/test")),
        (Method::GET, format!("/api/v1/webhooks/{id}/deliveries")),
        (
            Method::GET,
            "/api/v1/webhooks/whk_nope/deliveries".to_owned(),
        ),
        (
            Method::POST,
            "/api/v1/webhooks/whk_00000000000000000000000000000000/test".to_owned(),
        ),
    ] {
        let (s, v) = app
            .call(m.clone(), &path, Some(&u.token), Some(&t), Some(json!({})))
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{m} {path}: {v}");
    }
    let (_, list) = app.as_(&u).tenant(&t).get("/api/v1/webhooks").await;
    assert_eq!(list["webhooks"], json!([]));
}

/// With private networks off (production), internal addresses are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_addresses_are_refused_when_private_networks_are_off() {
    let app = TestApp::start_with(Db::Sqlite, |c| c.mcp_allow_private_networks = Some(false))
        .await
        .unwrap();
    let (u, t) = owner(&app, "ssrf@whk.example").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.5/hook",
        "http://[::1]/hook",
    ] {
        let (s, v) = app
            .as_(&u)
            .tenant(&t)
            .post(
                "/api/v1/webhooks",
                json!({"url": url, "format": "standard", "categories": ["alerts.critical"]}),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {v}");
        assert_eq!(v["error"]["code"], "url_not_allowed", "{url}: {v}");
    }
    let (_, list) = app.as_(&u).tenant(&t).get("/api/v1/webhooks").await;
    assert_eq!(list["webhooks"], json!([]));
}

async fn webhooks_are_isolated(app: TestApp) {
    let (a, ta) = owner(&app, "a@iso-whk.example").await;
    let (b, tb) = owner(&app, "b@iso-whk.example").await;
    let (_, b_key) = app.api_key(&b, &tb, "admin").await;
    let (a_hook, b_hook) = (sink(200).await, sink(200).await);
    let all = json!(["alerts.critical", "alerts.warning", "alerts.info"]);
    let a_url = format!("{}/a-only", a_hook.uri());
    let (a_id, a_secret) = webhook(
        &app,
        &a,
        &ta,
        json!({"url": a_url, "format": "standard", "categories": all}),
    )
    .await;
    let (b_id, _) = webhook(
        &app,
        &b,
        &tb,
        json!({"url": format!("{}/b", b_hook.uri()), "format": "standard", "categories": all}),
    )
    .await;

    // A's alert reaches A's endpoint only.
    raise(&app, &a, &ta, "A only", "critical").await;
    wait_delivery(&app, &a, &ta, &a_id, 1, "delivered").await;
    verify(&a_secret, &received(&a_hook).await[0]);
    assert!(received(&b_hook).await.is_empty());
    assert!(deliveries(&app, &b, &tb, &b_id).await.is_empty());

    for token in [b.token.as_str(), b_key.as_str()] {
        for (m, path) in [
            (Method::DELETE, format!("/api/v1/webhooks/{a_id}")),
            (Method::POST, format!("/api/v1/webhooks/{a_id}/test")),
            (Method::GET, format!("/api/v1/webhooks/{a_id}/deliveries")),
        ] {
            for tenant in [&tb, &ta] {
                let (s, v) = app
                    .call(m.clone(), &path, Some(token), Some(tenant), Some(json!({})))
                    .await;
                assert_eq!(s, StatusCode::NOT_FOUND, "{m} {path} as B in {tenant}: {v}");
            }
        }
        let (_, list) = app.as_(token).tenant(&tb).get("/api/v1/webhooks").await;
        let listed = list.to_string();
        assert!(
            !listed.contains(&a_id) && !listed.contains("a-only"),
            "{listed}"
        );
        let (s, _) = app.as_(token).tenant(&ta).get("/api/v1/webhooks").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    // Nothing of A's changed, and nothing was sent for B.
    assert_eq!(received(&a_hook).await.len(), 1);
    assert_eq!(deliveries(&app, &a, &ta, &a_id).await.len(), 1);
    let (_, list) = app.as_(&a).tenant(&ta).get("/api/v1/webhooks").await;
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 1);
    crate::trigger_metrics::rls_covers_the_new_tables(&app, &ta, &tb).await;
}
