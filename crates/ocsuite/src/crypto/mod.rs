//! Envelope-free per-tenant encryption.
//!
//! * Key for (scope, version) = HKDF-SHA256(master key, salt = "ocsuite/kdf/v1",
//!   info = scope ‖ version). A scope is a tenant id, or `platform` for identity
//!   secrets such as TOTP seeds. No derived key is ever stored.
//! * Cipher: AES-256-GCM, 96-bit random nonce per message.
//! * Associated data binds (scope, purpose, row id): a ciphertext copied to another
//!   tenant, another column or another row fails to decrypt.
//! * Wire format: `b"OC"` ‖ version (u32 BE) ‖ nonce (12) ‖ ciphertext+tag. The version
//!   travels with the data, so after `ocsuite keys rotate` old and new ciphertexts are
//!   both readable while re-encryption proceeds: rotation needs no downtime.

pub mod secrets;

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;

use crate::ids::TenantId;

const MAGIC: &[u8; 2] = b"OC";
const HEADER: usize = 2 + 4 + 12;

/// The 32-byte root secret. Never printed; zeroed when dropped.
#[derive(Clone, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }

    /// The key as `OCSUITE_MASTER_KEY` spells it, for a file only its owner reads
    /// (`ocsuite backup --with-master-key`).
    pub fn to_base64(&self) -> String {
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, self.0)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

/// Whose key encrypts a value.
#[derive(Clone, Copy, Debug)]
pub enum KeyScope<'a> {
    Tenant(&'a TenantId),
    Platform,
}

impl KeyScope<'_> {
    fn label(&self) -> &str {
        match self {
            KeyScope::Tenant(t) => t.as_str(),
            KeyScope::Platform => "platform",
        }
    }
}

/// What a ciphertext is bound to besides its scope.
#[derive(Clone, Copy, Debug)]
pub struct Binding<'a> {
    pub purpose: &'a str,
    pub row_id: &'a str,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("ciphertext is malformed")]
    Malformed,
    #[error("decryption failed: wrong key, tenant, purpose or row, or tampered data")]
    Decrypt,
}

/// Decrypted bytes; `Debug` never shows them, and they are zeroed when dropped so a
/// secret does not linger in freed memory.
#[derive(zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct Plaintext(pub Vec<u8>);

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plaintext([{} bytes redacted])", self.0.len())
    }
}

#[derive(Clone, Debug)]
pub struct Crypto {
    master: MasterKey,
}

impl Crypto {
    pub fn new(master: MasterKey) -> Self {
        Self { master }
    }

    fn cipher(&self, scope: KeyScope<'_>, version: u32) -> Aes256Gcm {
        let hk = Hkdf::<Sha256>::new(Some(b"ocsuite/kdf/v1"), &self.master.0);
        let info = format!("{}|v{}", scope.label(), version);
        let mut okm = [0u8; 32];
        // 32 bytes is always a valid HKDF-SHA256 output length.
        let _ = hk.expand(info.as_bytes(), &mut okm);
        let key = Key::<Aes256Gcm>::from(okm);
        okm.fill(0);
        Aes256Gcm::new(&key)
    }

    /// A value only this server can compute for `purpose` and `subject` (HKDF-Expand keyed
    /// by the master key), as URL-safe text. Links that must be recomputed later, such as
    /// an email's unsubscribe link, use it instead of storing a secret per row.
    pub fn derive_token(&self, purpose: &str, subject: &str) -> String {
        let hk = Hkdf::<Sha256>::new(Some(b"ocsuite/tokens/v1"), &self.master.0);
        let mut okm = [0u8; 24];
        // 24 bytes is always a valid HKDF-SHA256 output length.
        let _ = hk.expand(format!("{purpose}|{subject}").as_bytes(), &mut okm);
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, okm)
    }

    fn aad(scope: KeyScope<'_>, binding: Binding<'_>) -> Vec<u8> {
        format!(
            "ocsuite|{}|{}|{}",
            scope.label(),
            binding.purpose,
            binding.row_id
        )
        .into_bytes()
    }

    pub fn encrypt(
        &self,
        scope: KeyScope<'_>,
        version: u32,
        binding: Binding<'_>,
        plaintext: &[u8],
    ) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let aad = Self::aad(scope, binding);
        let ct = self
            .cipher(scope, version)
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            // AES-GCM encryption only fails for messages beyond 64 GiB.
            .unwrap_or_default();
        let mut out = Vec::with_capacity(HEADER + ct.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// The key version a ciphertext was made with.
    pub fn version_of(ciphertext: &[u8]) -> Result<u32, CryptoError> {
        if ciphertext.len() < HEADER + 16 || &ciphertext[..2] != MAGIC {
            return Err(CryptoError::Malformed);
        }
        let mut v = [0u8; 4];
        v.copy_from_slice(&ciphertext[2..6]);
        Ok(u32::from_be_bytes(v))
    }

    pub fn decrypt(
        &self,
        scope: KeyScope<'_>,
        binding: Binding<'_>,
        ciphertext: &[u8],
    ) -> Result<Plaintext, CryptoError> {
        let version = Self::version_of(ciphertext)?;
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&ciphertext[6..HEADER]);
        let aad = Self::aad(scope, binding);
        self.cipher(scope, version)
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &ciphertext[HEADER..],
                    aad: &aad,
                },
            )
            .map(Plaintext)
            .map_err(|_| CryptoError::Decrypt)
    }
}

