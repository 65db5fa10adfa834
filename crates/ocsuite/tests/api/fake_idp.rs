//! A local OAuth 2.0 authorization server for the connector tests: authorization (with
//! PKCE S256 checked at the token endpoint), code and refresh-token grants (refresh
//! tokens rotate, and reusing a rotated one is refused as `invalid_grant`, like Google
//! and Auth0 do), RFC 7009 revocation and an OIDC-style userinfo endpoint.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::json;
use sha2::{Digest, Sha256};

pub const CLIENT_ID: &str = "ocsuite-test-client";
pub const CLIENT_SECRET: &str = "test-client-secret";
pub const ACCOUNT: &str = "owner@acme.test";

/// How the token endpoint misbehaves (`None`: it works).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenMode {
    /// 503 with an HTML page.
    Down,
    /// 200 with something that is not a token response.
    Garbage,
}

#[derive(Default)]
pub struct Inner {
    /// code → (challenge, redirect_uri)
    codes: HashMap<String, (String, String)>,
    access: HashSet<String>,
    refresh: HashSet<String>,
    /// Every token ever issued, to search the database and logs for.
    pub issued: Vec<String>,
    pub refresh_calls: u32,
    pub reused_refresh: u32,
    pub revoked: Vec<String>,
    pub deny: bool,
    pub mode: Option<TokenMode>,
    /// `expires_in` of the next code exchange and of refreshes.
    pub code_expires_in: i64,
    pub refresh_expires_in: i64,
    /// Issue a refresh token at code exchange.
    pub issue_refresh: bool,
    /// How long the token endpoint takes, so concurrent callers overlap.
    pub token_delay_ms: u64,
    /// Raw RFC 5322 messages sent through the Gmail API.
    pub gmail_sent: Vec<String>,
    /// Google Drive: every file and folder.
    pub drive: Vec<DriveFile>,
    /// Notion pages: id → (title, blocks); a block's children are under its own id.
    pub notion: HashMap<String, (String, Vec<serde_json::Value>)>,
    /// Notion block children by parent block id.
    pub notion_children: HashMap<String, Vec<serde_json::Value>>,
    /// The `Notion-Version` of every Notion API call.
    pub notion_versions: Vec<String>,
}

/// A file (or folder) in the fake Drive.
#[derive(Clone)]
pub struct DriveFile {
    pub id: String,
    pub name: String,
    pub mime: String,
    pub parent: String,
    pub content: Vec<u8>,
}

#[derive(Clone)]
pub struct FakeIdp {
    pub base: String,
    pub inner: Arc<Mutex<Inner>>,
}

impl FakeIdp {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            code_expires_in: 3600,
            refresh_expires_in: 3600,
            issue_refresh: true,
            ..Inner::default()
        }));
        let router = Router::new()
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/revoke", post(revoke))
            .route("/userinfo", get(userinfo))
            .route("/gmail/v1/users/me/messages/send", post(gmail_send))
            .route("/drive/v3/files", get(drive_list))
            .route("/drive/v3/files/{id}", get(drive_file))
            .route("/drive/v3/files/{id}/export", get(drive_export))
            .route("/v1/pages/{id}", get(notion_page))
            .route("/v1/blocks/{id}/children", get(notion_children))
            .route("/v1/databases/{id}/query", post(notion_query))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            base: format!("http://{addr}"),
            inner,
        }
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap())
    }

    /// Withdraws every token, as a user removing the app in their account settings.
    pub fn revoke_everything(&self) {
        self.with(|i| {
            i.access.clear();
            i.refresh.clear();
        });
    }

    pub fn provider(&self, name: &str) -> ocsuite::config::ConnectorProvider {
        ocsuite::config::ConnectorProvider {
            name: name.into(),
            display_name: None,
            client_id: CLIENT_ID.into(),
            client_secret: Some(ocsuite::config::Secret::new(CLIENT_SECRET)),
            authorization_url: Some(format!("{}/authorize", self.base)),
            token_url: Some(format!("{}/token", self.base)),
            revocation_url: Some(format!("{}/revoke", self.base)),
            userinfo_url: Some(format!("{}/userinfo", self.base)),
            scopes: Some(vec!["openid".into(), "email".into(), "crm.read".into()]),
            authorize_params: None,
            client_auth: ocsuite::config::ClientAuth::Basic,
            mail_api_url: Some(self.base.clone()),
            api_url: Some(self.base.clone()),
            api_headers: None,
        }
    }
}

