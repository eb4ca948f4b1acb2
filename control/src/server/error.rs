//! API errors (`{"error":{"code","message"}}`) and the JSON body extractor that produces them.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Sent as `Retry-After` (seconds).
    pub retry_after: Option<std::time::Duration>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn too_many_requests(message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
        e.retry_after = Some(retry_after);
        e
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
        e.retry_after = Some(std::time::Duration::from_secs(1));
        e
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error; the server log has details",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = outpost_api::ErrorBody {
            error: outpost_api::ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(d) = self.retry_after {
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            if let Ok(v) = axum::http::HeaderValue::from_str(&secs.max(1).to_string()) {
                r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        r
    }
}

/// A store error, with `NotFound` answered by `not_found` (a message that says what to do).
pub fn store_or(e: StoreError, not_found: impl FnOnce() -> ApiError) -> ApiError {
    match e {
        StoreError::NotFound => not_found(),
        e => e.into(),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found("not found"),
            StoreError::Conflict(m) => ApiError::conflict(m),
            e if e.is_busy() => ApiError::unavailable(
                "control is overloaded (its database connections stayed busy); retry in a few seconds",
            ),
            e if e.is_invalid_text() => ApiError::bad_request(
                "a value holds a character the database cannot store (a NUL, \\u0000); remove it",
            ),
            e => ApiError::internal(e),
        }
    }
}

/// `axum::Json` whose rejections are API errors: 413 for oversized bodies, 415 without a JSON
/// content type, 400 for syntax errors and unknown or missing fields.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

fn json_rejection(rej: JsonRejection) -> ApiError {
    let status = rej.status();
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(status, "payload_too_large", "request body is too large")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            status,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        ),
        _ => ApiError::bad_request(format!("invalid request body: {}", rej.body_text())),
    }
}

/// `axum::extract::Path` whose rejections are API errors (a JSON 400, not axum's plain text).
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(rej) => Err(ApiError::bad_request(format!(
                "invalid path: {}",
                rej.body_text()
            ))),
        }
    }
}

/// `axum::extract::Query` whose rejections are API errors (a JSON 400, not axum's plain text).
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(rej) => Err(ApiError::bad_request(format!(
                "invalid query: {}",
                rej.body_text()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_store_is_a_503_with_retry_after_not_an_internal_error() {
        let busy: ApiError = StoreError::Db(sqlx::Error::PoolTimedOut).into();
        assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(busy.message.contains("retry"), "{}", busy.message);
        let r = busy.into_response();
        assert_eq!(r.headers()[axum::http::header::RETRY_AFTER], "1");
        let other: ApiError = StoreError::Db(sqlx::Error::RowNotFound).into();
        assert_eq!(other.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
