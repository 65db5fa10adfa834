//! The public unsubscribe link in every campaign message.
//!
//! `GET /unsubscribe/{token}` shows a page with one button (a GET must never change
//! anything: mail scanners open links); the button, and mail clients' one-click
//! unsubscribe (RFC 8058, `List-Unsubscribe-Post`), `POST` to the same URL, which puts the
//! address on the tenant's suppression list. The token names the tenant and recipient
//! and carries a value only this server can compute, so it cannot be guessed or moved
//! to another address. A bad token gets the same 404 page whatever is wrong with it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Html;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::audit;
use crate::error::Result;
use crate::ids::{RecipientId, TenantId};
use crate::state::AppState;
use crate::store::scoped;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title></head><body style=\"font-family: system-ui, sans-serif; max-width: 32rem; margin: 4rem auto; padding: 0 1rem; line-height: 1.5\">\
         <h1 style=\"font-size: 1.4rem\">{t}</h1>{body}</body></html>",
        t = escape(title)
    ))
}

fn not_found() -> (StatusCode, Html<String>) {
    (
        StatusCode::NOT_FOUND,
        page(
            "Link not valid",
            "<p>This unsubscribe link is not valid. If you keep receiving emails, reply to one and ask to be removed.</p>",
        ),
    )
}

/// The recipient a token names, when the token is genuine: `(tenant, recipient)`.
fn verify(state: &AppState, token: &str) -> Option<(TenantId, RecipientId)> {
    let mut parts = token.splitn(3, '.');
    let tenant = TenantId::from_hex(parts.next()?)?;
    let recipient = RecipientId::from_hex(parts.next()?)?;
    let given = parts.next()?;
    let expected = state.crypto.derive_token("unsubscribe", recipient.as_str());
    bool::from(given.as_bytes().ct_eq(expected.as_bytes())).then_some((tenant, recipient))
}

async fn recipient(
    state: &AppState,
    tenant: &TenantId,
    id: &RecipientId,
) -> Result<Option<(String, String, String)>> {
    let mut tx = state.store.tenant_read(tenant).await?;
    let row: Option<(String, String)> = tx
        .fetch_optional(
            scoped(
                "SELECT email, campaign_id FROM email_recipients WHERE tenant_id = $1 AND id = $2",
            )
            .bind(id),
        )
        .await?;
    let company = match &row {
        Some(_) => crate::tenancy::tenants::name(&mut tx).await?,
        None => String::new(),
    };
    tx.commit().await?;
    Ok(row.map(|(e, c)| (e, c, company)))
}

/// The confirmation page.
pub async fn show(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<(StatusCode, Html<String>)> {
    let Some((tenant, id)) = verify(&state, &token) else {
        return Ok(not_found());
    };
    let Some((email, _, company)) = recipient(&state, &tenant, &id).await? else {
        return Ok(not_found());
    };
    Ok((
        StatusCode::OK,
        page(
            "Unsubscribe",
            &format!(
                "<p>Stop emails from <strong>{}</strong> to <strong>{}</strong>?</p>\
                 <form method=\"post\"><button type=\"submit\" style=\"font: inherit; padding: .5rem 1rem\">Unsubscribe</button></form>",
                escape(&company),
                escape(&email)
            ),
        ),
    ))
}

/// Unsubscribes (the page's button, or a mail client's one-click request).
pub async fn confirm(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<(StatusCode, Html<String>)> {
    let Some((tenant, id)) = verify(&state, &token) else {
        return Ok(not_found());
    };
    let Some((email, campaign, company)) = recipient(&state, &tenant, &id).await? else {
        return Ok(not_found());
    };
    let mut tx = state.store.tenant(&tenant).await?;
    if super::suppress(&mut tx, &email, "unsubscribed", Some(&campaign)).await? {
        audit::record_system(
            &mut tx,
            "email.unsubscribe",
            "email",
            &email,
            json!({"campaign_id": campaign}),
        )
        .await?;
        super::refresh_metrics(&mut tx).await?;
    }
    tx.commit().await?;
    Ok((
        StatusCode::OK,
        page(
            "You are unsubscribed",
            &format!(
                "<p><strong>{}</strong> will not receive further emails from {}.</p>",
                escape(&email),
                escape(&company)
            ),
        ),
    ))
}
