//! The one error body every endpoint uses, and the mapping of failures to status codes.
//!
//! ```json
//! {"error": {"code": "bad_request", "message": "ops[0].to: expected 64 hex characters"}}
//! ```
//!
//! Client mistakes are 4xx with a message naming the field; data this node pruned is 410;
//! back-pressure is 429; failures of
//! the node itself are 500 with a generic message (the detail goes to the log, not the client).

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

/// The error object inside the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorJson {
    /// Machine-readable code: `bad_request`, `not_found`, `gone`, `payload_too_large`,
    /// `unsupported_media_type`, `unauthorized`, `overloaded`, `not_ready`, `internal`.
    pub code: String,
    /// What went wrong, for a human.
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a ErrorJson,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Body.
    pub body: ErrorJson,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorJson {
                code: code.into(),
                message: message.into(),
            },
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 410: it existed here, and was pruned.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "gone", message)
    }

    /// 413.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// 415.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 429.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", message)
    }

    /// 503.
    pub fn not_ready(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message)
    }

    /// 500; `detail` is logged, not returned.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error answering an API request");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the node's log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(Body { error: &self.body })).into_response()
    }
}

/// Maps axum's extractor rejections (bad JSON, bad path, body too large, wrong content type)
/// to the common body: 413, 415, and 400 for everything else a client sent wrong.
impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(r: axum::extract::rejection::JsonRejection) -> Self {
        rejection(r.status(), r.body_text())
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(r: axum::extract::rejection::BytesRejection) -> Self {
        rejection(r.status(), r.body_text())
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(r: axum::extract::rejection::PathRejection) -> Self {
        rejection(r.status(), r.body_text())
    }
}

/// Every malformed body is a 400, whether it is not JSON or JSON of the wrong shape (axum
/// answers 422 for the latter; one status for both is what clients and the document expect).
fn rejection(status: StatusCode, text: String) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(text),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::unsupported_media_type(text),
        s if s.is_server_error() => ApiError::internal(text),
        _ => ApiError::bad_request(text),
    }
}
