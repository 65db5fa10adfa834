//! External identity-provider JWTs, validated against a local JWKS (wiremock).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::EncodePrivateKey;
use reqwest::StatusCode;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{Db, TestApp};

const ISSUER: &str = "https://id.example.test/";

fn key() -> p256::SecretKey {
    loop {
        let mut b = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
        if let Ok(k) = p256::SecretKey::from_slice(&b) {
            return k;
        }
    }
}

fn jwk(k: &p256::SecretKey, kid: &str) -> Value {
    let p = k.public_key().to_encoded_point(false);
    json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
           "x": URL_SAFE_NO_PAD.encode(p.x().unwrap()), "y": URL_SAFE_NO_PAD.encode(p.y().unwrap())})
}

fn sign(k: &p256::SecretKey, kid: &str, claims: &Value) -> String {
    let der = k.to_pkcs8_der().unwrap();
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_ec_der(der.as_bytes())).unwrap()
}

fn claims(sub: &str, email: &str, exp_in: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"iss": ISSUER, "sub": sub, "aud": "ocsuite", "iat": now, "exp": now + exp_in,
           "email": email, "email_verified": true, "name": "Idp User"})
}

#[tokio::test]
async fn oidc_jwts_are_verified_against_the_issuer_jwks() {
    let idp = MockServer::start().await;
    let good = key();
    Mock::given(method("GET"))
        .and(path("/jwks"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"keys": [jwk(&good, "k1")]})))
        .mount(&idp)
        .await;
    let jwks = format!("{}/jwks", idp.uri());
    let app = TestApp::start_with(Db::Sqlite, |c| {
        c.oidc_issuer = Some(ISSUER.into());
        c.oidc_audience = Some("ocsuite".into());
        c.oidc_jwks_url = Some(jwks);
    })
    .await
    .unwrap();

    let token = sign(&good, "k1", &claims("idp|42", "Idp@Example.com", 300));
    let (s, me) = app.as_(&token).get("/api/v1/me").await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(me["user"]["email"], "idp@example.com");
    let (_, again) = app
        .as_(sign(
            &good,
            "k1",
            &claims("idp|42", "other@example.com", 300),
        ))
        .get("/api/v1/me")
        .await;
    assert_eq!(
        again["user"]["id"], me["user"]["id"],
        "the subject, not the email, identifies a linked user"
    );
    // It can create a tenant like any user.
    let (s, _) = app
        .as_(&token)
        .post("/api/v1/tenants", json!({"name": "IdP Co"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let forger = key();
    let mut wrong_iss = claims("idp|42", "idp@example.com", 300);
    wrong_iss["iss"] = json!("https://evil.example/");
    let mut wrong_aud = claims("idp|42", "idp@example.com", 300);
    wrong_aud["aud"] = json!("someone-else");
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("idp|42", "idp@example.com", 300),
        &EncodingKey::from_secret(b"k"),
    )
    .unwrap();
    let cases = [
        (
            "forged signature",
            sign(&forger, "k1", &claims("idp|42", "idp@example.com", 300)),
        ),
        (
            "unknown kid",
            sign(&forger, "k2", &claims("idp|42", "idp@example.com", 300)),
        ),
        ("wrong issuer", sign(&good, "k1", &wrong_iss)),
        ("wrong audience", sign(&good, "k1", &wrong_aud)),
        (
            "expired",
            sign(&good, "k1", &claims("idp|42", "idp@example.com", -3600)),
        ),
        ("symmetric alg", hs),
        ("garbage", "a.b.c".to_owned()),
    ];
    for (what, token) in cases {
        let (s, v) = app.as_(&token).get("/api/v1/me").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{what}: {v}");
        assert_eq!(v["error"]["code"], "unauthorized", "{what}");
    }
    // An unverified email does not take over an existing password account.
    app.signup("victim@example.com").await;
    let mut unverified = claims("idp|99", "victim@example.com", 300);
    unverified["email_verified"] = json!(false);
    let (s, _) = app
        .as_(sign(&good, "k1", &unverified))
        .get("/api/v1/me")
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
