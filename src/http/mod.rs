//! The HTTP edge: one router for the WebSocket endpoint, the server API,
//! health, metrics and the JavaScript SDK. Handlers are thin: they parse, call the node, and
//! shape JSON.

pub mod api;
pub mod assets;
pub mod error;
pub mod ops;
pub mod origin;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::any;
use axum::Router;

use crate::node::Node;

/// Every route of a node.
pub fn router(node: Arc<Node>) -> Router {
    let body_limit = node.config.client.max_data_size * 4 + 64 * 1024;
    Router::new()
        .route(
            "/connection/websocket",
            any(crate::transport::websocket::upgrade),
        )
        .merge(api::router())
        .merge(ops::router())
        .merge(assets::router())
        .fallback(|| async { not_found() })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(node)
}

/// The answer for a path no route serves (JSON, code 104).
fn not_found() -> axum::response::Response {
    error::ApiError::new(crate::codes::ErrorCode::UnknownCommand, "no such endpoint").into()
}