/// `ocsuite keys rotate`: runs on the owner connection so it can reach every tenant.
pub async fn admin_rotate(
    config: crate::config::Config,
) -> Result<secrets::RotationReport, crate::error::AppError> {
    let key = crate::master_key(&config).map_err(crate::error::AppError::internal)?;
    crate::store::migrate(&config).await?;
    let owner = crate::store::Store::connect(config.owner_database_url(), 2).await?;
    secrets::ensure_initial_version(&owner).await?;
    let report = secrets::rotate(&owner, &Crypto::new(key)).await;
    owner.close().await;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crypto(b: u8) -> Crypto {
        Crypto::new(MasterKey::from_bytes([b; 32]))
    }

    const B: Binding<'static> = Binding {
        purpose: "oauth",
        row_id: "sec_1",
    };

    #[test]
    fn round_trip_and_bindings() {
        let c = crypto(7);
        let (t1, t2) = (TenantId::new(), TenantId::new());
        let ct = c.encrypt(KeyScope::Tenant(&t1), 1, B, b"refresh-token");
        assert_eq!(
            c.decrypt(KeyScope::Tenant(&t1), B, &ct).unwrap().0,
            b"refresh-token"
        );
        assert!(!ct.windows(13).any(|w| w == b"refresh-token"));
        assert_eq!(
            c.decrypt(KeyScope::Tenant(&t2), B, &ct).unwrap_err(),
            CryptoError::Decrypt
        );
        let other_row = Binding {
            purpose: "oauth",
            row_id: "sec_2",
        };
        assert!(c.decrypt(KeyScope::Tenant(&t1), other_row, &ct).is_err());
        assert!(c.decrypt(KeyScope::Platform, B, &ct).is_err());
        assert!(crypto(8).decrypt(KeyScope::Tenant(&t1), B, &ct).is_err());
        let mut tampered = ct.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(c.decrypt(KeyScope::Tenant(&t1), B, &tampered).is_err());
        assert_eq!(
            c.decrypt(KeyScope::Tenant(&t1), B, b"short").unwrap_err(),
            CryptoError::Malformed
        );
    }

    #[test]
    fn versions_give_different_keys_and_both_decrypt() {
        let c = crypto(1);
        let t = TenantId::new();
        let v1 = c.encrypt(KeyScope::Tenant(&t), 1, B, b"x");
        let v2 = c.encrypt(KeyScope::Tenant(&t), 2, B, b"x");
        assert_eq!(Crypto::version_of(&v1).unwrap(), 1);
        assert_eq!(Crypto::version_of(&v2).unwrap(), 2);
        assert_eq!(c.decrypt(KeyScope::Tenant(&t), B, &v1).unwrap().0, b"x");
        assert_eq!(c.decrypt(KeyScope::Tenant(&t), B, &v2).unwrap().0, b"x");
        // Forge the version byte: the key no longer matches.
        let mut forged = v1.clone();
        forged[5] = 2;
        assert!(c.decrypt(KeyScope::Tenant(&t), B, &forged).is_err());
    }

    #[test]
    fn debug_is_redacted() {
        assert!(!format!("{:?}", crypto(3)).contains('3'));
        assert_eq!(
            format!("{:?}", Plaintext(b"abc".to_vec())),
            "Plaintext([3 bytes redacted])"
        );
    }
}
