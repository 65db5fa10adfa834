//! What a request to add a knowledge source brings in, checked before anything is
//! stored: the multipart upload (read under the plan's size limit), or the JSON
//! description of a page, Drive files or Notion pages to fetch (URL guard, ids, and the
//! connection it needs).

use axum::extract::Multipart;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::Origin;
use crate::error::{AppError, Result};
use crate::state::AppState;

/// A source to fetch (JSON body of `POST /knowledge/sources`).
#[derive(Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceIn {
    /// A web page, fetched by the server.
    Url { url: String, title: Option<String> },
    /// Drive files and/or one folder, through the tenant's Google connector.
    GoogleDrive {
        #[serde(default)]
        file_ids: Vec<String>,
        folder_id: Option<String>,
        title: Option<String>,
    },
    /// Notion pages, through the tenant's Notion connector.
    Notion {
        page_ids: Vec<String>,
        title: Option<String>,
    },
}

pub(super) fn unsupported(filename: &str, what: &str) -> AppError {
    AppError::Rejected {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        code: "unsupported_media_type",
        message: format!(
            "{} is {what}; upload a PDF, DOCX, Markdown, plain text, HTML or CSV file",
            filename.chars().take(120).collect::<String>()
        ),
    }
}

pub(super) struct Upload {
    pub filename: String,
    pub content_type: Option<String>,
    pub title: Option<String>,
    pub bytes: Vec<u8>,
}

/// Reads the form's `file` (refused with 413 as soon as it passes `limit`) and `title`.
pub(super) async fn read_upload(mut form: Multipart, limit: u64) -> Result<Upload> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(limit)
        } else {
            AppError::bad_request("invalid_multipart", format!("the form cannot be read: {e}"))
        }
    };
    let mut upload: Option<Upload> = None;
    let mut title = None;
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        match field.name() {
            Some("file") => {
                let filename = field
                    .file_name()
                    .map(|f| f.rsplit(['/', '\\']).next().unwrap_or(f).trim().to_owned())
                    .filter(|f| !f.is_empty())
                    .unwrap_or_else(|| "upload".into());
                let content_type = field.content_type().map(str::to_owned);
                let mut bytes = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    if (bytes.len() + chunk.len()) as u64 > limit {
                        return Err(too_large(limit));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                upload = Some(Upload {
                    filename: filename.chars().take(super::MAX_TITLE_CHARS).collect(),
                    content_type,
                    title: None,
                    bytes,
                });
            }
            Some("title") => {
                let t = field.text().await.map_err(bad)?;
                let t = t.trim();
                if !t.is_empty() {
                    title = Some(t.chars().take(super::MAX_TITLE_CHARS).collect());
                }
            }
            _ => {}
        }
    }
    let mut upload = upload.ok_or_else(|| {
        AppError::invalid(
            "file",
            "the form has no `file` field: attach the document as `file`",
        )
    })?;
    if upload.bytes.is_empty() {
        return Err(AppError::invalid("file", "the file is empty"));
    }
    upload.title = title;
    Ok(upload)
}

fn too_large(limit: u64) -> AppError {
    AppError::Rejected {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: "file_too_large",
        message: format!(
            "the file is larger than the {} MB your plan allows per document",
            limit / (1024 * 1024)
        ),
    }
}

/// Checks a fetched source's input; a URL to an internal address is refused (422).
pub(super) async fn fetched_origin(state: &AppState, input: SourceIn) -> Result<(Origin, String)> {
    let clean = |t: Option<String>| t.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    match input {
        SourceIn::Url { url, title } => {
            let url = url.trim().to_owned();
            if url.len() > 2048 {
                return Err(AppError::invalid(
                    "url",
                    "the URL is longer than 2048 characters",
                ));
            }
            super::fetch::check_url(&url, state.config.mcp_private_allowed())
                .await
                .map_err(|m| AppError::invalid("url", m))?;
            let title = clean(title).unwrap_or_else(|| url.clone());
            Ok((Origin::Url { url }, title))
        }
        SourceIn::GoogleDrive {
            file_ids,
            folder_id,
            title,
        } => {
            let file_ids = external_ids("file_ids", file_ids)?;
            let folder_id = folder_id
                .map(|f| f.trim().to_owned())
                .filter(|f| !f.is_empty());
            if let Some(f) = &folder_id {
                external_ids("folder_id", vec![f.clone()])?;
            }
            if file_ids.is_empty() && folder_id.is_none() {
                return Err(AppError::invalid(
                    "file_ids",
                    "name Drive files (`file_ids`) or a folder (`folder_id`)",
                ));
            }
            let title = clean(title).unwrap_or_else(|| match &folder_id {
                Some(_) => "Google Drive folder".into(),
                None => format!("Google Drive ({} files)", file_ids.len()),
            });
            Ok((
                Origin::GoogleDrive {
                    file_ids,
                    folder_id,
                },
                title,
            ))
        }
        SourceIn::Notion { page_ids, title } => {
            let page_ids = external_ids("page_ids", page_ids)?;
            if page_ids.is_empty() {
                return Err(AppError::invalid(
                    "page_ids",
                    "name at least one Notion page",
                ));
            }
            let title =
                clean(title).unwrap_or_else(|| format!("Notion ({} pages)", page_ids.len()));
            Ok((Origin::Notion { page_ids }, title))
        }
    }
}

/// A Drive or Notion source needs the provider configured and the tenant connected.
pub(super) async fn require_connection(
    state: &AppState,
    tx: &mut crate::store::TenantTx,
    origin: &Origin,
) -> Result<()> {
    let (provider, label) = match origin {
        Origin::GoogleDrive { .. } => ("google", "Google"),
        Origin::Notion { .. } => ("notion", "Notion"),
        _ => return Ok(()),
    };
    if state.vault.providers().get(provider).is_none() {
        return Err(AppError::invalid(
            "kind",
            format!(
                "this server has no {label} connector configured; ask its operator to add the `{provider}` provider"
            ),
        ));
    }
    match crate::connectors::by_provider(tx, provider).await? {
        Some(_) => Ok(()),
        None => Err(AppError::Conflict(format!(
            "connect {label} first (Connectors page), then add the source"
        ))),
    }
}

/// Drive and Notion ids: letters, digits, `-` and `_`, at most 100 of them.
fn external_ids(field: &'static str, ids: Vec<String>) -> Result<Vec<String>> {
    if ids.len() > 100 {
        return Err(AppError::invalid(field, "at most 100 ids per source"));
    }
    let mut out = Vec::new();
    for id in ids {
        let id = id.trim().to_owned();
        if id.is_empty()
            || id.len() > 128
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(AppError::invalid(
                field,
                format!(
                    "{:?} is not a valid id (letters, digits, - and _)",
                    id.chars().take(40).collect::<String>()
                ),
            ));
        }
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}
