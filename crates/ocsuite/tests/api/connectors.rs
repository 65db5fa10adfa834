//! Connectors against a local OAuth 2.0 server: connect with PKCE, use through the vault
//! (a module task), refresh once under concurrency, refresh refused → expired,
//! reconnect, revoke; no plaintext token at rest or in logs; state forgery and replay;
//! provider faults; isolation between tenants, ciphertext moved between tenants.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fake_idp::{ACCOUNT, FakeIdp, TokenMode};
use crate::helpers::{Db, TestApp, User, captured_logs};
use crate::tasks::{owner, start, wait_for, wait_status};

/// Generates `sqlite` and `postgres` tests running `$name(app, idp)` with the fake
/// provider configured as `acme`, and as `google` with overridden endpoints.
macro_rules! with_idp {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let (app, idp) = super::start_app(crate::helpers::Db::Sqlite).await.expect("app");
                super::$name(app, idp).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some((app, idp)) = super::start_app(crate::helpers::Db::Postgres).await else { return };
                super::$name(app, idp).await;
            }
        }
    )*};
}

async fn start_app(db: Db) -> Option<(TestApp, FakeIdp)> {
    let idp = FakeIdp::start().await;
    let providers = vec![idp.provider("acme"), idp.provider("google")];
    let app = TestApp::start_with(db, |c| c.connector_providers = providers).await?;
    Some((app, idp))
}

with_idp!(
    connect_use_refresh_expire_reconnect_revoke,
    state_is_single_use_bound_and_expiring,
    provider_refusals_and_faults_are_reported,
    tenants_cannot_see_use_or_move_each_others_tokens,
    roles_and_bad_input,
);

