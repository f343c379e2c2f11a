//! The HTTP edge: one router for the transports (WebSocket, SSE,
//! long-polling), the server API, health, metrics, the JavaScript SDK and
//! the demo page. Handlers are thin: they parse, call the node, and
//! shape JSON.

pub mod api;
pub mod assets;
pub mod cors;
pub mod demo;
pub mod direct;
pub mod error;
pub mod ops;
pub mod origin;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get};
use axum::Router;

use crate::node::Node;
use crate::transport::{long_poll, send, sse, websocket};

/// Every route of a node.
pub fn router(node: Arc<Node>) -> Router {
    let body_limit = node.config.client.max_data_size * 4 + 64 * 1024;
    // The HTTP transports answer browsers on other origins (CORS).
    let http_transports = Router::new()
        .route("/connection/sse", get(sse::open).options(no_content))
        .route(
            "/connection/send",
            axum::routing::post(send::send).options(no_content),
        )
        .route(
            "/connection/poll",
            axum::routing::post(long_poll::connect)
                .get(long_poll::poll)
                .options(no_content),
        )
        .layer(cors::CorsLayer::new(node.clone()));
    Router::new()
        .route("/connection/websocket", any(websocket::upgrade))
        .merge(http_transports)
        .merge(api::router())
        .merge(ops::router())
        .merge(assets::router())
        .merge(demo::router(&node))
        .fallback(|| async { not_found() })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(node)
}

/// Preflights are answered by the CORS layer; this is never reached.
async fn no_content() -> axum::http::StatusCode {
    axum::http::StatusCode::NO_CONTENT
}

/// The answer for a path no route serves (JSON, code 104).
fn not_found() -> axum::response::Response {
    error::ApiError::new(crate::codes::ErrorCode::UnknownCommand, "no such endpoint").into()
}
