//! The API's error answers: every one is JSON `{"error": "<one sentence>"}` with a status that
//! [`ApiError`] maps exhaustively, so a new kind of failure needs a decision, not a default.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::dispatch::Refused;
use crate::outbox::StoreError;

/// What `Retry-After` says when an observer's queue is full or the outbox failed, in seconds.
const RETRY_AFTER_SECS: &str = "1";

/// Why a request was not served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request is malformed: 400.
    #[error("{0}")]
    BadRequest(String),
    /// Nothing by that name: 404.
    #[error("{0}")]
    NotFound(String),
    /// The request does not fit how this host was started: 409.
    #[error("{0}")]
    Conflict(String),
    /// The outbox cannot be read or written now: 503.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A submission was refused: 503 with `Retry-After` when it may succeed later, 413 when it
    /// never can.
    #[error(transparent)]
    Refused(#[from] Refused),
}

impl ApiError {
    /// The status this error is answered with, and whether to add `Retry-After`.
    fn status(&self) -> (StatusCode, bool) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, false),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, false),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, false),
            ApiError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, false),
            ApiError::Refused(refused) => match refused {
                Refused::Busy { .. } | Refused::Unavailable(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, true)
                }
                Refused::TooLarge { .. } | Refused::EventTooLarge { .. } => {
                    (StatusCode::PAYLOAD_TOO_LARGE, false)
                }
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, retry_later) = self.status();
        let mut response = error(status, self.to_string());
        if retry_later {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// An error answer with `status`, for the routes whose status is not one of [`ApiError`]'s.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// axum's [`Query`], refusing an unknown or malformed parameter with a 400 that names it.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::BadRequest(format!(
                "{}; see the README's HTTP section for the parameters",
                rejection.body_text()
            ))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_503_with_retry_after_or_413() {
        let busy = ApiError::from(Refused::Busy {
            handler: "o".into(),
            wanted: 2,
            capacity: 1,
        });
        assert_eq!(busy.status(), (StatusCode::SERVICE_UNAVAILABLE, true));
        let response = busy.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let large = ApiError::from(Refused::TooLarge {
            handler: "o".into(),
            wanted: 2,
            capacity: 1,
        });
        assert_eq!(large.status(), (StatusCode::PAYLOAD_TOO_LARGE, false));
    }
}
