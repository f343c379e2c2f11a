//! The server API's error body: `{"error":{"code":…,"message":…}}` with the
//! HTTP status of the code (same table as the protocol's errors).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::codes::{CommandError, ErrorCode};

/// An API failure.
#[derive(Debug)]
pub struct ApiError(pub CommandError);

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(CommandError::with(code, message))
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        ApiError(e)
    }
}

impl From<ApiError> for Response {
    fn from(e: ApiError) -> Self {
        e.into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({"error": {"code": self.0.code.code(), "message": self.0.message}});
        (status, Json(body)).into_response()
    }
}
