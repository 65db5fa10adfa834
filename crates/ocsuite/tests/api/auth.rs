//! Sign-up, login, sessions, throttling, TOTP and external identity tokens.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::dual;
use crate::helpers::{Db, PASSWORD, TestApp};

dual!(
    signup_login_logout,
    bad_signup_input,
    session_revocation,
    totp_mfa,
    api_key_lifecycle,
    password_confirmations_count_toward_lockout
);

/// A stolen session cannot guess the password through the endpoints that re-confirm it.
async fn password_confirmations_count_toward_lockout(app: TestApp) {
    let ann = app.signup("guess@example.com").await;
    for _ in 0..app.config.login_max_failures {
        let (s, _) = app
            .as_(&ann)
            .post(
                "/api/v1/me/mfa/totp/setup",
                json!({"password": "wrong guess 123"}),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    // Locked now: even the right password is refused, here and at login.
    let (s, _) = app
        .as_(&ann)
        .post("/api/v1/me/mfa/totp/setup", json!({"password": PASSWORD}))
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let (s, _) = app.login("guess@example.com", PASSWORD).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
}

async fn signup_login_logout(app: TestApp) {
    let res = app
        .http
        .post(app.url("/api/v1/auth/signup"))
        .json(&json!({"email": " Ann@Example.COM ", "password": PASSWORD, "name": "Ann"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("ocsuite_session=ocs_s_"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["user"]["email"], "ann@example.com");
    assert!(body["user"].get("password_hash").is_none());

    // The same email again, in any case → 409.
    let (s, v) = app
        .anon()
        .post(
            "/api/v1/auth/signup",
            json!({"email": "ANN@example.com", "password": PASSWORD, "name": "Ann"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    let (s, v) = app.login("ann@example.com", "wrong password!!").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"]["code"], "unauthorized");
    let (s, v) = app.login("nobody@example.com", PASSWORD).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");

    let (s, v) = app.login("ann@example.com", PASSWORD).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    let (s, me) = app.as_(&token).get("/api/v1/me").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["user"]["email"], "ann@example.com");
    assert_eq!(me["memberships"], json!([]));

    // The cookie authenticates GETs too.
    let res = app
        .http
        .get(app.url("/api/v1/me"))
        .header("cookie", format!("ocsuite_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // A cookie-borne write from a foreign origin is refused (CSRF).
    let res = app
        .http
        .post(app.url("/api/v1/tenants"))
        .header("cookie", format!("ocsuite_session={token}"))
        .header("origin", "https://evil.example")
        .json(&json!({"name": "Evil"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    let (s, _) = app
        .call(
            Method::POST,
            "/api/v1/auth/logout",
            Some(&token),
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = app.as_(&token).get("/api/v1/me").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("log in again")
    );

    let (s, _) = app.anon().get("/api/v1/me").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = app.as_("ocs_s_forged").get("/api/v1/me").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let res = app
        .http
        .get(app.url("/api/v1/me"))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

async fn bad_signup_input(app: TestApp) {
    let cases = [
        (
            json!({"email": "bob", "password": PASSWORD, "name": "Bob"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "email",
        ),
        (
            json!({"email": "bob@example.com", "password": "short", "name": "Bob"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "password",
        ),
        (
            json!({"email": "bob@example.com", "password": "password123", "name": "Bob"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "password",
        ),
        (
            json!({"email": "bob@example.com", "password": PASSWORD, "name": "  "}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            json!({"email": "bob@example.com", "password": PASSWORD}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            json!({"email": 42, "password": PASSWORD, "name": "Bob"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "email",
        ),
        (
            json!({"email": "bob@example.com", "password": PASSWORD, "name": "Bob", "admin": true}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "admin",
        ),
    ];
    for (body, status, mention) in cases {
        let (s, v) = app.anon().post("/api/v1/auth/signup", body.clone()).await;
        assert_eq!(s, status, "{body} → {v}");
        let msg = v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
            + v["error"]["field"].as_str().unwrap_or_default();
        assert!(msg.contains(mention), "{body} → {v}");
    }
    let res = app
        .http
        .post(app.url("/api/v1/auth/signup"))
        .header("content-type", "application/json")
        .body("{\"email\":")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let v: serde_json::Value = res.json().await.unwrap();
    assert_eq!(v["error"]["code"], "malformed_json");
    let res = app
        .http
        .post(app.url("/api/v1/auth/signup"))
        .body("email=a")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = format!(
        "{{\"email\":\"a@b.co\",\"password\":\"{}\",\"name\":\"x\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    // Its own client: the server answers 413 without reading the rest of the body and
    // closes the connection, which must not be handed back to the shared pool.
    let res = reqwest::Client::new()
        .post(app.url("/api/v1/auth/signup"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Hostile strings are data, stored and returned verbatim.
    let (s, v) = app.anon().post("/api/v1/auth/signup", json!({"email": "o'hara@example.com", "password": PASSWORD, "name": "<script>alert(1)</script>'; DROP TABLE users;--"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["user"]["name"],
        "<script>alert(1)</script>'; DROP TABLE users;--"
    );
    let (s, _) = app.login("o'hara@example.com", PASSWORD).await;
    assert_eq!(s, StatusCode::OK);
}

async fn session_revocation(app: TestApp) {
    let ann = app.signup("ann@example.com").await;
    let (_, v) = app.login("ann@example.com", PASSWORD).await;
    let second = v["token"].as_str().unwrap().to_owned();
    let (s, list) = app.as_(&ann).get("/api/v1/sessions").await;
    assert_eq!(s, StatusCode::OK);
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    let other = list.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, _) = app
        .as_(&ann)
        .delete(&format!("/api/v1/sessions/{other}"))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        app.as_(&second).get("/api/v1/me").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.as_(&ann).get("/api/v1/me").await.0, StatusCode::OK);
    // Another user cannot revoke Ann's session.
    let bob = app.signup("bob@example.com").await;
    let (_, v) = app.as_(&ann).get("/api/v1/sessions").await;
    let mine = v[0]["id"].as_str().unwrap().to_owned();
    let (s, _) = app
        .as_(&bob)
        .delete(&format!("/api/v1/sessions/{mine}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(app.as_(&ann).get("/api/v1/me").await.0, StatusCode::OK);
    // Revoke-others keeps the current one.
    let (_, v) = app.login("ann@example.com", PASSWORD).await;
    let third = v["token"].as_str().unwrap().to_owned();
    let (s, v) = app
        .as_(&ann)
        .post("/api/v1/sessions/revoke-others", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["revoked"], 1);
    assert_eq!(
        app.as_(&third).get("/api/v1/me").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.as_(&ann).get("/api/v1/me").await.0, StatusCode::OK);
}

async fn totp_mfa(app: TestApp) {
    let ann = app.signup("ann@example.com").await;
    let (s, _) = app
        .as_(&ann)
        .post(
            "/api/v1/me/mfa/totp/setup",
            json!({"password": "not my password"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = app
        .as_(&ann)
        .post("/api/v1/me/mfa/totp/setup", json!({"password": PASSWORD}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let secret = v["secret"].as_str().unwrap().to_owned();
    assert!(
        v["otpauth_url"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/")
    );
    let (s, _) = app
        .as_(&ann)
        .post("/api/v1/me/mfa/totp/enable", json!({"code": "000000"}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let now = chrono::Utc::now().timestamp() as u64;
    let code = ocsuite::auth::totp::code_at_base32(&secret, now).unwrap();
    let (s, v) = app
        .as_(&ann)
        .post("/api/v1/me/mfa/totp/enable", json!({"code": code}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");

    let (s, v) = app.login("ann@example.com", PASSWORD).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"]["code"], "mfa_required");
    // The code used to enable cannot be replayed.
    let (s, _) = app
        .anon()
        .post(
            "/api/v1/auth/login",
            json!({"email": "ann@example.com", "password": PASSWORD, "totp": code}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let next = ocsuite::auth::totp::code_at_base32(&secret, now + 30).unwrap();
    let login = json!({"email": "ann@example.com", "password": PASSWORD, "totp": next});
    let (s, v) = app.anon().post("/api/v1/auth/login", login.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = app.anon().post("/api/v1/auth/login", login).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a used code must not work twice"
    );
    let (_, me) = app.as_(&ann).get("/api/v1/me").await;
    assert_eq!(me["user"]["mfa_enabled"], true);
    // The seed is stored encrypted, never as the base32 text.
    let mut tx = app.state.store.platform_read().await.unwrap();
    let (ct,): (Vec<u8>,) = tx
        .fetch_one(
            ocsuite::store::sql("SELECT totp_secret FROM users WHERE email = $1")
                .bind("ann@example.com"),
        )
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&ct).contains(&secret));
}

async fn api_key_lifecycle(app: TestApp) {
    let ann = app.signup("ann@example.com").await;
    let t = app.create_tenant(&ann, "Acme").await;
    let (id, key) = app.api_key(&ann, &t, "viewer").await;
    assert!(key.starts_with("ocs_k_"));
    let (s, v) = app.as_(&key).get("/api/v1/members").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // A viewer key cannot write; keys cannot use user-only endpoints.
    let (s, _) = app
        .as_(&key)
        .post("/api/v1/invites", json!({"email": "x@example.com"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        app.as_(&key).get("/api/v1/me").await.0,
        StatusCode::FORBIDDEN
    );
    // The list never shows the secret.
    let (_, list) = app.as_(&ann).tenant(&t).get("/api/v1/api-keys").await;
    assert!(!list.to_string().contains(&key[key.len() - 43..]));
    assert_eq!(list[0]["id"], id.as_str());
    // Stronger-than-creator and owner keys are refused.
    let (s, _) = app
        .as_(&ann)
        .tenant(&t)
        .post("/api/v1/api-keys", json!({"name": "x", "role": "owner"}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = app
        .as_(&ann)
        .tenant(&t)
        .post("/api/v1/api-keys", json!({"name": "x", "role": "boss"}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = app
        .as_(&ann)
        .tenant(&t)
        .delete(&format!("/api/v1/api-keys/{id}"))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = app.as_(&key).get("/api/v1/members").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, _) = app
        .as_(&ann)
        .tenant(&t)
        .delete(&format!("/api/v1/api-keys/{id}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A key with a mangled secret is refused.
    let (_, key2) = app.api_key(&ann, &t, "member").await;
    // (Replacing the last character with another one: the same one would be the key.)
    let last = if key2.ends_with('A') { 'B' } else { 'A' };
    let forged = format!("{}{last}", &key2[..key2.len() - 1]);
    assert_eq!(
        app.as_(&forged).get("/api/v1/members").await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn login_throttling_locks_the_account() {
    let app = TestApp::start_with(Db::Sqlite, |c| c.login_max_failures = 3)
        .await
        .unwrap();
    app.signup("ann@example.com").await;
    for _ in 0..2 {
        assert_eq!(
            app.login("ann@example.com", "wrong password!!").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let res = app
        .http
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": "ann@example.com", "password": "wrong password!!"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    // Even the right password is refused while locked.
    let (s, v) = app.login("ann@example.com", PASSWORD).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["error"]["code"], "rate_limited");
}

#[tokio::test]
async fn auth_routes_are_rate_limited_per_ip() {
    let app = TestApp::start_with(Db::Sqlite, |c| c.rate_limit_auth_per_minute = 3)
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            app.login("x@example.com", "wrong password!!").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let res = app
        .http
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": "x@example.com", "password": "p"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn api_is_rate_limited_per_caller() {
    let app = TestApp::start_with(Db::Sqlite, |c| {
        c.rate_limit_api_per_second = 1;
        c.rate_limit_api_burst = 5;
    })
    .await
    .unwrap();
    let ann = app.signup("ann@example.com").await;
    let bob = app.signup("bob@example.com").await;
    let mut limited = false;
    for _ in 0..8 {
        if app.as_(&ann).get("/api/v1/me").await.0 == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
        }
    }
    assert!(limited, "ann should hit the limit");
    // Another caller is unaffected.
    assert_eq!(app.as_(&bob).get("/api/v1/me").await.0, StatusCode::OK);
}
