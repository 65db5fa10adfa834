//! Optional TOTP second factor (RFC 6238: SHA-1, 6 digits, 30 s, ±1 step).
//!
//! The seed is encrypted with the platform key, bound to the user's row. A code is
//! accepted once: the matched time step is stored and any code for that step or an
//! earlier one is refused, so a shoulder-surfed code cannot be replayed.

use chrono::Utc;
use rand::RngCore;
use totp_rs::{Builder, Secret, Totp};

use crate::crypto::{Binding, Crypto, KeyScope};
use crate::error::{AppError, Result};
use crate::ids::UserId;
use crate::store::{Tx, sql};

pub fn binding(user: &UserId) -> Binding<'_> {
    Binding {
        purpose: "totp",
        row_id: user.as_str(),
    }
}

fn totp(seed: &[u8], account: &str) -> Result<Totp> {
    Builder::new()
        .with_secret(Secret::from(seed.to_vec()))
        .with_issuer(Some("ocsuite"))
        .with_account_name(account)
        .build()
        .map_err(AppError::internal)
}

pub fn new_seed() -> Vec<u8> {
    let mut s = vec![0u8; 20];
    rand::rng().fill_bytes(&mut s);
    s
}

/// The base32 secret and the `otpauth://` URL an authenticator app scans.
pub fn provisioning(seed: &[u8], account: &str) -> Result<(String, String)> {
    let t = totp(seed, account)?;
    let url = t.to_url().map_err(AppError::internal)?;
    Ok((Secret::from(seed.to_vec()).to_base32(), url))
}

/// The time step `code` matches, if it matches one after `last_step`.
pub fn check(seed: &[u8], code: &str, last_step: Option<i64>) -> Option<i64> {
    let t = totp(seed, "x").ok()?;
    let now = u64::try_from(Utc::now().timestamp()).ok()?;
    let step = i64::try_from(t.check(code.trim(), now)?).ok()?;
    (last_step.is_none_or(|last| step > last)).then_some(step)
}

/// Decrypts the user's seed.
pub fn open_seed(crypto: &Crypto, user: &UserId, ct: &[u8]) -> Result<Vec<u8>> {
    crypto
        .decrypt(KeyScope::Platform, binding(user), ct)
        .map(|p| p.0.clone())
        .map_err(AppError::internal)
}

/// Stores a new, not yet enabled seed.
pub async fn store_pending(
    tx: &mut Tx,
    crypto: &Crypto,
    version: u32,
    user: &UserId,
    seed: &[u8],
) -> Result<()> {
    let ct = crypto.encrypt(KeyScope::Platform, version, binding(user), seed);
    tx.execute(
        sql("UPDATE users SET totp_secret = $1, totp_enabled = $2, totp_last_step = NULL, updated_at = $3 WHERE id = $4")
            .bind(ct)
            .bind(false)
            .bind(Utc::now())
            .bind(user),
    )
    .await?;
    Ok(())
}

/// Records `step` as used (and optionally flips `enabled`); false if a concurrent
/// request already used this step.
pub async fn consume_step(
    tx: &mut Tx,
    user: &UserId,
    step: i64,
    enable: Option<bool>,
) -> Result<bool> {
    let n = match enable {
        Some(on) => tx
            .execute(
                sql("UPDATE users SET totp_last_step = $1, totp_enabled = $2, updated_at = $3 \
                     WHERE id = $4 AND (totp_last_step IS NULL OR totp_last_step < $1)")
                    .bind(step)
                    .bind(on)
                    .bind(Utc::now())
                    .bind(user),
            )
            .await?,
        None => tx
            .execute(
                sql("UPDATE users SET totp_last_step = $1 WHERE id = $2 AND (totp_last_step IS NULL OR totp_last_step < $1)")
                    .bind(step)
                    .bind(user),
            )
            .await?,
    };
    Ok(n > 0)
}

pub async fn clear(tx: &mut Tx, user: &UserId) -> Result<()> {
    tx.execute(
        sql("UPDATE users SET totp_secret = NULL, totp_enabled = $1, totp_last_step = NULL, updated_at = $2 WHERE id = $3")
            .bind(false)
            .bind(Utc::now())
            .bind(user),
    )
    .await?;
    Ok(())
}

/// The code an authenticator app shows at `unix_time` for a base32 secret (tests, support).
pub fn code_at_base32(b32: &str, unix_time: u64) -> Result<String> {
    let seed = Secret::try_from_base32(b32)
        .map_err(|_| AppError::invalid("secret", "not a base32 TOTP secret"))?;
    Ok(totp(seed.as_ref(), "x")?.generate(unix_time).to_string())
}
