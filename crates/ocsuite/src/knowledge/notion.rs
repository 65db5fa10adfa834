//! Notion sources through the tenant's Notion connector: pages (with their nested
//! blocks) and databases (each row a page), rendered as Markdown so headings become
//! passage locations.
//!
//! An id that is not a page is tried as a database. Child pages are sources of their
//! own (add them by id); nested blocks are read three levels deep.

use std::time::Duration;

use serde_json::{Value, json};

use super::fetch::{FetchError, Fetched};
use crate::connectors::Provider;

/// Most pages one Notion source reads (a database's rows count).
pub const MAX_PAGES: usize = 200;
/// Most blocks read from one page.
const MAX_BLOCKS: usize = 5000;

pub struct NotionRead {
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
    /// A call; `Ok(None)` for 404 (gone, or not shared with the integration).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Option<Value>, FetchError> {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token)
            .timeout(Duration::from_secs(60));
        for (k, v) in &self.provider.api_headers {
            r = r.header(k.as_str(), v.as_str());
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let res = r
            .send()
            .await
            .map_err(|e| FetchError::transient(format!("cannot reach Notion: {e}")))?;
        match res.status().as_u16() {
            200 => res.json().await.map(Some).map_err(|e| {
                FetchError::transient(format!("Notion sent something unreadable: {e}"))
            }),
            404 | 400 => Ok(None),
            401 => Err(FetchError::permanent(
                "Notion refused the connection's token: reconnect Notion on the Connectors page",
            )),
            403 => Err(FetchError::permanent("Notion refused access to this page")),
            s if s == 429 || s >= 500 => {
                Err(FetchError::transient(format!("Notion answered HTTP {s}")))
            }
            s => Err(FetchError::permanent(format!("Notion answered HTTP {s}"))),
        }
    }

    async fn page_title(&self, id: &str) -> Result<Option<String>, FetchError> {
        let Some(page) = self
            .call(reqwest::Method::GET, &format!("/v1/pages/{id}"), None)
            .await?
        else {
            return Ok(None);
        };
        let title = page["properties"]
            .as_object()
            .and_then(|props| props.values().find(|p| p["type"] == "title"))
            .map(|p| plain(&p["title"]))
            .filter(|t| !t.trim().is_empty())
            .unwrap_or_else(|| "Untitled".into());
        Ok(Some(title))
    }

    /// The page's blocks as Markdown.
    async fn page_markdown(&self, id: &str) -> Result<String, FetchError> {
        let mut out = String::new();
        let mut stack: Vec<(String, usize)> = vec![(id.to_owned(), 0)];
        let mut blocks = 0;
        // Depth-first, in order: children are rendered right after their parent.
        let mut queue: Vec<(String, usize)> = Vec::new();
        while let Some((block, depth)) = stack.pop() {
            let mut cursor: Option<String> = None;
            let mut children: Vec<(String, usize)> = Vec::new();
            loop {
                let mut path = format!("/v1/blocks/{block}/children?page_size=100");
                if let Some(c) = &cursor {
                    path.push_str(&format!("&start_cursor={c}"));
                }
                let Some(v) = self.call(reqwest::Method::GET, &path, None).await? else {
                    break;
                };
                for b in v["results"].as_array().into_iter().flatten() {
                    blocks += 1;
                    render(b, depth, &mut out);
                    if b["has_children"] == true
                        && depth < 3
                        && b["type"] != "child_page"
                        && b["type"] != "child_database"
                        && let Some(cid) = b["id"].as_str()
                    {
                        children.push((cid.to_owned(), depth + 1));
                    }
                }
                cursor = v["next_cursor"].as_str().map(str::to_owned);
                if v["has_more"] != true || cursor.is_none() || blocks >= MAX_BLOCKS {
                    break;
                }
            }
            // Children after the whole level: simpler than interleaving, and the
            // heading structure (top level) still frames them.
            queue.extend(children);
            if stack.is_empty() {
                stack.extend(queue.drain(..).rev());
            }
            if blocks >= MAX_BLOCKS {
                break;
            }
        }
        Ok(out)
    }
}

