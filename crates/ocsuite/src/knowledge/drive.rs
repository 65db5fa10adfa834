//! Google Drive sources through the tenant's Google connector (Drive API v3, read-only
//! scope): named files and one folder (with its subfolders, three levels deep).
//!
//! Google Docs are exported as HTML (their headings become passage locations), Sheets as
//! CSV, Slides as plain text; other files are downloaded as they are and typed by their
//! content like an upload. Every sync lists the folder again, so files added, edited or
//! deleted since the last one are picked up, and a file that can no longer be read is
//! named in the source's warning.

use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;

use super::fetch::{FetchError, Fetched};
use crate::connectors::Provider;

/// Most files one Drive source reads.
pub const MAX_FILES: usize = 500;
const FOLDER: &str = "application/vnd.google-apps.folder";
const FIELDS: &str = "id,name,mimeType,size,trashed";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    id: String,
    name: String,
    mime_type: String,
    #[serde(default)]
    size: Option<String>,
    #[serde(default)]
    trashed: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Listing {
    #[serde(default)]
    files: Vec<File>,
    next_page_token: Option<String>,
}

/// What a Drive source yielded: its documents and what could not be read.
pub struct DriveRead {
    pub documents: Vec<Fetched>,
    pub warnings: Vec<String>,
}

struct Api<'a> {
    http: &'a reqwest::Client,
    base: String,
    provider: &'a Provider,
    token: &'a str,
}

