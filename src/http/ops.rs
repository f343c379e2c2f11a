//! Operations endpoints: `GET /health` and `GET /metrics` (Prometheus).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::node::Node;

pub fn router() -> Router<Arc<Node>> {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
}

/// 200 while the node serves (`"degraded"` while its broker is away: it
/// still serves its own clients), 503 once it is shutting down.
async fn health(State(node): State<Arc<Node>>) -> impl IntoResponse {
    if node.is_shutting_down() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting_down"})),
        )
    } else if !node.broker.healthy() {
        (
            StatusCode::OK,
            Json(json!({"status": "degraded", "broker": "unavailable"})),
        )
    } else {
        (StatusCode::OK, Json(json!({"status": "ok"})))
    }
}

async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let (clients, users) = node.hub.connection_stats();
    let channels = node.hub.channels().len() as u64;
    let (sessions, detached) = node.sessions.stats();
    let text = node.metrics.render(&[
        (
            "sessions",
            "Connected sessions on this node (any transport).",
            sessions as u64,
        ),
        (
            "sessions_detached",
            "Sessions waiting for a resume (no transport attached).",
            detached as u64,
        ),
        (
            "connections",
            "Authenticated connections on this node.",
            clients as u64,
        ),
        (
            "users",
            "Distinct users connected to this node.",
            users as u64,
        ),
        (
            "channels",
            "Channels with subscribers on this node.",
            channels,
        ),
    ]);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}
