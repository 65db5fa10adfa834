//! Encrypted tenant secrets and online key rotation, through the real store.

use ocsuite::crypto::secrets;
use ocsuite::crypto::{Crypto, MasterKey};
use ocsuite::ids::TenantId;
use reqwest::StatusCode;
use serde_json::json;

use crate::dual;
use crate::helpers::{PASSWORD, TestApp};

dual!(secrets_are_bound_to_their_tenant_and_survive_rotation);

async fn secrets_are_bound_to_their_tenant_and_survive_rotation(app: TestApp) {
    let ann = app.signup("ann@example.com").await;
    let a = TenantId::parse(&app.create_tenant(&ann, "A").await).unwrap();
    let b = TenantId::parse(&app.create_tenant(&ann, "B").await).unwrap();
    let store = &app.state.store;
    let crypto = &app.state.crypto;

    let mut tx = store.tenant(&a).await.unwrap();
    secrets::put(&mut tx, crypto, 1, "oauth", "google", b"refresh-token-A")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.tenant(&b).await.unwrap();
    secrets::put(&mut tx, crypto, 1, "oauth", "google", b"refresh-token-B")
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut tx = store.tenant_read(&a).await.unwrap();
    assert_eq!(
        secrets::get(&mut tx, crypto, "oauth", "google")
            .await
            .unwrap()
            .unwrap()
            .0,
        b"refresh-token-A"
    );
    // Stored bytes are ciphertext.
    let (ct,): (Vec<u8>,) = tx
        .fetch_one(
            ocsuite::store::sql("SELECT ciphertext FROM tenant_secrets WHERE tenant_id = $1")
                .bind(&a),
        )
        .await
        .unwrap();
    assert!(!ct.windows(15).any(|w| w == b"refresh-token-A"));
    drop(tx);
    // A ciphertext moved to another tenant's row does not decrypt.
    let wrong = Crypto::new(MasterKey::from_bytes([9; 32]));
    let mut tx = store.tenant_read(&a).await.unwrap();
    assert!(
        secrets::get(&mut tx, &wrong, "oauth", "google")
            .await
            .is_err()
    );
    drop(tx);

    // Turn on TOTP so a platform secret exists too.
    let (_, v) = app
        .as_(&ann)
        .post("/api/v1/me/mfa/totp/setup", json!({"password": PASSWORD}))
        .await;
    let b32 = v["secret"].as_str().unwrap().to_owned();
    let now = chrono::Utc::now().timestamp() as u64;
    let code = ocsuite::auth::totp::code_at_base32(&b32, now).unwrap();
    assert_eq!(
        app.as_(&ann)
            .post("/api/v1/me/mfa/totp/enable", json!({"code": code}))
            .await
            .0,
        StatusCode::NO_CONTENT
    );

    let report = ocsuite::crypto::admin_rotate(app.config.clone())
        .await
        .unwrap();
    assert_eq!(report.new_version, 2);
    assert_eq!(report.tenant_secrets, 2);
    assert_eq!(report.user_secrets, 1);
    let mut tx = store.tenant_read(&a).await.unwrap();
    assert_eq!(
        secrets::get(&mut tx, crypto, "oauth", "google")
            .await
            .unwrap()
            .unwrap()
            .0,
        b"refresh-token-A"
    );
    let (v,): (i64,) = tx
        .fetch_one(
            ocsuite::store::sql("SELECT key_version FROM tenant_secrets WHERE tenant_id = $1")
                .bind(&a),
        )
        .await
        .unwrap();
    assert_eq!(v, 2);
    drop(tx);
    // New secrets use the new version; login with TOTP still works after rotation.
    let mut tx = store.platform_read().await.unwrap();
    assert_eq!(secrets::current_version(&mut tx).await.unwrap(), 2);
    drop(tx);
    let next = ocsuite::auth::totp::code_at_base32(&b32, now + 30).unwrap();
    let (s, v) = app
        .anon()
        .post(
            "/api/v1/auth/login",
            json!({"email": "ann@example.com", "password": PASSWORD, "totp": next}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let again = ocsuite::crypto::admin_rotate(app.config.clone())
        .await
        .unwrap();
    assert_eq!((again.new_version, again.tenant_secrets), (3, 2));
}