impl Api<'_> {
    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .get(url)
            .bearer_auth(self.token)
            .timeout(Duration::from_secs(60));
        for (k, v) in &self.provider.api_headers {
            r = r.header(k.as_str(), v.as_str());
        }
        r
    }

    /// GET as JSON; `Ok(None)` for 404 (gone or not shared with this account).
    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
    ) -> Result<Option<T>, FetchError> {
        let res = self
            .get(url)
            .send()
            .await
            .map_err(|e| FetchError::transient(format!("cannot reach Google Drive: {e}")))?;
        match res.status().as_u16() {
            200 => res.json().await.map(Some).map_err(|e| {
                FetchError::transient(format!("Google Drive sent something unreadable: {e}"))
            }),
            404 => Ok(None),
            401 => Err(FetchError::permanent(
                "Google refused the connection's token: reconnect Google on the Connectors page",
            )),
            403 => Err(FetchError::permanent(
                "Google Drive refused access (the connection lacks the Drive read-only permission, or the file is not shared with it)",
            )),
            s if s == 429 || s >= 500 => Err(FetchError::transient(format!(
                "Google Drive answered HTTP {s}"
            ))),
            s => Err(FetchError::permanent(format!(
                "Google Drive answered HTTP {s}"
            ))),
        }
    }

    async fn bytes(&self, url: &str, max: usize) -> Result<Vec<u8>, FetchError> {
        let res = self
            .get(url)
            .send()
            .await
            .map_err(|e| FetchError::transient(format!("cannot reach Google Drive: {e}")))?;
        let status = res.status().as_u16();
        if status != 200 {
            return Err(if status == 429 || status >= 500 {
                FetchError::transient(format!("Google Drive answered HTTP {status}"))
            } else {
                FetchError::permanent(format!("Google Drive answered HTTP {status}"))
            });
        }
        let mut out = Vec::new();
        let mut body = res.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                FetchError::transient(format!("reading from Google Drive failed: {e}"))
            })?;
            if out.len() + chunk.len() > max {
                return Err(FetchError::permanent(format!(
                    "larger than {} MB",
                    max / (1024 * 1024)
                )));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

fn encode(s: &str) -> String {
    reqwest::Url::parse_with_params("http://x/", [("q", s)])
        .ok()
        .and_then(|u| u.query().map(|q| q.trim_start_matches("q=").to_owned()))
        .unwrap_or_default()
}

/// Reads the files and the folder a Drive source names; files larger than `max_bytes`
/// are skipped with a warning.
pub async fn read(
    http: &reqwest::Client,
    provider: &Provider,
    token: &str,
    file_ids: &[String],
    folder_id: Option<&str>,
    max_bytes: usize,
) -> Result<DriveRead, FetchError> {
    let base = provider
        .api_url
        .clone()
        .unwrap_or_else(|| "https://www.googleapis.com".into())
        .trim_end_matches('/')
        .to_owned();
    let api = Api {
        http,
        base,
        provider,
        token,
    };
    let mut files: Vec<File> = Vec::new();
    let mut warnings = Vec::new();
    for id in file_ids {
        let url = format!(
            "{}/drive/v3/files/{id}?fields={FIELDS}&supportsAllDrives=true",
            api.base
        );
        match api.json::<File>(&url).await? {
            Some(f) if !f.trashed => files.push(f),
            _ => warnings.push(format!("Drive file {id} is gone or no longer shared")),
        }
    }
    if let Some(folder) = folder_id {
        let mut pending = vec![(folder.to_owned(), 0)];
        let mut seen_root = false;
        while let Some((dir, depth)) = pending.pop() {
            let mut page: Option<String> = None;
            loop {
                let q = encode(&format!("'{dir}' in parents and trashed = false"));
                let mut url = format!(
                    "{}/drive/v3/files?q={q}&fields=nextPageToken,files({FIELDS})&pageSize=100&supportsAllDrives=true&includeItemsFromAllDrives=true",
                    api.base
                );
                if let Some(p) = &page {
                    url.push_str(&format!("&pageToken={}", encode(p)));
                }
                let Some(listing) = api.json::<Listing>(&url).await? else {
                    if !seen_root {
                        return Err(FetchError::permanent(format!(
                            "the Drive folder {folder} is gone or not shared with the connected account"
                        )));
                    }
                    break;
                };
                seen_root = true;
                for f in listing.files {
                    if f.mime_type == FOLDER {
                        if depth < 3 {
                            pending.push((f.id, depth + 1));
                        }
                    } else if !files.iter().any(|x| x.id == f.id) {
                        files.push(f);
                    }
                }
                page = listing.next_page_token;
                if page.is_none() || files.len() >= MAX_FILES {
                    break;
                }
            }
        }
    }
    if files.len() > MAX_FILES {
        warnings.push(format!("only the first {MAX_FILES} files are read"));
        files.truncate(MAX_FILES);
    }
    let mut documents = Vec::new();
    for f in files {
        let (url, name, content_type) = match f.mime_type.as_str() {
            "application/vnd.google-apps.document" => (
                format!(
                    "{}/drive/v3/files/{}/export?mimeType=text/html",
                    api.base, f.id
                ),
                f.name.clone(),
                "text/html".to_owned(),
            ),
            "application/vnd.google-apps.spreadsheet" => (
                format!(
                    "{}/drive/v3/files/{}/export?mimeType=text/csv",
                    api.base, f.id
                ),
                f.name.clone(),
                "text/csv".to_owned(),
            ),
            "application/vnd.google-apps.presentation" => (
                format!(
                    "{}/drive/v3/files/{}/export?mimeType=text/plain",
                    api.base, f.id
                ),
                f.name.clone(),
                "text/plain".to_owned(),
            ),
            m if m.starts_with("application/vnd.google-apps.") => {
                warnings.push(format!(
                    "{}: this kind of Google file cannot be read as text",
                    f.name
                ));
                continue;
            }
            m => {
                if f.size
                    .as_deref()
                    .and_then(|s| s.parse::<usize>().ok())
                    .is_some_and(|s| s > max_bytes)
                {
                    warnings.push(format!(
                        "{}: larger than {} MB, skipped",
                        f.name,
                        max_bytes / (1024 * 1024)
                    ));
                    continue;
                }
                (
                    format!(
                        "{}/drive/v3/files/{}?alt=media&supportsAllDrives=true",
                        api.base, f.id
                    ),
                    f.name.clone(),
                    m.to_owned(),
                )
            }
        };
        match api.bytes(&url, max_bytes).await {
            Ok(bytes) => documents.push(Fetched {
                bytes,
                content_type: Some(content_type),
                name,
            }),
            Err(e) if e.retryable => return Err(e),
            Err(e) => warnings.push(format!("{}: {}", f.name, e.message)),
        }
    }
    Ok(DriveRead {
        documents,
        warnings,
    })
}
