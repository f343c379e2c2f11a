//! Node-to-node requests over the broker's control channel.
//!
//! With many nodes behind a plain load balancer, a long-poll or a
//! `POST /connection/send` may land on a node that does not hold the
//! session. Session ids start with the id of the node that holds them
//! (`<node>.<random>`), so the receiving node forwards the request to that
//! node through [`Broker::control`](crate::broker::Broker::control) and
//! relays the answer. The same channel carries cluster-wide server API
//! calls (disconnect a user everywhere, list channels across nodes, count
//! a user's connections on every node, every node's figures).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::codes::{CommandError, Disconnect, ErrorCode};
use crate::http::error::ApiError;
use crate::node::Node;

/// A message between nodes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// Close every connection of `user` (`/api/disconnect` on any node).
    Disconnect {
        user: String,
        code: u16,
        reason: String,
    },
    /// Commands for a session this node holds.
    Send {
        from: String,
        request: u64,
        session: String,
        user: String,
        /// Each command's JSON text, as the client wrote it.
        commands: Vec<String>,
    },
    /// A long-poll for a session this node holds.
    Poll {
        from: String,
        request: u64,
        session: String,
        cursor: u64,
    },
    /// This node's channels and their subscriber counts.
    Channels { from: String, request: u64 },
    /// How many connections `user` has on this node.
    UserConnections {
        from: String,
        request: u64,
        user: String,
    },
    /// This node's figures, as in `/api/info`.
    Info { from: String, request: u64 },
    /// The answer to a request: a JSON body (as text), or an error.
    /// (Text, not raw JSON: raw values do not survive the tagged enum.)
    Reply {
        request: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<(u16, String)>,
    },
}

/// A reply as the requesting node sees it.
pub type Answer = Result<Box<RawValue>, ApiError>;

/// Requests in flight from this node.
#[derive(Default)]
pub struct Cluster {
    next: AtomicU64,
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<Answer>>>,
}

impl Cluster {
    pub fn new() -> Self {
        Cluster::default()
    }

    /// Sends the request `make(id)` to `to` and waits for its answer.
    pub async fn ask(
        &self,
        node: &Node,
        to: &str,
        wait: Duration,
        make: impl FnOnce(u64) -> Control,
    ) -> Answer {
        let (id, mut rx) = self.open();
        node.broker.control(Some(to), encode(&make(id)));
        let answer = tokio::time::timeout(wait, rx.recv()).await;
        self.close(id);
        match answer {
            Ok(Some(answer)) => answer,
            _ => Err(ApiError::new(
                ErrorCode::Internal,
                "the node holding this session did not answer",
            )),
        }
    }

    /// Sends `make(id)` to every node and gathers the answers that arrive
    /// within `window`.
    pub async fn gather(
        &self,
        node: &Node,
        window: Duration,
        make: impl FnOnce(u64) -> Control,
    ) -> Vec<Box<RawValue>> {
        let (id, mut rx) = self.open();
        node.broker.control(None, encode(&make(id)));
        let deadline = tokio::time::Instant::now() + window;
        let mut answers = Vec::new();
        while let Ok(Some(answer)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            if let Ok(body) = answer {
                answers.push(body);
            }
        }
        self.close(id);
        answers
    }

