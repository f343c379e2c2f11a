//! `POST /connection/send?session=…`: commands for a session whose frames
//! flow over SSE or long-polling. The body is one command or a JSON array of
//! commands, handled in order as if they had arrived on a WebSocket
//! (consecutive publishes side by side, replies in command order); their
//! replies arrive on the stream or the next poll. The token must be the
//! session user's.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::http_session::{body_limit, find, read_body, required, session_not_found, token};
use crate::auth::TokenError;
use crate::cluster::Control;
use crate::codes::ErrorCode;
use crate::http::error::ApiError;
use crate::node::Node;
use crate::session::{Handled, Publishing, Session, MAX_PUBLISHES_IN_FLIGHT};

/// How long a node waits for the node holding a session to take commands.
const FORWARD_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Deserialize)]
pub struct SendQuery {
    session: Option<String>,
    token: Option<String>,
}

/// Axum handler.
pub async fn send(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Query(query): Query<SendQuery>,
    body: Body,
) -> Response {
    let body = match read_body(body, body_limit(&node)).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    match handle(&node, &headers, query, &body).await {
        Ok(accepted) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "accepted": accepted })),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn handle(
    node: &Arc<Node>,
    headers: &HeaderMap,
    query: SendQuery,
    body: &[u8],
) -> Result<usize, ApiError> {
    let id = required(query.session, "session")?;
    let token = token(headers, query.token.as_deref())?;
    let claims = node.verifier.connection(&token).map_err(|e| match e {
        TokenError::Expired => ApiError::new(ErrorCode::TokenExpired, "token expired"),
        TokenError::Invalid(why) => ApiError::new(ErrorCode::Unauthorized, why),
    })?;
    let commands = split(body)?;
    for command in &commands {
        let text = command.get();
        // Connecting is the opening request's job.
        if is_connect(text) {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "`connect` is not accepted here: SSE and long-polling connect with their own request",
            ));
        }
    }
    match node.sessions.get(&id) {
        Some(_) => deliver_local(node, &id, &claims.sub, &commands).await,
        None => match crate::cluster::owner(&id).filter(|owner| **owner != *node.id) {
            // Another node holds the session: hand the commands over.
            Some(owner) => {
                let answer = node
                    .cluster
                    .ask(node, owner, FORWARD_WAIT, |request| Control::Send {
                        from: node.id.to_string(),
                        request,
                        session: id.clone(),
                        user: claims.sub.clone(),
                        commands: commands.iter().map(|c| c.get().to_owned()).collect(),
                    })
                    .await?;
                #[derive(Deserialize)]
                struct Accepted {
                    accepted: usize,
                }
                serde_json::from_str::<Accepted>(answer.get())
                    .map(|a| a.accepted)
                    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
            }
            None => Err(session_not_found()),
        },
    }
}

/// Hands `commands` to session `id` of this node, whose user must be `user`.
pub async fn deliver_local(
    node: &Arc<Node>,
    id: &str,
    user: &str,
    commands: &[Box<RawValue>],
) -> Result<usize, ApiError> {
    let session = find(node, id)?;
    if session.user().is_none_or(|owner| **owner != *user) {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "the session belongs to another user",
        ));
    }
    // Publishes start as they come and wait side by side; anything else
    // waits until their replies are pushed (replies keep the commands' order).
    let mut publishing: VecDeque<Publishing> = VecDeque::new();
    for command in commands {
        if session.has_ended() {
            // Those started still happened: answer them (and count them).
            push_replies(&session, &mut publishing, 0).await;
            return Err(ApiError::new(
                ErrorCode::SessionNotFound,
                "the session ended",
            ));
        }
        push_replies(&session, &mut publishing, MAX_PUBLISHES_IN_FLIGHT - 1).await;
        if let Some(started) = session.start_publish(command.get(), None) {
            publishing.push_back(started);
            continue;
        }
        push_replies(&session, &mut publishing, 0).await;
        if let Handled::Close(_) = session.handle_text(command.get()).await {
            // Between polls nobody will take the last frames: end now.
            if session.detached_for().is_some() {
                session.end().await;
            }
            break;
        }
    }
    push_replies(&session, &mut publishing, 0).await;
    Ok(commands.len())
}

/// Pushes the replies of the publishes started, oldest first, as each
/// completes, until at most `keep` are left.
async fn push_replies(session: &Session, publishing: &mut VecDeque<Publishing>, keep: usize) {
    while publishing.len() > keep {
        let Some(mut oldest) = publishing.pop_front() else {
            return;
        };
        let reply = (&mut oldest.reply).await;
        let _ = session.outbound().push(reply);
    }
}

/// The commands of a body: one object, or an array of objects.
fn split(body: &[u8]) -> Result<Vec<Box<RawValue>>, ApiError> {
    let bad = |why: String| ApiError::new(ErrorCode::BadRequest, why);
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'{') => {
            let one: Box<RawValue> =
                serde_json::from_slice(body).map_err(|e| bad(format!("malformed JSON: {e}")))?;
            Ok(vec![one])
        }
        Some(b'[') => {
            let many: Vec<Box<RawValue>> =
                serde_json::from_slice(body).map_err(|e| bad(format!("malformed JSON: {e}")))?;
            if many.iter().any(|c| !c.get().starts_with('{')) {
                return Err(bad(
                    "every element of the array must be a command object".into()
                ));
            }
            Ok(many)
        }
        _ => Err(bad(
            "the body must be a command object or an array of command objects".into(),
        )),
    }
}

fn is_connect(text: &str) -> bool {
    #[derive(Deserialize)]
    struct Kind<'a> {
        #[serde(borrow, rename = "type")]
        kind: Option<&'a str>,
    }
    serde_json::from_str::<Kind>(text).is_ok_and(|k| k.kind == Some("connect"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_command_or_an_array_of_commands() {
        assert_eq!(split(br#" {"id":1,"type":"ping"}"#).unwrap().len(), 1);
        assert_eq!(
            split(br#"[{"id":1,"type":"ping"},{"id":2,"type":"ping"}]"#)
                .unwrap()
                .len(),
            2
        );
        for bad in [&b"[1]"[..], b"\"x\"", b"", b"{", b"[{}"] {
            let e = split(bad).unwrap_err();
            assert_eq!(
                e.0.code,
                ErrorCode::BadRequest,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn connect_is_recognised() {
        assert!(is_connect(r#"{"id":1,"type":"connect","token":"x"}"#));
        assert!(!is_connect(r#"{"id":1,"type":"subscribe"}"#));
    }
}
