//! Request body and query extractors whose rejections use our error format.
//!
//! axum's own `Json` rejects with a plain-text body; clients of this API always get
//! `{"error":{"code","message"}}` naming what to fix.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::AppError;

/// `Json<T>` with API-shaped errors: 400 malformed, 413 too large, 415 wrong media
/// type, 422 wrong fields or types.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

fn json_rejection(rej: JsonRejection) -> AppError {
    let status = rej.status();
    let (code, message) = match &rej {
        JsonRejection::JsonDataError(e) => (
            "invalid_input",
            format!(
                "request body has wrong fields or types: {}",
                e.body_text().trim_start_matches(
                    "Failed to deserialize the JSON body into the target type: "
                )
            ),
        ),
        JsonRejection::JsonSyntaxError(e) => (
            "malformed_json",
            format!(
                "request body is not valid JSON: {}",
                e.body_text()
                    .trim_start_matches("Failed to parse the request body as JSON: ")
            ),
        ),
        JsonRejection::MissingJsonContentType(_) => (
            "unsupported_media_type",
            "send the body with Content-Type: application/json".to_owned(),
        ),
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => {
            ("payload_too_large", "request body is too large".to_owned())
        }
        _ => ("bad_request", rej.body_text()),
    };
    AppError::Rejected {
        status,
        code,
        message,
    }
}

/// `Query<T>` with API-shaped errors.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Self(v)),
            Err(rej) => Err(query_rejection(rej)),
        }
    }
}

fn query_rejection(rej: QueryRejection) -> AppError {
    AppError::Rejected {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_query",
        message: rej.body_text(),
    }
}

/// Answers 413 at once when a request declares (`Content-Length`) a body over `max`
/// bytes. The body limit alone refuses only after reading `max` bytes, and by then the
/// client is still sending what it cannot deliver, so it often sees the connection
/// closed instead of the answer.
pub async fn refuse_declared_oversize(
    max: usize,
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return AppError::PayloadTooLarge(max).into_response();
    }
    next.run(req).await
}
