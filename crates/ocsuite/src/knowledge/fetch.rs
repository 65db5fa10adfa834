//! Fetching what a source points at: a web page through the SSRF guard MCP servers use.
//!
//! The URL is checked when the source is added (so an internal address is refused with
//! 422 at once) and again before every fetch (a name can be re-pointed later); the
//! connection goes only to the addresses checked.

use std::time::Duration;

use futures_util::StreamExt;

use crate::modules::ssrf;

/// Largest web page we read.
pub const MAX_PAGE_BYTES: usize = 10 * 1024 * 1024;

/// Why a fetch failed, and whether trying again later may help.
#[derive(Debug)]
pub struct FetchError {
    pub message: String,
    pub retryable: bool,
}

impl FetchError {
    pub(crate) fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
    pub(crate) fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }
}

/// A fetched document: its bytes and what the server said it is.
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    /// The name to detect the type by (the URL's last path segment).
    pub name: String,
}

/// Checks that `url` is an http(s) URL that may be fetched here. `Err` says why not.
pub async fn check_url(url: &str, allow_private: bool) -> Result<ssrf::Destination, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "only http and https URLs can be fetched, not {}:",
            parsed.scheme()
        ));
    }
    ssrf::check_destination(url, allow_private).await
}

/// GETs a web page (at most [`MAX_PAGE_BYTES`], 30 s).
pub async fn web_page(url: &str, allow_private: bool) -> Result<Fetched, FetchError> {
    let dest = check_url(url, allow_private)
        .await
        .map_err(FetchError::permanent)?;
    let client = ssrf::http_client(&dest).map_err(FetchError::transient)?;
    let send = client
        .get(dest.url())
        .header(
            "accept",
            "text/html, text/plain, text/markdown, application/pdf;q=0.9, */*;q=0.5",
        )
        .header(
            "user-agent",
            "ocsuite-knowledge/1 (+https://github.com/ocsuite)",
        )
        .send();
    let res = tokio::time::timeout(Duration::from_secs(30), send)
        .await
        .map_err(|_| FetchError::transient(format!("{url} did not answer within 30 s")))?
        .map_err(|e| FetchError::transient(format!("cannot reach {url}: {e}")))?;
    let status = res.status();
    if !status.is_success() {
        let retryable = status.is_server_error() || status.as_u16() == 429;
        return Err(FetchError {
            message: format!("{url} answered HTTP {status}"),
            retryable,
        });
    }
    let content_type = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let name = res
        .url()
        .path_segments()
        .and_then(|mut s| s.next_back().map(str::to_owned))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "index.html".into());
    let mut bytes = Vec::new();
    let mut body = res.bytes_stream();
    let read = async {
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| FetchError::transient(format!("reading {url} failed: {e}")))?;
            if bytes.len() + chunk.len() > MAX_PAGE_BYTES {
                return Err(FetchError::permanent(format!(
                    "{url} is larger than {} MB",
                    MAX_PAGE_BYTES / (1024 * 1024)
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .map_err(|_| FetchError::transient(format!("{url} sent its page too slowly")))??;
    Ok(Fetched {
        bytes,
        content_type,
        name,
    })
}
