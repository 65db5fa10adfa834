//! The OAuth 2.0 client side, on the `oauth2` crate: authorization URLs with PKCE, code
//! exchange, refresh, RFC 7009 revocation, and the userinfo call that names the account.
//!
//! `oauth2` is driven through our own reqwest client (its bundled one is an older
//! reqwest): redirects off (a token endpoint that redirects is refused, never followed
//! with a code or secret), and short timeouts so a hung provider cannot hold a worker.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use oauth2::basic::{
    BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
    BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AsyncHttpClient, AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, ExtraTokenFields, HttpRequest, HttpResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError,
    RevocationUrl, Scope, StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};

use super::Provider;
use crate::config::ClientAuth;

/// Token-response fields beyond RFC 6749 that some providers send.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Extra {
    /// Seconds the refresh token stays valid (Microsoft, GitHub apps …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_expires_in: Option<u64>,
}
impl ExtraTokenFields for Extra {}

type TokenResp = StandardTokenResponse<Extra, BasicTokenType>;
type Client = oauth2::Client<
    BasicErrorResponse,
    TokenResp,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointSet,
>;

/// Tokens a provider issued. `Debug` never shows them.
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: Option<Duration>,
    pub refresh_expires_in: Option<Duration>,
    /// As granted; `None` when the provider did not say (then: as requested).
    pub scopes: Option<Vec<String>>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("access_token", &"[redacted]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Why a call to the provider failed. Messages never contain a token.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The provider answered with an RFC 6749 error (`invalid_grant` …).
    #[error("the provider refused: {code}{}", .description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        code: String,
        description: Option<String>,
    },
    /// No usable answer: connection refused, timeout, 5xx without an OAuth error.
    #[error("the provider could not be reached: {0}")]
    Unreachable(String),
    /// An answer that is not what the protocol says it must be.
    #[error("the provider's answer is not a valid OAuth response: {0}")]
    Garbage(String),
    /// Our side is misconfigured for this provider.
    #[error("provider configuration: {0}")]
    Config(String),
}

impl OAuthError {
    /// The grant (refresh token or code) is dead: only a person reconnecting fixes it.
    pub fn grant_refused(&self) -> bool {
        matches!(self, Self::Refused { code, .. } if code == "invalid_grant")
    }

    /// Worth trying again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::Garbage(_))
            || matches!(self, Self::Refused { code, .. } if code == "temporarily_unavailable")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpFail(String);

/// Our reqwest client as `oauth2`'s HTTP client; its futures are `Send`, so handlers
/// and workers can hold them across awaits.
struct Http(reqwest::Client);

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpFail;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpFail>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(send(&self.0, request))
    }
}

/// Sends one `oauth2` request through reqwest.
async fn send(http: &reqwest::Client, req: HttpRequest) -> Result<HttpResponse, HttpFail> {
    let req = reqwest::Request::try_from(req).map_err(|e| HttpFail(e.to_string()))?;
    let res = http
        .execute(req)
        .await
        .map_err(|e| HttpFail(describe(&e)))?;
    let status = res.status();
    let mut out = http::Response::builder().status(status);
    for (k, v) in res.headers() {
        out = out.header(k, v);
    }
    // Token responses are small; cap what a hostile endpoint can make us buffer.
    let body = read_capped(res, 256 * 1024).await?;
    // A 5xx that is not an OAuth error document is an outage, not a malformed answer.
    if status.is_server_error()
        && serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").cloned())
            .is_none()
    {
        return Err(HttpFail(format!("it answered HTTP {status}")));
    }
    out.body(body).map_err(|e| HttpFail(e.to_string()))
}