fn query(url: &str) -> HashMap<String, String> {
    let u = reqwest::Url::parse(url).unwrap();
    u.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn authorize(app: &TestApp, u: &User, t: &str, provider: &str) -> Value {
    let (s, v) = app
        .as_(u)
        .tenant(t)
        .post(
            &format!("/api/v1/connectors/{provider}/authorize"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

/// The person's trip to the provider: returns the callback query it redirects to.
async fn visit_provider(app: &TestApp, authorization_url: &str) -> String {
    let res = app.http.get(authorization_url).send().await.unwrap();
    assert!(res.status().is_redirection(), "{}", res.status());
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    location.split_once('?').unwrap().1.to_owned()
}

async fn callback(app: &TestApp, u: &User, provider: &str, query: &str) -> (StatusCode, String) {
    let res = app
        .http
        .get(app.url(&format!("/api/v1/connectors/{provider}/callback?{query}")))
        .bearer_auth(&u.token)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let location = res
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    let body = res.text().await.unwrap();
    assert!(!status.is_server_error(), "{status}: {body}");
    (status, location.unwrap_or(body))
}

/// authorize → provider → callback; returns the callback's redirect.
pub async fn connect(app: &TestApp, u: &User, t: &str, provider: &str) -> String {
    let v = authorize(app, u, t, provider).await;
    let q = visit_provider(app, v["authorization_url"].as_str().unwrap()).await;
    let (s, location) = callback(app, u, provider, &q).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{location}");
    location
}

async fn connector(app: &TestApp, u: &User, t: &str, provider: &str) -> Value {
    let (s, v) = app.as_(u).tenant(t).get("/api/v1/connectors").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["provider"] == provider)
        .cloned()
        .unwrap_or_else(|| panic!("{provider} not listed: {v}"))
}

async fn wait_connector(
    app: &TestApp,
    u: &User,
    t: &str,
    provider: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let c = connector(app, u, t, provider).await;
        if done(&c) {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never got there: {c}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every table's rows as text (owner connection on PostgreSQL; the file and its WAL
/// on SQLite).
async fn everything_stored(app: &TestApp) -> String {
    if app.config.is_sqlite() {
        let path = app.config.database_url.trim_start_matches("sqlite://");
        let mut out = String::new();
        for suffix in ["", "-wal"] {
            if let Ok(b) = std::fs::read(format!("{path}{suffix}")) {
                out.push_str(&String::from_utf8_lossy(&b));
            }
        }
        out
    } else {
        use sqlx::{Connection, Row};
        let mut owner =
            sqlx::PgConnection::connect(app.config.migration_database_url.as_deref().unwrap())
                .await
                .unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
        )
        .fetch_all(&mut owner)
        .await
        .unwrap();
        let mut out = String::new();
        for t in tables {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT t::text FROM \"{t}\" t"
            )))
            .fetch_all(&mut owner)
            .await
            .unwrap();
            for r in rows {
                out.push_str(&r.get::<String, _>(0));
                out.push('\n');
            }
        }
        out
    }
}

async fn connect_use_refresh_expire_reconnect_revoke(app: TestApp, idp: FakeIdp) {
    let (u, t) = owner(&app, "ann@acme.test").await;
    let listed = connector(&app, &u, &t, "google").await;
    assert_eq!(listed["status"], "not_connected");
    assert_eq!(
        connector(&app, &u, &t, "acme").await["status"],
        "not_connected"
    );

    let v = authorize(&app, &u, &t, "acme").await;
    let url = v["authorization_url"].as_str().unwrap();
    let q = query(url);
    assert!(url.starts_with(&idp.base), "{url}");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["scope"], "openid email crm.read");
    assert!(q["state"].starts_with(&format!("{t}.")), "{q:?}");
    assert!(q["redirect_uri"].ends_with("/api/v1/connectors/acme/callback"));
    assert_eq!(v["redirect_uri"], q["redirect_uri"].as_str());

    // The first access token is already within the refresh margin, and the token
    // endpoint is slow, so the refresh below overlaps with other callers.
    idp.with(|i| {
        i.code_expires_in = 30;
        i.token_delay_ms = 300;
    });
    let back = visit_provider(&app, url).await;
    let (s, location) = callback(&app, &u, "acme", &back).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(location, "/connectors?provider=acme&connected=1");
    // Replay of the same callback: the state is spent.
    let (s, body) = callback(&app, &u, "acme", &back).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("already used"), "{body}");

    let c = connector(&app, &u, &t, "acme").await;
    assert_eq!(c["account"], ACCOUNT);
    assert_eq!(c["scopes"], json!(["openid", "email", "crm.read"]));
    assert_eq!(c["connected_by"], u.id.as_str());

    // Six tasks and the connect-time sync all need a token at once: one refresh (the
    // slow token endpoint makes them overlap).
    let ids: Vec<String> = futures_util::future::join_all((0..6).map(|_| {
        start(
            &app,
            &u,
            &t,
            "connectors.check",
            json!({"provider": "acme"}),
        )
    }))
    .await;
    for id in &ids {
        let d = wait_status(&app, &u, &t, id, "succeeded").await;
        assert_eq!(d["task"]["result"]["account"], ACCOUNT, "{d}");
    }
    let c = wait_connector(&app, &u, &t, "acme", |c| c["sync_pending"] == false).await;
    assert_eq!(c["status"], "connected", "{c}");
    assert!(c["last_sync_at"].is_string() && c["last_refresh_at"].is_string());
    idp.with(|i| {
        assert_eq!(i.refresh_calls, 1, "exactly one refresh");
        assert_eq!(i.reused_refresh, 0);
        i.token_delay_ms = 0;
    });

    // On demand sync.
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post("/api/v1/connectors/acme/sync", json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert!(v["job_id"].as_str().unwrap().starts_with("job_"));
    wait_connector(&app, &u, &t, "acme", |c| c["sync_pending"] == false).await;

    // The user removes the app at the provider: the next sync finds the grant dead.
    idp.revoke_everything();
    app.as_(&u)
        .tenant(&t)
        .post("/api/v1/connectors/acme/sync", json!({}))
        .await;
    let c = wait_connector(&app, &u, &t, "acme", |c| c["status"] == "expired").await;
    assert!(
        c["last_error"].as_str().unwrap().contains("invalid_grant"),
        "{c}"
    );
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .post("/api/v1/connectors/acme/sync", json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let id = start(
        &app,
        &u,
        &t,
        "connectors.check",
        json!({"provider": "acme"}),
    )
    .await;
    let d = wait_for(&app, &u, &t, &id, 20, |d| d["task"]["status"] == "failed").await;
    assert!(
        d["task"]["error"].as_str().unwrap().contains("reconnect"),
        "{d}"
    );

    // Reconnect.
    idp.with(|i| i.code_expires_in = 3600);
    connect(&app, &u, &t, "acme").await;
    let c = wait_connector(&app, &u, &t, "acme", |c| c["sync_pending"] == false).await;
    assert_eq!(c["status"], "connected", "{c}");
    assert_eq!(c["last_error"], Value::Null);

    // No issued token is stored or logged in plaintext.
    let issued = idp.with(|i| i.issued.clone());
    assert!(issued.len() >= 4, "{issued:?}");
    let stored = everything_stored(&app).await;
    assert!(
        stored.contains("connector.connect"),
        "the search sees the data"
    );
    let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned();
    assert!(
        logs.contains("/api/v1/connectors/acme/callback"),
        "logs are captured"
    );
    for tok in &issued {
        assert!(!stored.contains(tok.as_str()), "token at rest: {tok}");
        assert!(!logs.contains(tok.as_str()), "token in logs: {tok}");
    }

    // Disconnect: revoked at the provider, gone here.
    let (s, v) = app
        .as_(&u)
        .tenant(&t)
        .delete("/api/v1/connectors/acme")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["revoked_at_provider"], true, "{v}");
    let last_refresh = issued.iter().rev().find(|t| t.starts_with("rt-")).unwrap();
    assert!(idp.with(|i| i.revoked.contains(last_refresh)));
    assert_eq!(
        connector(&app, &u, &t, "acme").await["status"],
        "not_connected"
    );
    let (s, _) = app
        .as_(&u)
        .tenant(&t)
        .delete("/api/v1/connectors/acme")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let id = start(
        &app,
        &u,
        &t,
        "connectors.check",
        json!({"provider": "acme"}),
    )
    .await;
    let d = wait_for(&app, &u, &t, &id, 20, |d| d["task"]["status"] == "failed").await;
    assert!(
        d["task"]["error"]
            .as_str()
            .unwrap()
            .contains("no acme account"),
        "{d}"
    );

    let (s, v) = app.as_(&u).tenant(&t).get("/api/v1/audit?limit=500").await;
    assert_eq!(s, StatusCode::OK);
    let actions: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in [
        "connector.connect",
        "connector.refresh",
        "connector.expired",
        "connector.disconnect",
    ] {
        assert!(actions.contains(&a), "{a} not audited: {actions:?}");
    }
}

