//! Password hashing (argon2id, OWASP parameters) and the password policy.
//!
//! Hashing is CPU-heavy by design, so it runs on the blocking pool, never on the
//! async workers that serve other requests.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use crate::error::{AppError, Result};

/// Longest accepted password, in bytes: bounds the hashing cost of hostile input.
pub const MAX_LEN: usize = 256;
pub const MIN_LEN: usize = 10;

const COMMON: &[&str] = &[
    "password",
    "password1",
    "password123",
    "1234567890",
    "12345678910",
    "qwertyuiop",
    "iloveyou12",
    "letmein123",
    "welcome123",
    "admin12345",
    "changeme12",
    "passw0rd12",
];

/// Rejects passwords that are short, overlong, trivially guessable or the email itself.
pub fn check_policy(password: &str, email: &str) -> Result<()> {
    let invalid = |m: &str| Err(AppError::invalid("password", m));
    if password.chars().count() < MIN_LEN {
        return invalid("password must be at least 10 characters");
    }
    if password.len() > MAX_LEN {
        return invalid("password must be at most 256 bytes");
    }
    let lower = password.to_lowercase();
    if COMMON.contains(&lower.as_str()) {
        return invalid("password is too common; choose another");
    }
    let first = password.chars().next();
    if password.chars().all(|c| Some(c) == first) {
        return invalid("password must not repeat one character");
    }
    if lower == email.to_lowercase() || email.split('@').next() == Some(lower.as_str()) {
        return invalid("password must not be your email address");
    }
    Ok(())
}

pub async fn hash(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let h: PasswordHash = Argon2::default()
            .hash_password(password.as_bytes())
            .map_err(AppError::internal)?;
        Ok(h.to_string())
    })
    .await
    .map_err(AppError::internal)?
}

/// Verifies `password` against a stored hash. With no hash (unknown user, or a user
/// who only signs in through an identity provider) it still spends the same time
/// hashing, so response timing does not reveal which emails have accounts.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool> {
    tokio::task::spawn_blocking(move || {
        let argon = Argon2::default();
        match stored.as_deref().map(PasswordHash::new) {
            Some(Ok(h)) => Ok(argon.verify_password(password.as_bytes(), &h).is_ok()),
            Some(Err(e)) => Err(AppError::internal(e)),
            None => {
                let _: Result<PasswordHash, _> = argon.hash_password(password.as_bytes());
                Ok(false)
            }
        }
    })
    .await
    .map_err(AppError::internal)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert!(check_policy("short", "a@b.co").is_err());
        assert!(check_policy("password123", "a@b.co").is_err());
        assert!(check_policy("aaaaaaaaaaaa", "a@b.co").is_err());
        assert!(check_policy("alice@b.co", "alice@b.co").is_err());
        assert!(check_policy(&"x1".repeat(200), "a@b.co").is_err());
        assert!(check_policy("correct horse battery", "a@b.co").is_ok());
    }

    #[tokio::test]
    async fn hash_and_verify() {
        let h = hash("correct horse battery".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(
            verify("correct horse battery".into(), Some(h.clone()))
                .await
                .unwrap()
        );
        assert!(!verify("wrong horse battery".into(), Some(h)).await.unwrap());
        assert!(!verify("anything".into(), None).await.unwrap());
    }
}
