//! The long-polling transport: `POST /connection/poll` connects and answers
//! the `connected` reply; `GET /connection/poll?session=…&cursor=…` answers
//! `{"cursor":n,"messages":[…]}` as soon as anything after `cursor` is
//! queued, or empty after `client.poll_hold`.
//!
//! The cursor is the client's acknowledgement: frames up to it are dropped,
//! frames after it are (re)sent, so a repeated cursor replays a lost
//! response. Between polls the session is detached and the grace period
//! runs, exactly as for a dropped stream.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::http_session::{
    body_limit, find, number, read_body, refused, required, session_not_found, token,
};
use crate::cluster::Control;

/// Extra time a node waits for another node's answer to a forwarded poll.
const FORWARD_MARGIN: Duration = Duration::from_secs(10);
use crate::codes::{DisconnectCode, ErrorCode};
use crate::http::error::ApiError;
use crate::node::Node;
use crate::session::{Numbered, Session, Take};
use crate::stream::now_millis;

/// Bodies at least this large are gzip-compressed when the client accepts it.
const GZIP_FROM: usize = 1024;

#[derive(Deserialize)]
struct ConnectBody {
    token: Option<String>,
}

/// `POST /connection/poll`: connects and answers the `connected` reply.
pub async fn connect(State(node): State<Arc<Node>>, headers: HeaderMap, body: Body) -> Response {
    let body = match read_body(body, body_limit(&node)).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    match open(&node, &headers, &body).await {
        Ok(reply) => json_response(accepts_gzip(&headers), reply),
        Err(e) => e.into_response(),
    }
}

async fn open(node: &Arc<Node>, headers: &HeaderMap, body: &[u8]) -> Result<Bytes, ApiError> {
    if node.is_shutting_down() {
        return Err(ApiError::new(
            ErrorCode::NotAvailable,
            "the node is shutting down",
        ));
    }
    let from_body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<ConnectBody>(body)
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::BadRequest,
                    format!("the body must be {{\"token\": \"<jwt>\"}}: {e}"),
                )
            })?
            .token
    };
    let token = token(headers, from_body.as_deref())?;
    let session = Session::new(node);
    session.connect_with(&token).await.map_err(refused)?;
    let reply = match session.take(1) {
        Take::Frames(frames) | Take::Closing(frames, _) => frames.into_iter().last(),
        Take::Replaced => None,
    };
    // The session now waits for its first poll.
    session.detach(1);
    reply
        .map(|n| n.frame)
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "no connected reply"))
}

#[derive(Deserialize)]
pub struct PollQuery {
    session: Option<String>,
    cursor: Option<String>,
}

/// `GET /connection/poll`: the frames after `cursor`, as soon as there are any.
pub async fn poll(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Query(query): Query<PollQuery>,
) -> Response {
    // Only this is needed from the headers: don't hold them while waiting.
    let gzip = accepts_gzip(&headers);
    drop(headers);
    match wait(&node, query).await {
        Ok(body) => json_response(gzip, body),
        Err(e) => e.into_response(),
    }
}

/// The poll's answer, from this node or the one holding the session.
async fn wait(node: &Arc<Node>, query: PollQuery) -> Result<Bytes, ApiError> {
    let id = required(query.session, "session")?;
    let cursor = required(number(query.cursor.as_deref(), "cursor")?, "cursor")?;
    if node.sessions.get(&id).is_some() {
        return wait_local(node, &id, cursor).await;
    }
    let Some(owner) = crate::cluster::owner(&id).filter(|owner| **owner != *node.id) else {
        return Err(session_not_found());
    };
    // Another node holds the session: it holds the poll and answers.
    let wait = node.config.client.poll_hold + FORWARD_MARGIN;
    let answer = node
        .cluster
        .ask(node, owner, wait, |request| Control::Poll {
            from: node.id.to_string(),
            request,
            session: id.clone(),
            cursor,
        })
        .await?;
    Ok(Bytes::from(answer.get().to_owned()))
}

/// Answers a poll of session `id`, which this node holds:
/// `{"cursor":n,"messages":[…]}`.
pub async fn wait_local(node: &Arc<Node>, id: &str, cursor: u64) -> Result<Bytes, ApiError> {
    let (cursor, frames) = hold(node, id, cursor).await?;
    Ok(messages(cursor, &frames))
}

async fn hold(node: &Arc<Node>, id: &str, cursor: u64) -> Result<(u64, Vec<Numbered>), ApiError> {
    let session = find(node, id)?;
    let generation = session.attach(cursor).await.map_err(ApiError)?;
    // Detaches when the answer is sent or the client gives up.
    let attached = Attached {
        session: session.clone(),
        generation,
    };
    let hold = tokio::time::sleep(node.config.client.poll_hold);
    tokio::pin!(hold);
    loop {
        match session.take(generation) {
            Take::Frames(frames) if !frames.is_empty() => return Ok((cursor, frames)),
            Take::Frames(_) => {}
            Take::Closing(frames, _) => {
                session.end().await;
                drop(attached);
                return Ok((cursor, frames));
            }
            Take::Replaced => return Ok((cursor, Vec::new())),
        }
        let expires_in = session
            .expires_at()
            .map(|exp| Duration::from_millis((exp * 1000).saturating_sub(now_millis())));
        tokio::select! {
            _ = session.ready() => {}
            _ = &mut hold => return Ok((cursor, Vec::new())),
            _ = tokio::time::sleep(expires_in.unwrap_or(Duration::MAX)), if expires_in.is_some() => {
                session.close(DisconnectCode::TokenExpired.into());
            }
        }
    }
}

/// A poll's hold on its session.
struct Attached {
    session: Arc<Session>,
    generation: u64,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.session.detach(self.generation);
    }
}

/// `{"cursor":n,"messages":[…]}` with the frames as they are.
fn messages(cursor: u64, frames: &[Numbered]) -> Bytes {
    let next = frames.iter().filter_map(|n| n.seq).max().unwrap_or(cursor);
    let size = 32 + frames.iter().map(|n| n.frame.len() + 1).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(format!("{{\"cursor\":{next},\"messages\":[").as_bytes());
    for (i, n) in frames.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&n.frame);
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

/// A JSON answer that is never cached, gzip-compressed when worth it.
fn json_response(gzip_accepted: bool, body: Bytes) -> Response {
    let gzip = body.len() >= GZIP_FROM && gzip_accepted;
    let body = if gzip { gzipped(&body) } else { body };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    response
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q == 0.0))
            });
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

fn gzipped(body: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 3),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(body);
    Bytes::from(encoder.finish().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_the_last_seq_as_the_next_cursor() {
        let frames = vec![
            Numbered {
                seq: Some(4),
                frame: Bytes::from_static(b"{\"a\":1}"),
            },
            Numbered {
                seq: Some(5),
                frame: Bytes::from_static(b"{}"),
            },
        ];
        assert_eq!(
            &messages(3, &frames)[..],
            b"{\"cursor\":5,\"messages\":[{\"a\":1},{}]}"
        );
        assert_eq!(&messages(3, &[])[..], b"{\"cursor\":3,\"messages\":[]}");
    }

    #[test]
    fn gzip_only_when_accepted() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip;q=0.8"),
        );
        assert!(accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0"),
        );
        assert!(!accepts_gzip(&h));
    }
}