/// The plain text of a rich-text array.
fn plain(rich: &Value) -> String {
    rich.as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["plain_text"].as_str())
        .collect()
}

fn render(block: &Value, depth: usize, out: &mut String) {
    let kind = block["type"].as_str().unwrap_or("");
    let data = &block[kind];
    let text = plain(&data["rich_text"]);
    let indent = "  ".repeat(depth);
    let line = match kind {
        "heading_1" => format!("# {text}"),
        "heading_2" => format!("## {text}"),
        "heading_3" => format!("### {text}"),
        "bulleted_list_item" | "toggle" => format!("{indent}- {text}"),
        "numbered_list_item" => format!("{indent}1. {text}"),
        "to_do" => format!(
            "{indent}- [{}] {text}",
            if data["checked"] == true { "x" } else { " " }
        ),
        "quote" => format!("> {text}"),
        "code" => format!("```\n{text}\n```"),
        "table_row" => data["cells"]
            .as_array()
            .into_iter()
            .flatten()
            .map(plain)
            .collect::<Vec<_>>()
            .join(" | "),
        "child_page" => format!("(sub-page: {})", data["title"].as_str().unwrap_or("")),
        "paragraph" | "callout" => text,
        _ => text,
    };
    if !line.trim().is_empty() {
        out.push_str(&line);
        out.push_str("\n\n");
    }
}

/// Reads the pages (or databases) a Notion source names.
pub async fn read(
    http: &reqwest::Client,
    provider: &Provider,
    token: &str,
    ids: &[String],
) -> Result<NotionRead, FetchError> {
    let base = provider
        .api_url
        .clone()
        .unwrap_or_else(|| "https://api.notion.com".into())
        .trim_end_matches('/')
        .to_owned();
    let api = Api {
        http,
        base,
        provider,
        token,
    };
    let mut pages: Vec<(String, String)> = Vec::new();
    let mut warnings = Vec::new();
    for id in ids {
        if let Some(title) = api.page_title(id).await? {
            pages.push((id.clone(), title));
            continue;
        }
        // Not a page: perhaps a database, whose rows are pages.
        let mut cursor: Option<String> = None;
        let mut found = false;
        loop {
            let mut body = json!({"page_size": 100});
            if let Some(c) = &cursor {
                body["start_cursor"] = json!(c);
            }
            let Some(v) = api
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/databases/{id}/query"),
                    Some(body),
                )
                .await?
            else {
                break;
            };
            found = true;
            for row in v["results"].as_array().into_iter().flatten() {
                let Some(rid) = row["id"].as_str() else {
                    continue;
                };
                let title = row["properties"]
                    .as_object()
                    .and_then(|p| p.values().find(|p| p["type"] == "title"))
                    .map(|p| plain(&p["title"]))
                    .filter(|t| !t.trim().is_empty())
                    .unwrap_or_else(|| "Untitled".into());
                pages.push((rid.to_owned(), title));
            }
            cursor = v["next_cursor"].as_str().map(str::to_owned);
            if v["has_more"] != true || cursor.is_none() || pages.len() >= MAX_PAGES {
                break;
            }
        }
        if !found {
            warnings.push(format!(
                "Notion page {id} is gone or not shared with the integration"
            ));
        }
    }
    if pages.len() > MAX_PAGES {
        warnings.push(format!("only the first {MAX_PAGES} pages are read"));
        pages.truncate(MAX_PAGES);
    }
    let mut documents = Vec::new();
    for (id, title) in pages {
        let body = api.page_markdown(&id).await?;
        documents.push(Fetched {
            bytes: format!("# {title}\n\n{body}").into_bytes(),
            content_type: Some("text/markdown".into()),
            name: title,
        });
    }
    Ok(NotionRead {
        documents,
        warnings,
    })
}
