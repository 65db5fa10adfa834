//! External identity providers: OIDC JWTs (Clerk, Auth0, Keycloak …) as bearer tokens.
//!
//! A token is accepted only when its `iss` is a configured issuer, its signature checks
//! against that issuer's JWKS with an asymmetric algorithm (RS*, PS*, ES*, EdDSA — never
//! HS*, which would let anyone holding a public key forge tokens), and `aud`, `exp`
//! and `nbf` hold (60 s leeway). JWKS are cached for ten minutes and refetched early
//! when a token names an unknown `kid` (key rollover), at most every 30 seconds.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::RwLock;

use crate::config::OidcProvider;
use crate::error::{AppError, Result};

const CACHE_TTL: Duration = Duration::from_secs(600);
const REFETCH_MIN: Duration = Duration::from_secs(30);

struct Provider {
    cfg: OidcProvider,
    jwks: RwLock<Option<(JwkSet, Instant)>>,
}

pub struct OidcVerifier {
    providers: Vec<Provider>,
    http: reqwest::Client,
}

/// The identity a valid token asserts.
#[derive(Debug, Clone)]
pub struct ExternalIdentity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct IssuerOnly {
    iss: String,
}

#[derive(Deserialize)]
struct Discovery {
    jwks_uri: String,
}

fn unauthorized(m: impl Into<String>) -> AppError {
    AppError::Unauthorized(m.into())
}

impl OidcVerifier {
    pub fn new(providers: Vec<OidcProvider>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            providers: providers
                .into_iter()
                .map(|cfg| Provider {
                    cfg,
                    jwks: RwLock::new(None),
                })
                .collect(),
            http,
        }
    }

    pub fn is_enabled(&self) -> bool {
        !self.providers.is_empty()
    }

    pub async fn verify(&self, token: &str) -> Result<ExternalIdentity> {
        if self.providers.is_empty() {
            return Err(unauthorized(
                "identity-provider tokens are not accepted: no OIDC issuer is configured",
            ));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| unauthorized("bearer token is not a well-formed JWT"))?;
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ) {
            return Err(unauthorized(format!(
                "JWT algorithm {:?} is not accepted; use an asymmetric algorithm",
                header.alg
            )));
        }
        let unverified: IssuerOnly = jsonwebtoken::dangerous::insecure_decode(token)
            .map(|d| d.claims)
            .map_err(|_| unauthorized("JWT has no readable iss claim"))?;
        let provider = self
            .providers
            .iter()
            .find(|p| p.cfg.issuer == unverified.iss)
            .ok_or_else(|| unauthorized("JWT issuer is not trusted by this server"))?;
        let key = self.key_for(provider, header.kid.as_deref()).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&provider.cfg.issuer]);
        validation.set_audience(&[&provider.cfg.audience]);
        validation.leeway = 60;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            unauthorized(match e.kind() {
                K::ExpiredSignature => "JWT has expired",
                K::ImmatureSignature => "JWT is not valid yet (nbf)",
                K::InvalidAudience => "JWT audience does not match this server",
                K::InvalidIssuer => "JWT issuer does not match",
                K::InvalidSignature => "JWT signature does not verify",
                K::MissingRequiredClaim(_) => "JWT lacks a required claim (exp, iss, aud, sub)",
                _ => "JWT is invalid",
            })
        })?;
        let c = data.claims;
        let email_verified = match c.email_verified {
            Some(serde_json::Value::Bool(b)) => b,
            Some(serde_json::Value::String(s)) => s == "true",
            _ => false,
        };
        Ok(ExternalIdentity {
            issuer: c.iss,
            subject: c.sub,
            email: c.email,
            email_verified,
            name: c.name,
        })
    }

    async fn key_for(&self, p: &Provider, kid: Option<&str>) -> Result<DecodingKey> {
        let pick = |set: &JwkSet| -> Option<DecodingKey> {
            let jwk = match kid {
                Some(k) => set.find(k),
                None if set.keys.len() == 1 => set.keys.first(),
                None => None,
            }?;
            DecodingKey::from_jwk(jwk).ok()
        };
        {
            let cached = p.jwks.read().await;
            if let Some((set, at)) = cached.as_ref() {
                if let Some(k) = pick(set) {
                    if at.elapsed() < CACHE_TTL {
                        return Ok(k);
                    }
                } else if at.elapsed() < REFETCH_MIN {
                    return Err(unauthorized("JWT key id is not in the issuer's key set"));
                }
            }
        }
        let mut slot = p.jwks.write().await;
        if let Some((set, at)) = slot.as_ref()
            && at.elapsed() < REFETCH_MIN
        {
            return pick(set)
                .ok_or_else(|| unauthorized("JWT key id is not in the issuer's key set"));
        }
        let set = self.fetch_jwks(&p.cfg).await?;
        let key = pick(&set);
        *slot = Some((set, Instant::now()));
        key.ok_or_else(|| unauthorized("JWT key id is not in the issuer's key set"))
    }

    async fn fetch_jwks(&self, cfg: &OidcProvider) -> Result<JwkSet> {
        let unavailable = |e: reqwest::Error| {
            tracing::warn!(issuer = %cfg.issuer, error = %e, "JWKS fetch failed");
            AppError::Unavailable("the identity provider's keys could not be fetched".into())
        };
        let url = match &cfg.jwks_url {
            Some(u) => u.clone(),
            None => {
                let d: Discovery = self
                    .http
                    .get(format!(
                        "{}/.well-known/openid-configuration",
                        cfg.issuer.trim_end_matches('/')
                    ))
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(unavailable)?
                    .json()
                    .await
                    .map_err(unavailable)?;
                d.jwks_uri
            }
        };
        self.http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(unavailable)?
            .json()
            .await
            .map_err(unavailable)
    }
}
