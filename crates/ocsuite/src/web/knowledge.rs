//! The Knowledge page: upload with progress, add a web page, Drive or Notion, the
//! sources with their live status, and a search box that shows passages.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::{Redirected, Shell, Viewer, render};
use crate::state::AppState;
use crate::tenancy::Role;

#[derive(Template)]
#[template(path = "knowledge.html")]
struct KnowledgePage {
    shell: Shell,
    rows: Vec<Row>,
    /// The knowledge topic's last seq when the page was read (see `page`).
    since: i64,
    can_add: bool,
    limit_mb: u64,
    /// Whether semantic search is on, in words.
    mode: String,
    hybrid: bool,
    google: Option<bool>,
    notion: Option<bool>,
}

/// One source as the table shows it.
struct Row {
    id: String,
    title: String,
    kind: &'static str,
    status: String,
    error: String,
    warning: String,
    chunks: i64,
    size: String,
    synced: String,
    deletable: bool,
}

/// `1.2 MB`, `340 KB`, `12 bytes`.
fn size(bytes: i64) -> String {
    match bytes {
        b if b >= 1024 * 1024 => format!("{:.1} MB", b as f64 / (1024.0 * 1024.0)),
        b if b >= 1024 => format!("{} KB", b / 1024),
        0 => String::new(),
        b => format!("{b} bytes"),
    }
}

fn kind(k: &str) -> &'static str {
    match k {
        "upload" => "Upload",
        "url" => "Web page",
        "google_drive" => "Google Drive",
        "notion" => "Notion",
        _ => "Other",
    }
}

pub async fn page(State(state): State<AppState>, v: Viewer) -> Result<Response, Redirected> {
    let mut tx = state.store.tenant_read(&v.tenant).await?;
    // The topic's head before the list: the page subscribes from it, so a status that
    // changes between this read and the socket's subscription is replayed, not missed.
    let since = crate::realtime::head(&mut tx, &crate::realtime::Topic::Knowledge).await?;
    let sources = crate::knowledge::list(&mut tx).await?;
    let (plan,): (String,) = tx
        .fetch_one(crate::store::scoped(
            "SELECT plan FROM tenants WHERE id = $1",
        ))
        .await?;
    // Per provider the server has: whether this company is connected to it.
    let mut connected = [None, None];
    for (slot, p) in connected.iter_mut().zip(["google", "notion"]) {
        if state.vault.providers().get(p).is_some() {
            *slot = Some(crate::connectors::by_provider(&mut tx, p).await?.is_some());
        }
    }
    let [google, notion] = connected;
    tx.commit().await?;
    let me = format!("user:{}", v.user.id);
    let admin = v.role.at_least(Role::Admin);
    let rows = sources
        .into_iter()
        .map(|s| Row {
            id: s.id.to_string(),
            deletable: admin || (v.role.at_least(Role::Member) && s.created_by == me),
            title: s.title,
            kind: kind(&s.kind),
            status: s.status,
            error: s.error.unwrap_or_default(),
            warning: s.warning.unwrap_or_default(),
            chunks: s.chunk_count,
            size: size(s.size_bytes),
            synced: s
                .synced_at
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default(),
        })
        .collect();
    let plan = crate::usage::Plan::parse(&plan).unwrap_or(crate::usage::Plan::Free);
    let mode = match &state.knowledge.embedding_model {
        Some(m) => format!("Search matches words and meaning (embedding model {m})."),
        None => {
            "Search matches words only: set OCSUITE_EMBEDDING_MODEL to match meaning too.".into()
        }
    };
    Ok(render(&KnowledgePage {
        shell: Shell::new(&v, "Knowledge", "knowledge"),
        rows,
        since,
        can_add: v.role.at_least(Role::Member),
        limit_mb: state.meter.limits(plan).knowledge_file_bytes / (1024 * 1024),
        mode,
        hybrid: state.knowledge.embedding_model.is_some(),
        google,
        notion,
    }))
}