type S = State<Arc<Mutex<Inner>>>;

fn random() -> String {
    let mut b = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
    hex::encode(b)
}

fn oauth_error(code: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"error": code}))).into_response()
}

async fn authorize(State(s): S, Query(q): Query<HashMap<String, String>>) -> Response {
    let redirect = q.get("redirect_uri").cloned().unwrap_or_default();
    let state = q.get("state").cloned().unwrap_or_default();
    if q.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || q.get("response_type").map(String::as_str) != Some("code")
        || q.get("code_challenge_method").map(String::as_str) != Some("S256")
    {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    }
    let mut i = s.lock().unwrap();
    if i.deny {
        return Redirect::to(&format!("{redirect}?error=access_denied&state={state}"))
            .into_response();
    }
    let code = random();
    let challenge = q.get("code_challenge").cloned().unwrap_or_default();
    i.codes.insert(code.clone(), (challenge, redirect.clone()));
    Redirect::to(&format!("{redirect}?code={code}&state={state}")).into_response()
}

fn client_ok(h: &HeaderMap) -> bool {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(expected.as_str())
}

fn issue(i: &mut Inner, expires_in: i64, refresh: bool) -> serde_json::Value {
    let access = format!("at-{}", random());
    i.access.insert(access.clone());
    i.issued.push(access.clone());
    let mut body = json!({"access_token": access, "token_type": "Bearer", "expires_in": expires_in, "scope": "openid email crm.read"});
    if refresh {
        let r = format!("rt-{}", random());
        i.refresh.insert(r.clone());
        i.issued.push(r.clone());
        body["refresh_token"] = json!(r);
    }
    body
}

async fn token(
    State(s): S,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let delay = s.lock().unwrap().token_delay_ms;
    tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    let mut i = s.lock().unwrap();
    match i.mode {
        Some(TokenMode::Down) => {
            return (StatusCode::SERVICE_UNAVAILABLE, "<html>maintenance</html>").into_response();
        }
        Some(TokenMode::Garbage) => return (StatusCode::OK, "<html>hello</html>").into_response(),
        _ => {}
    }
    if !client_ok(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    match f.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let code = f.get("code").cloned().unwrap_or_default();
            let Some((challenge, redirect)) = i.codes.remove(&code) else {
                return oauth_error("invalid_grant");
            };
            let verifier = f.get("code_verifier").cloned().unwrap_or_default();
            let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(Sha256::digest(verifier.as_bytes()));
            if computed != challenge || f.get("redirect_uri") != Some(&redirect) {
                return oauth_error("invalid_grant");
            }
            let (exp, refresh) = (i.code_expires_in, i.issue_refresh);
            axum::Json(issue(&mut i, exp, refresh)).into_response()
        }
        Some("refresh_token") => {
            i.refresh_calls += 1;
            let r = f.get("refresh_token").cloned().unwrap_or_default();
            if !i.refresh.remove(&r) {
                if i.issued.contains(&r) && !i.revoked.contains(&r) {
                    i.reused_refresh += 1;
                }
                return oauth_error("invalid_grant");
            }
            let exp = i.refresh_expires_in;
            axum::Json(issue(&mut i, exp, true)).into_response()
        }
        _ => oauth_error("unsupported_grant_type"),
    }
}

async fn revoke(
    State(s): S,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if !client_ok(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let mut i = s.lock().unwrap();
    let t = f.get("token").cloned().unwrap_or_default();
    i.access.remove(&t);
    i.refresh.remove(&t);
    i.revoked.push(t);
    StatusCode::OK.into_response()
}

/// Gmail's `users.messages.send`: a bearer token and `{"raw": base64url(message)}`.
async fn gmail_send(
    State(s): S,
    headers: HeaderMap,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let mut inner = s.lock().unwrap();
    if !inner.access.contains(&token) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": {"code": 401, "message": "Invalid Credentials"}})),
        )
            .into_response();
    }
    let Some(raw) = body["raw"].as_str().and_then(|r| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(r)
            .ok()
    }) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"code": 400, "message": "Invalid raw"}})),
        )
            .into_response();
    };
    inner
        .gmail_sent
        .push(String::from_utf8_lossy(&raw).into_owned());
    let id = format!("gm{}", inner.gmail_sent.len());
    axum::Json(json!({"id": id, "threadId": id, "labelIds": ["SENT"]})).into_response()
}

