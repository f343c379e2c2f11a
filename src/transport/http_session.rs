//! What the HTTP transports (SSE, long-polling, send) share: reading the
//! token and the session from a request, and answering refusals with the
//! API's error body.

use axum::http::{header, HeaderMap};

use crate::client::Refusal;
use crate::codes::{CommandError, ErrorCode};
use crate::http::error::ApiError;

/// The token from `Authorization: Bearer …`, else from the query.
pub fn token(headers: &HeaderMap, query: Option<&str>) -> Result<String, ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string());
    bearer
        .or_else(|| query.map(str::to_string))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "a connection token is required: `Authorization: Bearer <jwt>` or `?token=<jwt>`",
            )
        })
}

/// A refused connect or resume as an HTTP error.
pub fn refused(refusal: Refusal) -> ApiError {
    ApiError(refusal.error)
}

/// A required query parameter.
pub fn required<T>(value: Option<T>, name: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| {
        ApiError(CommandError::with(
            ErrorCode::BadRequest,
            format!("query parameter `{name}` is required"),
        ))
    })
}

/// A `u64` query parameter (`seq`, `cursor`), with an error naming it.
pub fn number(value: Option<&str>, name: &str) -> Result<Option<u64>, ApiError> {
    value
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError(CommandError::with(
                    ErrorCode::BadRequest,
                    format!("query parameter `{name}` must be a non-negative integer"),
                ))
            })
        })
        .transpose()
}

/// The session with this id, or 404/114.
pub fn find(
    node: &crate::node::Node,
    id: &str,
) -> Result<std::sync::Arc<crate::session::Session>, ApiError> {
    node.sessions.get(id).ok_or_else(session_not_found)
}

/// 404/114.
pub fn session_not_found() -> ApiError {
    ApiError::new(
        ErrorCode::SessionNotFound,
        "no such session: it expired or ended; connect again and recover with `since`",
    )
}

/// Reads a request body of at most `limit` bytes (413/111 beyond).
pub async fn read_body(body: axum::body::Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            ErrorCode::MessageTooLarge,
            format!("the body is over {limit} bytes"),
        )
    })
}

/// The largest body a transport request may carry: a batch of commands
/// each up to `max_data_size`.
pub fn body_limit(node: &crate::node::Node) -> usize {
    node.config.client.max_data_size * 4 + 64 * 1024
}
