//! `application/problem+json` errors (RFC 9457): every error response of the API.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use arbor_storage::{AppendError, StorageError};

/// An API error: status, a stable type slug, and a human-readable detail.
#[derive(Debug, Clone)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Short slug naming the kind of problem (becomes the `type` URI).
    pub kind: &'static str,
    /// What exactly went wrong.
    pub detail: String,
}

/// A problem on the wire (`application/problem+json`, RFC 9457).
#[derive(Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemJson<'a> {
    /// `https://arbor.dev/problems/<slug>`: the kind of problem (`bad-request`,
    /// `not-found`, `conflict`, `unprocessable`, `too-large`, `unauthorized`,
    /// `forbidden`, `rate-limited`, `timeout`, `unavailable`, …).
    #[serde(rename = "type")]
    #[schema(format = "uri")]
    kind: String,
    /// The status's reason phrase.
    title: &'a str,
    /// The HTTP status.
    status: u16,
    /// What exactly went wrong.
    detail: &'a str,
}

impl Problem {
    /// A problem with the given status, slug and detail.
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            kind,
            detail: detail.into(),
        }
    }

    /// 400.
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    /// 413.
    pub fn too_large(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", detail)
    }

    /// 503 or 500 for a storage failure.
    pub fn storage(e: &StorageError) -> Problem {
        match e {
            StorageError::Closed | StorageError::Poisoned(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
            _ => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage-error",
                e.to_string(),
            ),
        }
    }
}

impl From<StorageError> for Problem {
    fn from(e: StorageError) -> Problem {
        tracing::error!(error = %e, "storage error");
        Problem::storage(&e)
    }
}

impl From<AppendError> for Problem {
    fn from(e: AppendError) -> Problem {
        let detail = e.to_string();
        match e {
            AppendError::Invalid(_) => Problem::bad_request(detail),
            AppendError::WorkflowNotFound(_) | AppendError::NodeNotFound(_) => {
                Problem::not_found(detail)
            }
            AppendError::Unprocessable(_) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", detail)
            }
            AppendError::Conflict(_) => Problem::new(StatusCode::CONFLICT, "conflict", detail),
            AppendError::Storage(s) => Problem::from(s),
            _ => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = ProblemJson {
            kind: format!("https://arbor.dev/problems/{}", self.kind),
            title,
            status: self.status.as_u16(),
            detail: &self.detail,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            bytes,
        )
            .into_response()
    }
}
