//! Users: platform identity, shared by every tenant the user belongs to.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::error::{AppError, Result, is_unique_violation};
use crate::ids::UserId;
use crate::store::{Tx, sql};

#[derive(Clone, sqlx::FromRow)]
pub struct UserRow {
    #[sqlx(try_from = "String")]
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub password_hash: Option<String>,
    pub is_super_admin: bool,
    pub totp_secret: Option<Vec<u8>>,
    pub totp_enabled: bool,
    pub totp_last_step: Option<i64>,
    pub failed_logins: i32,
    pub locked_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A user as the API shows them.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct UserOut {
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub mfa_enabled: bool,
    pub is_super_admin: bool,
    pub created_at: DateTime<Utc>,
}

impl From<UserRow> for UserOut {
    fn from(u: UserRow) -> Self {
        Self {
            id: u.id,
            email: u.email,
            name: u.name,
            mfa_enabled: u.totp_enabled,
            is_super_admin: u.is_super_admin,
            created_at: u.created_at,
        }
    }
}

macro_rules! user_columns {
    () => {
        "id, email, name, password_hash, is_super_admin, totp_secret, totp_enabled, totp_last_step, failed_logins, locked_until, created_at"
    };
}

/// Lower-cases and checks an email address; the message says what is wrong.
pub fn normalize_email(raw: &str) -> Result<String> {
    let email = raw.trim().to_lowercase();
    let bad = |m: &str| Err(AppError::invalid("email", m));
    if email.is_empty() {
        return bad("email is required");
    }
    if email.len() > 254 {
        return bad("email must be at most 254 characters");
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return bad("email must contain @, e.g. name@example.com");
    };
    if local.is_empty() || local.len() > 64 || local.contains('@') {
        return bad("email has an invalid part before @");
    }
    if domain.len() < 3
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
        || !domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return bad("email has an invalid domain after @");
    }
    if email
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "<>()[]\\,;:\"".contains(c))
    {
        return bad("email contains characters that are not allowed");
    }
    Ok(email)
}

/// Trims a display name and checks its length and characters.
pub fn clean_name(field: &'static str, raw: &str, max: usize) -> Result<String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(AppError::invalid(field, format!("{field} is required")));
    }
    if name.chars().count() > max {
        return Err(AppError::invalid(
            field,
            format!("{field} must be at most {max} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(AppError::invalid(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(name.to_owned())
}

pub async fn create(
    tx: &mut Tx,
    email: &str,
    name: &str,
    password_hash: Option<String>,
    super_admin: bool,
) -> Result<UserRow> {
    let id = UserId::new();
    let now = Utc::now();
    tx.execute(
        sql("INSERT INTO users (id, email, name, password_hash, is_super_admin, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)")
            .bind(&id)
            .bind(email)
            .bind(name)
            .bind(password_hash)
            .bind(super_admin)
            .bind(now),
    )
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            AppError::Conflict("an account with this email already exists; log in instead".into())
        } else {
            e.into()
        }
    })?;
    find(tx, &id).await?.ok_or(AppError::NotFound("user"))
}

pub async fn find(tx: &mut Tx, id: &UserId) -> Result<Option<UserRow>> {
    Ok(tx
        .fetch_optional(
            sql(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE id = $1"
            ))
            .bind(id),
        )
        .await?)
}

pub async fn find_by_email(tx: &mut Tx, email: &str) -> Result<Option<UserRow>> {
    Ok(tx
        .fetch_optional(
            sql(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE email = $1"
            ))
            .bind(email),
        )
        .await?)
}

/// Counts a failed login; past `max` failures the account locks for 30 s, doubling
/// with each further failure up to 15 minutes. Returns the lock expiry, if any.
pub async fn record_failure(
    tx: &mut Tx,
    user: &UserRow,
    max: u32,
) -> Result<Option<DateTime<Utc>>> {
    // Increment in SQL so concurrent wrong guesses on several nodes all count.
    tx.execute(
        sql("UPDATE users SET failed_logins = failed_logins + 1 WHERE id = $1").bind(&user.id),
    )
    .await?;
    let (failures,): (i32,) = tx
        .fetch_one(sql("SELECT failed_logins FROM users WHERE id = $1").bind(&user.id))
        .await?;
    let locked_until = (failures as u32 >= max).then(|| {
        let over = (failures as u32 - max).min(5);
        let secs = (30i64 << over).min(15 * 60);
        Utc::now() + Duration::seconds(secs)
    });
    tx.execute(
        sql("UPDATE users SET locked_until = $1, updated_at = $2 WHERE id = $3")
            .bind(locked_until)
            .bind(Utc::now())
            .bind(&user.id),
    )
    .await?;
    Ok(locked_until)
}

pub async fn reset_failures(tx: &mut Tx, user: &UserId) -> Result<()> {
    tx.execute(
        sql("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = $1 AND (failed_logins <> 0 OR locked_until IS NOT NULL)")
            .bind(user),
    )
    .await?;
    Ok(())
}

pub async fn set_super_admin(tx: &mut Tx, user: &UserId) -> Result<()> {
    tx.execute(
        sql("UPDATE users SET is_super_admin = $1, updated_at = $2 WHERE id = $3")
            .bind(true)
            .bind(Utc::now())
            .bind(user),
    )
    .await?;
    Ok(())
}

pub async fn set_password(tx: &mut Tx, user: &UserId, hash: String) -> Result<()> {
    tx.execute(
        sql("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(hash)
            .bind(Utc::now())
            .bind(user),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            normalize_email(" Bob@Example.COM ").unwrap(),
            "bob@example.com"
        );
        for bad in [
            "",
            "bob",
            "bob@",
            "@x.com",
            "bob@x",
            "b ob@x.com",
            "bob@x..com",
            "<script>@x.com",
            "a@b@c.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }
}
