//! The server API (`/api/*`), for the application's backend.
//!
//! Every call is a `POST` with a JSON body and `Authorization: apikey <key>`.
//! Success is `{"result":{…}}`; failure is `{"error":{"code":…,"message":…}}`
//! with the codes of docs/protocol.md.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use crate::channel::pattern_matches;
use crate::cluster::Control;
use crate::codes::{Disconnect, DisconnectCode, ErrorCode};
use crate::node::Node;
use crate::stream::{RawJson, StreamPosition};

pub fn router() -> Router<Arc<Node>> {
    Router::new().route("/api/{method}", post(call))
}

async fn call(
    State(node): State<Arc<Node>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    node.metrics.api_requests.fetch_add(1, Relaxed);
    let result = match authorize(&node, &headers) {
        Ok(()) => dispatch(&node, &method, &body).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(value) => Json(json!({ "result": value })).into_response(),
        Err(e) => {
            node.metrics.error(e.0.code);
            e.into_response()
        }
    }
}

fn authorize(node: &Node, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "missing `Authorization: apikey <key>` header",
        ));
    };
    let given = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("apikey "))
        .map(str::trim);
    match (&node.config.auth.api_key, given) {
        (Some(key), Some(given)) if constant_time_eq(key.as_bytes(), given.as_bytes()) => Ok(()),
        _ => Err(ApiError::new(ErrorCode::Unauthorized, "invalid API key")),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes = if bytes.is_empty() { &b"{}"[..] } else { bytes };
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("bad request body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    channel: String,
    data: RawJson,
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastBody {
    channels: Vec<String>,
    data: RawJson,
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelBody {
    channel: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryBody {
    channel: String,
    #[serde(default)]
    since: Option<StreamPosition>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    reverse: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelsBody {
    #[serde(default)]
    pattern: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    user: String,
}

/// One node's answer to [`Control::UserConnections`].
#[derive(Deserialize)]
struct NodeCount {
    node: String,
    connections: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    user: String,
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    reason: Option<String>,
}

async fn dispatch(node: &Node, method: &str, bytes: &[u8]) -> Result<Value, ApiError> {
    match method {
        "publish" => {
            let b: PublishBody = body(bytes)?;
            let (_, ns) = node.resolve(&b.channel)?;
            let position = node
                .publish(&b.channel, ns, b.data, None, b.idempotency_key, None)?
                .await?;
            Ok(json!({ "position": position }))
        }
        "broadcast" => {
            let b: BroadcastBody = body(bytes)?;
            if b.channels.is_empty() {
                return Err(ApiError::new(ErrorCode::BadRequest, "`channels` is empty"));
            }
            // Every channel's publication is submitted before any is
            // awaited, so they wait for their histories side by side.
            let submitted: Vec<_> = b
                .channels
                .iter()
                .map(|channel| {
                    let (_, ns) = node.resolve(channel)?;
                    node.publish(
                        channel,
                        ns,
                        b.data.clone(),
                        None,
                        b.idempotency_key.clone(),
                        None,
                    )
                })
                .collect();
            let mut responses = Vec::with_capacity(b.channels.len());
            for submitted in submitted {
                let outcome = match submitted {
                    Ok(published) => published.await,
                    Err(e) => Err(e),
                };
                responses.push(match outcome {
                    Ok(position) => json!({ "position": position }),
                    Err(e) => json!({ "error": { "code": e.code.code(), "message": e.message } }),
                });
            }
            Ok(json!({ "responses": responses }))
        }
        "presence" => {
            let b: ChannelBody = body(bytes)?;
            presence_enabled(node, &b.channel)?;
            let clients = node.presence.get(&b.channel).await.map_err(internal)?;
            let clients: BTreeMap<_, _> = clients.iter().map(|c| (c.client.as_str(), c)).collect();
            Ok(json!({ "clients": clients }))
        }
        "presence_stats" => {
            let b: ChannelBody = body(bytes)?;
            presence_enabled(node, &b.channel)?;
            let stats = node.presence.stats(&b.channel).await.map_err(internal)?;
            Ok(json!(stats))
        }
        "history" => {
            let b: HistoryBody = body(bytes)?;
            let (_, ns) = node.resolve(&b.channel)?;
            if ns.history_size == 0 {
                return Err(ApiError::new(
                    ErrorCode::NotAvailable,
                    "history is not enabled for this namespace",
                ));
            }
            let recovering = b.since.is_some();
            let limit = b.limit.unwrap_or(ns.history_size).min(ns.history_size);
            let page = node
                .history(
                    &b.channel,
                    ns,
                    crate::stream::HistoryQuery {
                        since: b.since,
                        limit,
                        reverse: b.reverse,
                    },
                )
                .await?;
            let mut result =
                json!({ "position": page.position, "publications": page.publications });
            if recovering {
                result["recovered"] = json!(page.recovered);
            }
            Ok(result)
        }
        "channels" => {
            let b: ChannelsBody = body(bytes)?;
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            if node.is_clustered() {
                // Every node (this one included) answers with its own.
                let answers: Vec<BTreeMap<String, usize>> =
                    ask_every_node(node, |from, request| Control::Channels { from, request }).await;
                for part in answers {
                    for (c, n) in part {
                        *counts.entry(c).or_default() += n;
                    }
                }
            } else {
                for (c, n) in node.hub.channels() {
                    counts.insert(c.to_string(), n);
                }
            }
            let channels: BTreeMap<String, Value> = counts
                .into_iter()
                .filter(|(c, _)| b.pattern.as_deref().is_none_or(|p| pattern_matches(p, c)))
                .map(|(c, n)| (c, json!({ "num_clients": n })))
                .collect();
            Ok(json!({ "channels": channels }))
        }
        "disconnect" => {
            let b: DisconnectBody = body(bytes)?;
            let code = match b.code {
                None => DisconnectCode::ForceDisconnect.code(),
                Some(c) if (3000..=4999).contains(&c) => c,
                Some(c) => {
                    return Err(ApiError::new(
                        ErrorCode::BadRequest,
                        format!("`code` {c} is outside 3000–4999"),
                    ))
                }
            };
            let known = DisconnectCode::from_code(code);
            let disconnect = Disconnect {
                code,
                reason: b.reason.unwrap_or_else(|| {
                    known
                        .map_or("disconnected by server", |k| k.reason())
                        .to_string()
                }),
                reconnect: code < 3500,
            };
            let n = node.disconnect_user(&b.user, disconnect).await;
            Ok(json!({ "disconnected": n }))
        }
        "info" => {
            let _: Value = body(bytes)?;
            let mut info = node.stats();
            // Every node's figures (this one's included), by node id.
            let mut nodes: Vec<Value> = if node.is_clustered() {
                ask_every_node(node, |from, request| Control::Info { from, request }).await
            } else {
                vec![info.clone()]
            };
            if !nodes.iter().any(|n| n["node"] == info["node"]) {
                // Its own answer did not come back (the broker is away).
                nodes.push(info.clone());
            }
            nodes.sort_by(|a, b| a["node"].as_str().cmp(&b["node"].as_str()));
            info["nodes"] = Value::Array(nodes);
            Ok(info)
        }
        "user_connections" => {
            let b: UserBody = body(bytes)?;
            if b.user.is_empty() {
                return Err(ApiError::new(ErrorCode::BadRequest, "`user` is empty"));
            }
            let mut nodes: BTreeMap<String, u64> = BTreeMap::new();
            if node.is_clustered() {
                let answers: Vec<NodeCount> =
                    ask_every_node(node, |from, request| Control::UserConnections {
                        from,
                        request,
                        user: b.user.clone(),
                    })
                    .await;
                for part in answers {
                    nodes.insert(part.node, part.connections);
                }
            }
            // This node's count directly (also when its broker is away).
            let here = node.hub.connections(Some(&b.user)).len() as u64;
            nodes.insert(node.id.to_string(), here);
            nodes.retain(|_, n| *n > 0);
            Ok(json!({
                "user": b.user,
                "connections": nodes.values().sum::<u64>(),
                "nodes": nodes,
            }))
        }
        other => Err(ApiError::new(
            ErrorCode::UnknownCommand,
            format!("unknown API method `{other}`"),
        )),
    }
}

/// How long a cluster-wide API call gathers the other nodes' answers.
const CLUSTER_WINDOW: std::time::Duration = std::time::Duration::from_millis(300);

/// Sends `make(this node's id, request id)` to every node (this one
/// included) and parses the answers that arrive within [`CLUSTER_WINDOW`].
async fn ask_every_node<T: DeserializeOwned>(
    node: &Node,
    make: impl FnOnce(String, u64) -> Control,
) -> Vec<T> {
    let from = node.id.to_string();
    node.cluster
        .gather(node, CLUSTER_WINDOW, |request| make(from, request))
        .await
        .iter()
        .filter_map(|answer| serde_json::from_str(answer.get()).ok())
        .collect()
}

fn presence_enabled(node: &Node, channel: &str) -> Result<(), ApiError> {
    let (_, ns) = node.resolve(channel)?;
    if ns.presence {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::NotAvailable,
            "presence is not enabled for this namespace",
        ))
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!("api: {e}");
    ApiError::new(ErrorCode::Internal, "internal server error")
}