async fn read_capped(mut res: reqwest::Response, cap: usize) -> Result<Vec<u8>, HttpFail> {
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| HttpFail(describe(&e)))? {
        if body.len() + chunk.len() > cap {
            return Err(HttpFail(format!("response larger than {cap} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A transport error without its URL (which may carry a query we would rather not log).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else if e.is_redirect() {
        "it answered with a redirect".into()
    } else {
        let mut e = e.to_string();
        // reqwest appends " for url (…)"; the URL may carry a query we would rather not log.
        if let Some(i) = e.find(" for url (") {
            e.truncate(i);
        }
        e
    }
}

fn map_err(e: RequestTokenError<HttpFail, BasicErrorResponse>) -> OAuthError {
    match e {
        RequestTokenError::ServerResponse(r) => OAuthError::Refused {
            code: match r.error() {
                BasicErrorResponseType::Extension(s) => s.clone(),
                other => other.to_string(),
            },
            description: r.error_description().map(|d| super::truncate(d, 200)),
        },
        RequestTokenError::Request(e) => OAuthError::Unreachable(e.0),
        RequestTokenError::Parse(e, _body) => {
            OAuthError::Garbage(super::truncate(&e.to_string(), 200))
        }
        RequestTokenError::Other(m) => OAuthError::Garbage(super::truncate(&m, 200)),
    }
}

/// The OAuth client for every provider; one HTTP connection pool.
pub struct OAuth {
    http: Http,
}

impl Default for OAuth {
    fn default() -> Self {
        Self::new()
    }
}

impl OAuth {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap_or_default();
        Self { http: Http(http) }
    }

    fn client(&self, p: &Provider, redirect_uri: Option<&str>) -> Result<Client, OAuthError> {
        let bad = |what: &str| OAuthError::Config(format!("{what} of provider {}", p.name));
        let mut c = oauth2::Client::new(ClientId::new(p.client_id.clone()))
            .set_auth_uri(
                AuthUrl::new(p.authorization_url.clone()).map_err(|_| bad("authorization_url"))?,
            )
            .set_token_uri(TokenUrl::new(p.token_url.clone()).map_err(|_| bad("token_url"))?)
            .set_revocation_url_option(
                p.revocation_url
                    .clone()
                    .map(RevocationUrl::new)
                    .transpose()
                    .map_err(|_| bad("revocation_url"))?,
            )
            .set_auth_type(match p.client_auth {
                ClientAuth::Basic => AuthType::BasicAuth,
                ClientAuth::Post => AuthType::RequestBody,
            });
        if let Some(s) = &p.client_secret {
            c = c.set_client_secret(ClientSecret::new(s.expose().to_owned()));
        }
        if let Some(r) = redirect_uri {
            c = c
                .set_redirect_uri(RedirectUrl::new(r.to_owned()).map_err(|_| bad("redirect URL"))?);
        }
        Ok(c)
    }

    /// The URL to send the person to, for `state` and a fresh PKCE verifier.
    pub fn authorization_url(
        &self,
        p: &Provider,
        redirect_uri: &str,
        state: &str,
        verifier: &PkceCodeVerifier,
    ) -> Result<String, OAuthError> {
        let client = self.client(p, Some(redirect_uri))?;
        let mut req = client
            .authorize_url(|| CsrfToken::new(state.to_owned()))
            .add_scopes(p.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(PkceCodeChallenge::from_code_verifier_sha256(verifier));
        for (k, v) in &p.authorize_params {
            req = req.add_extra_param(k.clone(), v.clone());
        }
        Ok(req.url().0.to_string())
    }

    pub async fn exchange_code(
        &self,
        p: &Provider,
        redirect_uri: &str,
        code: &str,
        verifier: String,
    ) -> Result<Tokens, OAuthError> {
        let client = self.client(p, Some(redirect_uri))?;
        let res = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier))
            .request_async(&self.http)
            .await
            .map_err(map_err)?;
        Ok(tokens(res))
    }

    pub async fn refresh(&self, p: &Provider, refresh_token: &str) -> Result<Tokens, OAuthError> {
        let client = self.client(p, None)?;
        let token = RefreshToken::new(refresh_token.to_owned());
        let res = client
            .exchange_refresh_token(&token)
            .request_async(&self.http)
            .await
            .map_err(map_err)?;
        Ok(tokens(res))
    }

    /// Revokes one token at the provider (RFC 7009). `Ok(false)` when the provider has
    /// no revocation endpoint.
    ///
    /// Sent by hand rather than through `oauth2`, which refuses revocation endpoints
    /// that are not HTTPS — and self-hosters (and our tests) run providers on plain
    /// HTTP inside their network, like every other endpoint here.
    pub async fn revoke(
        &self,
        p: &Provider,
        token: &str,
        is_refresh: bool,
    ) -> Result<bool, OAuthError> {
        let Some(url) = &p.revocation_url else {
            return Ok(false);
        };
        let hint = if is_refresh {
            "refresh_token"
        } else {
            "access_token"
        };
        let mut form = vec![("token", token), ("token_type_hint", hint)];
        let mut req = self.http.0.post(url);
        let secret = p.client_secret.as_ref().map(|s| s.expose());
        match p.client_auth {
            ClientAuth::Basic => req = req.basic_auth(&p.client_id, secret),
            ClientAuth::Post => {
                form.push(("client_id", &p.client_id));
                if let Some(s) = secret {
                    form.push(("client_secret", s));
                }
            }
        }
        let body = oauth2::url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let res = req
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| OAuthError::Unreachable(describe(&e)))?;
        let status = res.status();
        if status.is_success() {
            return Ok(true);
        }
        let body = read_capped(res, 64 * 1024)
            .await
            .map_err(|e| OAuthError::Unreachable(e.0))?;
        let err: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        match err.as_ref().and_then(|v| v["error"].as_str()) {
            Some(code) => Err(OAuthError::Refused {
                code: super::truncate(code, 64),
                description: err
                    .as_ref()
                    .and_then(|v| v["error_description"].as_str())
                    .map(|d| super::truncate(d, 200)),
            }),
            None => Err(OAuthError::Unreachable(format!(
                "the revocation endpoint answered HTTP {status}"
            ))),
        }
    }

    /// Who the token belongs to, from the provider's userinfo endpoint: the email, else
    /// a username, else the subject. `Ok(None)` when the provider has no such endpoint.
    pub async fn account(
        &self,
        p: &Provider,
        access_token: &str,
    ) -> Result<Option<String>, OAuthError> {
        let Some(url) = &p.userinfo_url else {
            return Ok(None);
        };
        let mut req = self
            .http
            .0
            .get(url)
            .bearer_auth(access_token)
            .header("accept", "application/json");
        for (k, v) in &p.api_headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let res = req
            .send()
            .await
            .map_err(|e| OAuthError::Unreachable(describe(&e)))?;
        let status = res.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(OAuthError::Refused {
                code: "invalid_token".into(),
                description: Some("the userinfo endpoint refused the access token".into()),
            });
        }
        if !status.is_success() {
            return Err(OAuthError::Unreachable(format!(
                "the userinfo endpoint answered HTTP {status}"
            )));
        }
        let body = read_capped(res, 256 * 1024)
            .await
            .map_err(|e| OAuthError::Unreachable(e.0))?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| OAuthError::Garbage("userinfo is not JSON".into()))?;
        let pick = [
            "email",
            "preferred_username",
            "login",
            "username",
            "sub",
            "id",
        ]
        .iter()
        .find_map(|k| match &v[*k] {
            serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
        Ok(pick.map(|s| super::truncate(&s, 320)))
    }
}

fn tokens(r: TokenResp) -> Tokens {
    Tokens {
        access_token: r.access_token().secret().clone(),
        refresh_token: r.refresh_token().map(|t| t.secret().clone()),
        expires_in: r.expires_in(),
        refresh_expires_in: r
            .extra_fields()
            .refresh_token_expires_in
            .map(Duration::from_secs),
        scopes: r
            .scopes()
            .map(|s| s.iter().map(|s| s.to_string()).collect()),
    }
}
