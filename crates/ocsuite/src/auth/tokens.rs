//! Bearer secrets: sessions, API keys and invites.
//!
//! Each is 256 random bits, base64url, behind a kind prefix so a leaked string is easy
//! to recognise and scan for. Only a SHA-256 digest is stored: the secret is high
//! entropy, so a fast hash is safe and keeps every authenticated request cheap.
//! API keys and invites carry their tenant id, because they are looked up before any
//! tenant is known and every tenant-table read must name its tenant.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::ids::TenantId;

pub const SESSION_PREFIX: &str = "ocs_s_";
pub const API_KEY_PREFIX: &str = "ocs_k_";
pub const INVITE_PREFIX: &str = "ocs_i_";
/// An operator's invitation to start a company (no tenant yet).
pub const OWNER_INVITE_PREFIX: &str = "ocs_o_";

fn random_secret() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// Hex SHA-256 of a presented secret.
pub fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn new_session_token() -> String {
    format!("{SESSION_PREFIX}{}", random_secret())
}

pub fn new_owner_invite_token() -> String {
    format!("{OWNER_INVITE_PREFIX}{}", random_secret())
}

pub fn new_tenant_token(prefix: &str, tenant: &TenantId) -> String {
    format!("{prefix}{}_{}", tenant.hex(), random_secret())
}

/// The tenant named inside an API key or invite token, if the shape is right.
pub fn tenant_of(prefix: &str, token: &str) -> Option<TenantId> {
    let rest = token.strip_prefix(prefix)?;
    let (hex, secret) = rest.split_once('_')?;
    (secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then_some(())?;
    TenantId::from_hex(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_tokens_round_trip() {
        let t = TenantId::new();
        let k = new_tenant_token(API_KEY_PREFIX, &t);
        assert_eq!(tenant_of(API_KEY_PREFIX, &k), Some(t));
        assert_eq!(tenant_of(INVITE_PREFIX, &k), None);
        assert_eq!(tenant_of(API_KEY_PREFIX, "ocs_k_zz_abc"), None);
        assert_ne!(digest(&k), digest(&new_session_token()));
    }
}
