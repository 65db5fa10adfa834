//! Platform administration from the command line.

use super::password;
use super::users::{self, UserOut, clean_name, normalize_email};
use crate::config::Config;
use crate::error::{AppError, Result};
use crate::store::{self, Store};

/// Creates a super-admin, or promotes the existing user with that email (whose
/// password is then left unchanged).
pub async fn create_super_admin(
    config: Config,
    email: &str,
    name: Option<&str>,
    password_in: String,
) -> Result<UserOut> {
    let email = normalize_email(email)?;
    store::migrate(&config).await?;
    let store = Store::connect(&config.database_url, 2).await?;
    let mut tx = store.platform().await?;
    let user = match users::find_by_email(&mut tx, &email).await? {
        Some(u) => {
            users::set_super_admin(&mut tx, &u.id).await?;
            users::find(&mut tx, &u.id)
                .await?
                .ok_or(AppError::NotFound("user"))?
        }
        None => {
            password::check_policy(&password_in, &email)?;
            let name = clean_name("name", name.unwrap_or("Administrator"), 200)?;
            let hash = password::hash(password_in).await?;
            users::create(&mut tx, &email, &name, Some(hash), true).await?
        }
    };
    tx.commit().await?;
    store.close().await;
    Ok(user.into())
}