async fn state_is_single_use_bound_and_expiring(app: TestApp, _idp: FakeIdp) {
    let (ann, a) = owner(&app, "ann@a.test").await;
    let (bob, b) = owner(&app, "bob@b.test").await;

    // Missing or malformed state.
    let (s, body) = callback(&app, &ann, "acme", "code=x").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("state"), "{body}");
    let (s, _) = callback(&app, &ann, "acme", "code=x&state=forged").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let forged = format!("code=x&state={a}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let (s, _) = callback(&app, &ann, "acme", &forged).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Bob's state finished by Ann: refused, and spent.
    let v = authorize(&app, &bob, &b, "acme").await;
    let q = visit_provider(&app, v["authorization_url"].as_str().unwrap()).await;
    let (s, body) = callback(&app, &ann, "acme", &q).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("another user"), "{body}");
    let (s, _) = callback(&app, &bob, "acme", &q).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        connector(&app, &bob, &b, "acme").await["status"],
        "not_connected"
    );

    // A state for one provider presented at another's callback.
    let v = authorize(&app, &ann, &a, "acme").await;
    let q = visit_provider(&app, v["authorization_url"].as_str().unwrap()).await;
    let (s, body) = callback(&app, &ann, "google", &q).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");

    // Expired: age the stored state past its ten minutes.
    let v = authorize(&app, &ann, &a, "acme").await;
    let q = visit_provider(&app, v["authorization_url"].as_str().unwrap()).await;
    let tenant = ocsuite::ids::TenantId::parse(&a).unwrap();
    let mut tx = app.state.store.tenant(&tenant).await.unwrap();
    tx.execute(
        ocsuite::store::sql("UPDATE oauth_states SET expires_at = $1 WHERE tenant_id = $2")
            .bind(chrono::Utc::now() - chrono::Duration::seconds(1))
            .bind(&tenant),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (s, body) = callback(&app, &ann, "acme", &q).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("expired"), "{body}");
    assert_eq!(
        connector(&app, &ann, &a, "acme").await["status"],
        "not_connected"
    );

    // Without a signed-in person the callback does nothing.
    let v = authorize(&app, &ann, &a, "acme").await;
    let q = visit_provider(&app, v["authorization_url"].as_str().unwrap()).await;
    let res = app
        .http
        .get(app.url(&format!("/api/v1/connectors/acme/callback?{q}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // …and the state is still good for its owner.
    let (s, location) = callback(&app, &ann, "acme", &q).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{location}");

    // Unknown provider.
    let (s, _) = callback(&app, &ann, "nope", &q).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .as_(&ann)
        .tenant(&a)
        .post("/api/v1/connectors/nope/authorize", json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn provider_refusals_and_faults_are_reported(app: TestApp, idp: FakeIdp) {
    let (u, t) = owner(&app, "ann@acme.test").await;

    // The person declines at the provider.
    idp.with(|i| i.deny = true);
    let location = connect(&app, &u, &t, "acme").await;
    assert_eq!(location, "/connectors?provider=acme&error=access_denied");
    assert_eq!(
        connector(&app, &u, &t, "acme").await["status"],
        "not_connected"
    );
    idp.with(|i| i.deny = false);

    // Token endpoint down, then answering garbage.
    idp.with(|i| i.mode = Some(TokenMode::Down));
    let location = connect(&app, &u, &t, "acme").await;
    assert_eq!(
        location,
        "/connectors?provider=acme&error=token_exchange_failed"
    );
    let c = connector(&app, &u, &t, "acme").await;
    assert_eq!(c["status"], "error", "{c}");
    assert!(
        c["last_error"].as_str().unwrap().contains("HTTP 503"),
        "{c}"
    );
    idp.with(|i| i.mode = Some(TokenMode::Garbage));
    connect(&app, &u, &t, "acme").await;
    let c = connector(&app, &u, &t, "acme").await;
    assert!(
        c["last_error"]
            .as_str()
            .unwrap()
            .contains("not a valid OAuth response"),
        "{c}"
    );
    // No tokens were stored: the module says so.
    let id = start(
        &app,
        &u,
        &t,
        "connectors.check",
        json!({"provider": "acme"}),
    )
    .await;
    let d = wait_for(&app, &u, &t, &id, 20, |d| d["task"]["status"] == "failed").await;
    assert!(
        d["task"]["error"]
            .as_str()
            .unwrap()
            .contains("no acme account"),
        "{d}"
    );

    // Recovery: a good connect clears the error.
    idp.with(|i| i.mode = None);
    connect(&app, &u, &t, "acme").await;
    let c = connector(&app, &u, &t, "acme").await;
    assert_eq!(c["status"], "connected", "{c}");

    // Refresh hits an outage: error status with the reason, retried, recovers.
    wait_connector(&app, &u, &t, "acme", |c| c["sync_pending"] == false).await;
    let tenant = ocsuite::ids::TenantId::parse(&t).unwrap();
    let mut tx = app.state.store.tenant(&tenant).await.unwrap();
    tx.execute(
        ocsuite::store::sql("UPDATE connectors SET access_expires_at = $1 WHERE tenant_id = $2")
            .bind(chrono::Utc::now())
            .bind(&tenant),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    idp.with(|i| i.mode = Some(TokenMode::Down));
    app.as_(&u)
        .tenant(&t)
        .post("/api/v1/connectors/acme/sync", json!({}))
        .await;
    let c = wait_connector(&app, &u, &t, "acme", |c| c["status"] == "error").await;
    assert!(
        c["last_error"].as_str().unwrap().contains("HTTP 503"),
        "{c}"
    );
    idp.with(|i| i.mode = None);
    let c = wait_connector(&app, &u, &t, "acme", |c| c["status"] == "connected").await;
    assert_eq!(c["last_error"], Value::Null, "{c}");
}

async fn tenants_cannot_see_use_or_move_each_others_tokens(app: TestApp, _idp: FakeIdp) {
    let (ann, a) = owner(&app, "ann@a.test").await;
    let (bob, b) = owner(&app, "bob@b.test").await;
    connect(&app, &ann, &a, "acme").await;
    wait_connector(&app, &ann, &a, "acme", |c| c["sync_pending"] == false).await;

    assert_eq!(
        connector(&app, &bob, &b, "acme").await["status"],
        "not_connected"
    );
    let (s, _) = app
        .as_(&bob)
        .tenant(&b)
        .delete("/api/v1/connectors/acme")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .as_(&bob)
        .tenant(&b)
        .post("/api/v1/connectors/acme/sync", json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Bob cannot act in Ann's tenant at all.
    let (s, _) = app.as_(&bob).tenant(&a).get("/api/v1/connectors").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let id = start(
        &app,
        &bob,
        &b,
        "connectors.check",
        json!({"provider": "acme"}),
    )
    .await;
    let d = wait_for(&app, &bob, &b, &id, 20, |d| d["task"]["status"] == "failed").await;
    assert!(
        d["task"]["error"]
            .as_str()
            .unwrap()
            .contains("no acme account"),
        "{d}"
    );

    // Bob connects too; then Ann's ciphertext is copied over Bob's: it must not decrypt.
    connect(&app, &bob, &b, "acme").await;
    wait_connector(&app, &bob, &b, "acme", |c| c["sync_pending"] == false).await;
    let copy = "UPDATE tenant_secrets SET ciphertext = (SELECT s.ciphertext FROM tenant_secrets s WHERE s.tenant_id = $1 AND s.purpose = 'oauth') WHERE tenant_id = $2 AND purpose = 'oauth'";
    if app.config.is_sqlite() {
        let pool = sqlx::SqlitePool::connect(&app.config.database_url)
            .await
            .unwrap();
        let r = sqlx::query(copy)
            .bind(&a)
            .bind(&b)
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(r.rows_affected(), 1);
    } else {
        use sqlx::Connection;
        let mut owner =
            sqlx::PgConnection::connect(app.config.migration_database_url.as_deref().unwrap())
                .await
                .unwrap();
        let r = sqlx::query(copy)
            .bind(&a)
            .bind(&b)
            .execute(&mut owner)
            .await
            .unwrap();
        assert_eq!(r.rows_affected(), 1);

        // Raw SQL as the runtime role: no tenant set, no connector or state rows.
        let mut rt = sqlx::PgConnection::connect(&app.config.database_url)
            .await
            .unwrap();
        for table in ["connectors", "oauth_states", "tenant_secrets"] {
            let n: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                    .fetch_one(&mut rt)
                    .await
                    .unwrap();
            assert_eq!(n, 0, "{table} visible without a tenant");
        }
        let mut tx = rt.begin().await.unwrap();
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(&b)
            .execute(&mut *tx)
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM connectors WHERE tenant_id = $1")
            .bind(&a)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(n, 0, "B sees A's connector");
        let n: u64 = sqlx::query("UPDATE connectors SET status = 'revoked' WHERE tenant_id = $1")
            .bind(&a)
            .execute(&mut *tx)
            .await
            .unwrap()
            .rows_affected();
        assert_eq!(n, 0);
        tx.rollback().await.unwrap();
    }
    let id = start(
        &app,
        &bob,
        &b,
        "connectors.check",
        json!({"provider": "acme"}),
    )
    .await;
    let d = wait_for(&app, &bob, &b, &id, 20, |d| d["task"]["status"] == "failed").await;
    assert!(
        d["task"]["error"]
            .as_str()
            .unwrap()
            .contains("cannot be decrypted"),
        "{d}"
    );
    // Ann's connection is untouched.
    let id = start(
        &app,
        &ann,
        &a,
        "connectors.check",
        json!({"provider": "acme"}),
    )
    .await;
    wait_status(&app, &ann, &a, &id, "succeeded").await;
}

async fn roles_and_bad_input(app: TestApp, _idp: FakeIdp) {
    let (ann, a) = owner(&app, "ann@a.test").await;
    let member = app.signup("mia@a.test").await;
    app.add_member(&ann, &a, &member, "member").await;
    let (s, v) = app
        .as_(&member)
        .tenant(&a)
        .post("/api/v1/connectors/acme/authorize", json!({}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (_, key) = app.api_key(&ann, &a, "admin").await;
    let (s, v) = app
        .as_(&key)
        .post("/api/v1/connectors/acme/authorize", json!({}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("signed-in"),
        "{v}"
    );
    // Members see the list; the API key too.
    let (s, _) = app.as_(&member).tenant(&a).get("/api/v1/connectors").await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = app.as_(&key).get("/api/v1/connectors").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // A member starting a flow an admin began is refused at the callback too.
    let v = authorize(&app, &ann, &a, "acme").await;
    let q = visit_provider(&app, v["authorization_url"].as_str().unwrap()).await;
    let (s, _) = callback(&app, &member, "acme", &q).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Hostile callback parameters.
    let long = "x".repeat(5000);
    let (s, _) = callback(&app, &ann, "acme", &format!("state={long}&code=y")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = callback(&app, &ann, "acme", "state=%00%ff&code=%3Cscript%3E").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Sync of a provider never connected.
    let (s, _) = app
        .as_(&ann)
        .tenant(&a)
        .post("/api/v1/connectors/acme/sync", json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
