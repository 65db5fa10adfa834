//! The one error type of the server and its HTTP mapping.
//!
//! Every failure a client can cause becomes a 4xx whose message says what to fix; a
//! failure the client cannot fix becomes a 5xx whose body carries only the request id,
//! while the cause goes to the log. Unique-constraint violations become 409.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub type Result<T, E = AppError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Malformed request: bad JSON, wrong types, missing headers.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// Well-formed but invalid values (weak password, bad email …).
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    Unauthorized(String),
    /// Login needs a second factor.
    #[error("a TOTP code is required for this account")]
    MfaRequired,
    #[error("{0}")]
    Forbidden(String),
    /// Also used for "exists but not yours", so existence never leaks.
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    #[error("request body is larger than the {0}-byte limit")]
    PayloadTooLarge(usize),
    #[error("too many requests; retry after {} seconds", .retry_after.as_secs().max(1))]
    TooManyRequests { retry_after: Duration },
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A request the framework refused before our code ran (bad JSON, wrong media type …).
    #[error("{message}")]
    Rejected {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    /// A 4xx that carries structured details (each schema violation, the versions that
    /// exist) for the client to act on.
    #[error("{message}")]
    Detailed {
        status: StatusCode,
        code: &'static str,
        message: String,
        details: serde_json::Value,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }

    /// A 422 with its own code that names the offending field (`condition.cron`), for
    /// values that parse but cannot be used.
    pub fn unprocessable(
        code: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::Detailed {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code,
            message: message.into(),
            details: serde_json::json!({ "field": field.into() }),
        }
    }

    /// This error as about item `index` of the request's list `list`: a client's
    /// mistake (4xx) names the item in its message (`tasks[3]: …`) and carries
    /// `index` (and the field, where there is one) in `details`; server-side failures
    /// pass through unchanged, since they are about no item.
    pub fn at_item(self, list: &str, index: usize) -> Self {
        let status = self.status();
        if !status.is_client_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return self;
        }
        let code = self.code();
        let (field, mut details) = match &self {
            Self::Invalid { field, .. } => (Some(*field), serde_json::Value::Null),
            Self::Detailed { details, .. } => (None, details.clone()),
            _ => (None, serde_json::Value::Null),
        };
        let prefix = match field {
            Some(f) => format!("{list}[{index}].{f}"),
            None => format!("{list}[{index}]"),
        };
        if !details.is_object() {
            details = serde_json::json!({});
        }
        details["index"] = index.into();
        if let Some(f) = field {
            details["field"] = f.into();
        }
        Self::Detailed {
            status,
            code,
            message: format!("{prefix}: {self}"),
            details,
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized(_) | Self::MfaRequired => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Gone(_) => StatusCode::GONE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Rejected { status, .. } | Self::Detailed { status, .. } => *status,
            Self::Database(e) if is_unique_violation(e) => StatusCode::CONFLICT,
            Self::Database(e) if unavailable(e).is_some() => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. } => code,
            Self::Invalid { .. } => "invalid_input",
            Self::Unauthorized(_) => "unauthorized",
            Self::MfaRequired => "mfa_required",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::Gone(_) => "gone",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::TooManyRequests { .. } => "rate_limited",
            Self::Unavailable(_) => "unavailable",
            Self::Rejected { code, .. } | Self::Detailed { code, .. } => code,
            Self::Database(e) if is_unique_violation(e) => "conflict",
            Self::Database(e) if unavailable(e).is_some() => "unavailable",
            Self::Database(_) | Self::Internal(_) => "internal",
        }
    }
}

/// Why the database cannot serve for now, when that is the failure: the disk is full,
/// the file is read-only, or PostgreSQL is restarting or unreachable. These answer 503
/// with `Retry-After`, not 500: nothing is wrong with the request, and the same request
/// succeeds once the operator (or the restart) has fixed it.
pub fn unavailable(e: &sqlx::Error) -> Option<&'static str> {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            Some("the database is unreachable; retry in a few seconds")
        }
        sqlx::Error::Database(d) => {
            let code = d.code();
            let code = code.as_deref().unwrap_or_default();
            // SQLite primary result codes (extended codes keep them in the low byte).
            let sqlite = d
                .try_downcast_ref::<sqlx::sqlite::SqliteError>()
                .and_then(|_| code.parse::<i64>().ok())
                .map(|c| c & 0xff);
            match sqlite {
                Some(13) => Some("the server's disk is full; writes resume once space is freed"),
                Some(8) => Some("the database is read-only; writes resume once it is writable"),
                // PostgreSQL: admin shutdown, crash shutdown, cannot connect now, and
                // the connection-exception class.
                _ if code.starts_with("57P") || code.starts_with("08") => {
                    Some("the database is restarting; retry in a few seconds")
                }
                _ => None,
            }
        }
        _ => None,
    }
}

pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_input`.
    pub code: String,
    /// What went wrong and what to fix.
    pub message: String,
    /// The offending field, for `invalid_input`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Structured details where the code defines them (`schema_violation`: `violations`;
    /// `capability_not_found`: `available_versions`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
            match &self {
                Self::Unavailable(m) => format!("service unavailable: {m}"),
                Self::Database(e) if let Some(why) = unavailable(e) => {
                    format!("service unavailable: {why}")
                }
                _ => "internal error; the request id in the x-request-id header identifies it in the server log".to_owned(),
            }
        } else if let Self::Database(_) = self {
            "a record with these values already exists".to_owned()
        } else {
            self.to_string()
        };
        let field = match &self {
            Self::Invalid { field, .. } => Some((*field).to_owned()),
            Self::Detailed { details, .. } => details["field"].as_str().map(str::to_owned),
            _ => None,
        };
        let details = match &self {
            Self::Detailed { details, .. } => Some(details.clone()),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message,
                field,
                details,
            },
        };
        let mut res = (status, axum::Json(body)).into_response();
        let retry_after = match &self {
            Self::TooManyRequests { retry_after } => Some(retry_after.as_secs().max(1)),
            Self::Database(e) if unavailable(e).is_some() => Some(2),
            Self::Detailed { details, .. } => details["retry_after_seconds"].as_u64(),
            _ => None,
        };
        if let Some(secs) = retry_after {
            let secs = secs.to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        res
    }
}