async fn userinfo(State(s): S, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    if !s.lock().unwrap().access.contains(&token) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_token"})),
        )
            .into_response();
    }
    axum::Json(json!({"sub": "1234567", "email": ACCOUNT, "email_verified": true})).into_response()
}

fn bearer_ok(s: &Arc<Mutex<Inner>>, headers: &HeaderMap) -> bool {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    s.lock().unwrap().access.contains(token)
}

fn drive_meta(f: &DriveFile) -> serde_json::Value {
    json!({"id": f.id, "name": f.name, "mimeType": f.mime, "size": f.content.len().to_string(), "trashed": false})
}

/// `files.list` with `q = "'<parent>' in parents and trashed = false"`, two per page.
async fn drive_list(
    State(s): S,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !bearer_ok(&s, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let parent = q
        .get("q")
        .and_then(|q| q.split('\'').nth(1))
        .unwrap_or_default()
        .to_owned();
    let inner = s.lock().unwrap();
    if !inner.drive.iter().any(|f| f.id == parent) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let all: Vec<&DriveFile> = inner.drive.iter().filter(|f| f.parent == parent).collect();
    let start: usize = q.get("pageToken").and_then(|t| t.parse().ok()).unwrap_or(0);
    let page: Vec<_> = all
        .iter()
        .skip(start)
        .take(2)
        .map(|f| drive_meta(f))
        .collect();
    let next = (start + 2 < all.len()).then(|| (start + 2).to_string());
    axum::Json(json!({"files": page, "nextPageToken": next})).into_response()
}

async fn drive_file(
    State(s): S,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !bearer_ok(&s, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let inner = s.lock().unwrap();
    let Some(f) = inner.drive.iter().find(|f| f.id == id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if q.get("alt").map(String::as_str) == Some("media") {
        if f.mime.starts_with("application/vnd.google-apps.") {
            return StatusCode::FORBIDDEN.into_response();
        }
        return f.content.clone().into_response();
    }
    axum::Json(drive_meta(f)).into_response()
}

async fn drive_export(
    State(s): S,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !bearer_ok(&s, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let inner = s.lock().unwrap();
    match inner.drive.iter().find(|f| f.id == id) {
        Some(f)
            if f.mime == "application/vnd.google-apps.document"
                && q.get("mimeType").map(String::as_str) == Some("text/html") =>
        {
            f.content.clone().into_response()
        }
        Some(_) => StatusCode::BAD_REQUEST.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn notion_check(s: &Arc<Mutex<Inner>>, headers: &HeaderMap) -> Option<Response> {
    if !bearer_ok(s, headers) {
        return Some(StatusCode::UNAUTHORIZED.into_response());
    }
    let version = headers
        .get("notion-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let missing = version.is_empty();
    s.lock().unwrap().notion_versions.push(version);
    missing.then(|| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"code": "missing_version"})),
        )
            .into_response()
    })
}

async fn notion_page(
    State(s): S,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    if let Some(r) = notion_check(&s, &headers) {
        return r;
    }
    let inner = s.lock().unwrap();
    match inner.notion.get(&id) {
        Some((title, _)) => axum::Json(json!({"object": "page", "id": id, "properties": {
            "Name": {"type": "title", "title": [{"plain_text": title}]}}}))
        .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"code": "object_not_found"})),
        )
            .into_response(),
    }
}

/// Block children, one per page, so the client has to follow the cursor.
async fn notion_children(
    State(s): S,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = notion_check(&s, &headers) {
        return r;
    }
    let inner = s.lock().unwrap();
    let blocks = match (inner.notion.get(&id), inner.notion_children.get(&id)) {
        (Some((_, b)), _) | (None, Some(b)) => b.clone(),
        _ => {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"code": "object_not_found"})),
            )
                .into_response();
        }
    };
    let start: usize = q
        .get("start_cursor")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let page: Vec<_> = blocks.iter().skip(start).take(1).cloned().collect();
    let more = start + 1 < blocks.len();
    axum::Json(json!({"object": "list", "results": page, "has_more": more,
                      "next_cursor": more.then(|| (start + 1).to_string())}))
    .into_response()
}

async fn notion_query(State(s): S, headers: HeaderMap) -> Response {
    if let Some(r) = notion_check(&s, &headers) {
        return r;
    }
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"code": "object_not_found"})),
    )
        .into_response()
}
