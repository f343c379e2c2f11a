//! CORS for the HTTP transports (`/connection/sse`, `/send`, `/poll`):
//! browser pages on origins in `allowed_origins` (or the node's own) may
//! call them; other origins get 403/103, preflights included.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::codes::ErrorCode;
use crate::http::error::ApiError;
use crate::node::Node;

/// How long a browser may cache a preflight answer (seconds).
const MAX_AGE: &str = "600";

/// Axum middleware.
pub async fn cors(State(node): State<Arc<Node>>, request: Request, next: Next) -> Response {
    if !super::origin::allowed(&node.config.allowed_origins, request.headers()) {
        return ApiError::new(
            ErrorCode::PermissionDenied,
            "origin not allowed (see allowed_origins)",
        )
        .into_response();
    }
    let origin = request.headers().get(header::ORIGIN).cloned();
    let mut response = if request.method() == Method::OPTIONS {
        let mut preflight = StatusCode::NO_CONTENT.into_response();
        let headers = preflight.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, Content-Type, Last-Event-ID"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE),
        );
        preflight
    } else {
        next.run(request).await
    };
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}