    fn open(&self) -> (u64, mpsc::UnboundedReceiver<Answer>) {
        let id = self.next.fetch_add(1, Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(id, tx);
        (id, rx)
    }

    fn close(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn answered(&self, request: u64, answer: Answer) {
        if let Some(tx) = self.lock().get(&request) {
            let _ = tx.send(answer);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::UnboundedSender<Answer>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The node that holds session `id`.
pub fn owner(session: &str) -> Option<&str> {
    session.split_once('.').map(|(node, _)| node)
}

/// Handles a control message that arrived for this node.
pub async fn handle(node: Arc<Node>, message: Bytes) {
    let control: Control = match serde_json::from_slice(&message) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("ignoring a malformed control message: {e}");
            return;
        }
    };
    match control {
        Control::Disconnect { user, code, reason } => {
            let d = Disconnect {
                code,
                reason,
                reconnect: code < 3500,
            };
            node.disconnect_local(&user, d).await;
        }
        Control::Send {
            from,
            request,
            session,
            user,
            commands,
        } => {
            let commands: Vec<Box<RawValue>> = commands
                .into_iter()
                .filter_map(|c| RawValue::from_string(c).ok())
                .collect();
            let answer = crate::transport::send::deliver_local(&node, &session, &user, &commands)
                .await
                .map(|accepted| json(&serde_json::json!({ "accepted": accepted })));
            reply(&node, &from, request, answer);
        }
        Control::Poll {
            from,
            request,
            session,
            cursor,
        } => {
            let answer = crate::transport::long_poll::wait_local(&node, &session, cursor)
                .await
                .map(|body| json_bytes(&body));
            reply(&node, &from, request, answer);
        }
        Control::Channels { from, request } => {
            let channels: HashMap<String, usize> = node
                .hub
                .channels()
                .into_iter()
                .map(|(name, n)| (name.to_string(), n))
                .collect();
            reply(&node, &from, request, Ok(json(&channels)));
        }
        Control::UserConnections {
            from,
            request,
            user,
        } => {
            let count = node.hub.connections(Some(&user)).len();
            let answer = serde_json::json!({ "node": &*node.id, "connections": count });
            reply(&node, &from, request, Ok(json(&answer)));
        }
        Control::Info { from, request } => {
            reply(&node, &from, request, Ok(json(&node.stats())));
        }
        Control::Reply {
            request,
            body,
            error,
        } => {
            let answer = match (body, error) {
                (Some(body), _) => RawValue::from_string(body)
                    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string())),
                (None, Some((code, message))) => Err(ApiError(CommandError::with(
                    ErrorCode::from_code(code).unwrap_or(ErrorCode::Internal),
                    message,
                ))),
                (None, None) => Err(ApiError::new(ErrorCode::Internal, "empty reply")),
            };
            node.cluster.answered(request, answer);
        }
    }
}

fn reply(node: &Node, to: &str, request: u64, answer: Answer) {
    let (body, error) = match answer {
        Ok(body) => (Some(body.get().to_owned()), None),
        Err(ApiError(e)) => (None, Some((e.code.code(), e.message))),
    };
    node.broker.control(
        Some(to),
        encode(&Control::Reply {
            request,
            body,
            error,
        }),
    );
}

fn encode(control: &Control) -> Bytes {
    Bytes::from(serde_json::to_vec(control).unwrap_or_default())
}

fn json(value: &impl Serialize) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| empty())
}

fn json_bytes(body: &[u8]) -> Box<RawValue> {
    std::str::from_utf8(body)
        .ok()
        .and_then(|s| RawValue::from_string(s.to_owned()).ok())
        .unwrap_or_else(empty)
}

fn empty() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).expect("valid JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_name_their_node() {
        assert_eq!(owner("n0de.abc"), Some("n0de"));
        assert_eq!(owner("legacy"), None);
    }

    #[test]
    fn control_messages_round_trip() {
        let c = Control::Reply {
            request: 7,
            body: None,
            error: Some((114, "gone".into())),
        };
        let back: Control = serde_json::from_slice(&encode(&c)).unwrap();
        assert!(matches!(
            back,
            Control::Reply {
                request: 7,
                error: Some((114, _)),
                ..
            }
        ));
        let c = Control::Send {
            from: "a".into(),
            request: 1,
            session: "b.x".into(),
            user: "42".into(),
            commands: vec![r#"{"id":1,"type":"publish","data":{"z":1,"a":2}}"#.into()],
        };
        match serde_json::from_slice(&encode(&c)).unwrap() {
            // The command's text is kept byte for byte (key order included).
            Control::Send { commands, .. } => assert_eq!(
                commands,
                [r#"{"id":1,"type":"publish","data":{"z":1,"a":2}}"#]
            ),
            other => panic!("{other:?}"),
        }
    }
}
