//! The WebSocket transport: `GET /connection/websocket`.
//!
//! We do the RFC 6455 handshake ourselves on top of hyper's upgrade and run
//! one task per connection. To keep an idle connection at a few KiB of RSS,
//! the task owns no read or write buffer while idle: reads go through one
//! 64 KiB buffer per worker thread (partial frames are copied out into the
//! [`FrameReader`], which frees them once complete), and each batch of
//! queued frames is encoded into a write buffer that is dropped once
//! written. One task does reading, writing and timers with `select!`, so a
//! command that waits on a backend never stops outbound delivery.
//!
//! Consecutive `publish` commands run side by side (up to
//! [`MAX_PUBLISHES_IN_FLIGHT`]): each is submitted to its stream as it is
//! read ([`Session::start_publish`]), and their replies are pushed in
//! command order as they complete. Any other command, and a close or
//! binary frame, waits until the replies before it are pushed, then runs
//! alone. So a publisher that does not wait for each reply is bound by the
//! broker's throughput, not by one broker round trip per publish.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{sleep_until, Instant};

/// What a write of the pending buffer achieved.
#[derive(Debug, PartialEq, Eq)]
enum WriteProgress {
    /// More of the buffer is still to be written.
    Partial,
    /// The buffer is fully written (and freed).
    Done,
    /// The socket is gone.
    Failed,
}

use crate::codes::{Disconnect, DisconnectCode};
use crate::node::Node;
use crate::protocol::frames;
use crate::session::{Handled, Numbered, Publishing, Session, Take, MAX_PUBLISHES_IN_FLIGHT};
use crate::stream::now_millis;
use crate::ws::frame::{self, FrameError, FrameReader, Message, OpCode, Role};

/// Size of the per-thread read buffer.
const READ_BUFFER: usize = 64 * 1024;
/// Incoming text frames parsed ahead of the command being handled.
const MAX_PENDING_COMMANDS: usize = 16;
/// How long a closing connection may take to flush its last frames.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Room for the envelope around `data` in a publish frame.
const ENVELOPE_ALLOWANCE: usize = 16 * 1024;

thread_local! {
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BUFFER].into_boxed_slice());
}

/// Axum handler: checks the handshake and hands the socket to [`run`].
pub async fn upgrade(State(node): State<Arc<Node>>, mut request: Request) -> Response {
    if node.is_shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    if !crate::http::origin::allowed(&node.config.allowed_origins, request.headers()) {
        return (
            StatusCode::FORBIDDEN,
            "origin not allowed (see allowed_origins)",
        )
            .into_response();
    }
    let key = match check_handshake(request.headers()) {
        Ok(key) => key,
        Err(refused) => return refused.into_response(),
    };
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return (StatusCode::BAD_REQUEST, "connection cannot be upgraded").into_response();
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => run(node, TokioIo::new(upgraded)).await,
            Err(e) => tracing::debug!("websocket upgrade failed: {e}"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&crate::ws::accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// Why an upgrade request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandshakeError {
    NotWebSocket,
    UnsupportedVersion,
    MissingKey,
}

impl IntoResponse for HandshakeError {
    fn into_response(self) -> Response {
        match self {
            HandshakeError::NotWebSocket => (
                StatusCode::UPGRADE_REQUIRED,
                [(header::UPGRADE, "websocket")],
                "this endpoint speaks WebSocket",
            )
                .into_response(),
            HandshakeError::UnsupportedVersion => (
                StatusCode::UPGRADE_REQUIRED,
                [(header::SEC_WEBSOCKET_VERSION, "13")],
                "unsupported WebSocket version",
            )
                .into_response(),
            HandshakeError::MissingKey => {
                (StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key").into_response()
            }
        }
    }
}

fn check_handshake(headers: &HeaderMap) -> Result<String, HandshakeError> {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return Err(HandshakeError::NotWebSocket);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(HandshakeError::UnsupportedVersion);
    }
    match headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
    {
        Some(key) if !key.is_empty() => Ok(key.to_string()),
        _ => Err(HandshakeError::MissingKey),
    }
}

/// What the socket did.
enum IoEvent {
    /// Bytes of the pending write were accepted.
    Wrote(usize),
    /// Bytes were read (messages may have been queued).
    Read,
    /// The peer closed the TCP stream.
    Eof,
    /// The peer broke the WebSocket framing.
    Protocol(FrameError),
}

/// Makes progress on the pending write (if any) and reads (if allowed),
/// whichever is ready first. Reads go into the thread's shared buffer and
/// are decoded at once, so nothing stays allocated while waiting. One
/// future does both because both need the socket mutably.
fn io_event<'a, S: AsyncRead + AsyncWrite + Unpin>(
    io: &'a mut S,
    pending_write: Option<&'a [u8]>,
    read: Option<(&'a mut FrameReader, &'a mut VecDeque<Message>)>,
) -> impl Future<Output = io::Result<IoEvent>> + 'a {
    let mut read = read;
    std::future::poll_fn(move |cx| {
        if let Some(bytes) = pending_write {
            if let Poll::Ready(result) = Pin::new(&mut *io).poll_write(cx, bytes) {
                return Poll::Ready(result.map(IoEvent::Wrote));
            }
        }
        let Some((reader, messages)) = read.as_mut() else {
            return Poll::Pending;
        };
        READ_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            let mut read_buf = ReadBuf::new(&mut buf[..]);
            match Pin::new(&mut *io).poll_read(cx, &mut read_buf) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if read_buf.filled().is_empty() => {
                    Poll::Ready(Ok(IoEvent::Eof))
                }
                Poll::Ready(Ok(())) => {
                    let fed = reader.feed(read_buf.filled(), &mut |m| {
                        messages.push_back(m);
                        true
                    });
                    Poll::Ready(Ok(match fed {
                        Ok(()) => IoEvent::Read,
                        Err(e) => IoEvent::Protocol(e),
                    }))
                }
            }
        })
    })
}

/// Publishes started and waiting for their replies, oldest first, and the
/// command after them, which waits until their replies are pushed. Boxed
/// and dropped when empty: an idle connection keeps none.
#[derive(Default)]
struct Pipeline {
    pending: VecDeque<Publishing>,
    next: Option<Bytes>,
}

impl Pipeline {
    fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.next.is_none()
    }
}

/// What came of one command, as the connection loop sees it.
enum Outcome {
    Continue,
    Close,
    /// `connect` resumed this session, attached as this generation.
    Switched(Arc<Session>, u64),
}

type InFlight = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// Hands one text frame to the session; a resume switches sessions.
async fn command(node: Arc<Node>, session: Arc<Session>, text: Bytes) -> Outcome {
    // The frame reader validated UTF-8.
    let text = std::str::from_utf8(&text).unwrap_or_default();
    match session.handle_text(text).await {
        Handled::Continue => Outcome::Continue,
        Handled::Close(_) => Outcome::Close,
        Handled::Resume {
            id,
            token,
            session: wanted,
            seq,
        } => match node.sessions.resume(&wanted, &token, seq, id).await {
            Ok((resumed, generation)) => Outcome::Switched(resumed, generation),
            Err(refusal) => {
                node.metrics.error(refusal.error.code);
                let _ = session
                    .outbound()
                    .push(frames::error(Some(id), &refusal.error));
                match refusal.disconnect {
                    Some(code) => {
                        session.close(code.into());
                        Outcome::Close
                    }
                    None => Outcome::Continue,
                }
            }
        },
    }
}

/// How the connection ended, for its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The socket was lost: the session waits for a resume.
    Lost,
    /// Another transport took the session over.
    Replaced,
}

/// Runs one WebSocket connection to its end.
pub async fn run<S>(node: Arc<Node>, mut io: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // Borrowed, not copied: a copy would sit in every idle connection.
    let cfg = &node.config.client;
    let mut session = Session::new(&node);
    let mut generation = 1;
    let mut reader = FrameReader::new(Role::Server, cfg.max_data_size + ENVELOPE_ALLOWANCE);
    let mut messages: VecDeque<Message> = VecDeque::new();
    let mut in_flight: Option<InFlight> = None;
    let mut pipeline: Option<Box<Pipeline>> = None;
    // Control frames (pong, ping, close) waiting for the next write.
    let mut control: Vec<u8> = Vec::new();
    let mut write_buf: Vec<u8> = Vec::new();
    let mut written = 0;
    let mut closing: Option<Instant> = None;
    let mut close_after_write = false;
    let mut peer_closed = false;
    let mut ending = Ending::Lost;
    // Set when a wake-up was consumed while writing: drain without waiting.
    let mut recheck = false;
    let started = Instant::now();
    let mut last_seen = started;
    let mut next_ping = started + cfg.ping_interval;
    let mut shutdown = node.shutdown_signal();
    // One timer for the connection's life, moved only when its deadline
    // changes (registering a new timer on every pass costs a lock).
    let timer = sleep_until(next_ping);
    tokio::pin!(timer);

    loop {
        // Start the next commands: publishes side by side (up to
        // MAX_PUBLISHES_IN_FLIGHT), anything else alone once every earlier
        // reply is pushed, so replies keep the commands' order.
        if in_flight.is_none() && closing.is_none() {
            loop {
                if let Some(p) = pipeline.as_mut().filter(|p| p.next.is_some()) {
                    // A transport that was replaced starts nothing more.
                    if p.pending.is_empty() && session.is_attached(generation) {
                        let text = p.next.take().expect("checked");
                        in_flight = Some(Box::pin(command(node.clone(), session.clone(), text)));
                    }
                    break;
                }
                let Some(message) = messages.pop_front() else {
                    break;
                };
                let answering = pipeline.as_ref().is_some_and(|p| !p.pending.is_empty());
                if answering && matches!(message, Message::Binary(_) | Message::Close(_)) {
                    // Its error or the close waits for the replies before it.
                    messages.push_front(message);
                    break;
                }
                match message {
                    Message::Text(text) => {
                        let p = pipeline.get_or_insert_with(Box::default);
                        if p.pending.len() >= MAX_PUBLISHES_IN_FLIGHT {
                            messages.push_front(Message::Text(text));
                            break;
                        }
                        // The frame reader validated UTF-8.
                        let started = std::str::from_utf8(&text)
                            .ok()
                            .and_then(|t| session.start_publish(t, Some(generation)));
                        match started {
                            Some(publishing) => p.pending.push_back(publishing),
                            None => p.next = Some(text),
                        }
                    }
                    Message::Binary(_) => {
                        let error = crate::codes::CommandError::with(
                            crate::codes::ErrorCode::BadRequest,
                            "binary frames are not supported; send JSON text frames",
                        );
                        node.metrics.error(error.code);
                        let _ = session.outbound().push(frames::error(None, &error));
                    }
                    Message::Ping(payload) => frame::encode_pong(&payload, &mut control),
                    Message::Pong(_) => {}
                    Message::Close(_) => {
                        // Nothing after a close frame counts; the client
                        // closed on purpose, so the session ends.
                        peer_closed = true;
                        messages.clear();
                        begin_close(&session, DisconnectCode::Normal.into(), false, &mut closing);
                        break;
                    }
                }
            }
        }
        if pipeline.as_ref().is_some_and(|p| p.is_empty()) {
            pipeline = None;
        }

        if messages.is_empty() && messages.capacity() > 0 {
            // Idle connections keep no command queue.
            messages = VecDeque::new();
        }

        // The next timer: heartbeat, connect deadline, token expiry, close grace.
        let silent_limit = last_seen + cfg.ping_interval + cfg.pong_timeout;
        let connected = in_flight.is_some() || session.is_connected();
        let expires = session.expires_at();
        let deadline = match closing {
            Some(grace) => grace,
            None => {
                let mut deadline = next_ping.min(silent_limit);
                if !connected {
                    deadline = deadline.min(started + cfg.connect_timeout);
                }
                if let Some(exp) = expires {
                    deadline = deadline.min(instant_at(exp));
                }
                deadline
            }
        };

        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        let writing = written < write_buf.len();
        let can_read = !peer_closed && messages.len() < MAX_PENDING_COMMANDS;
        tokio::select! {
            biased;
            done = async { in_flight.as_mut().expect("guarded").await }, if in_flight.is_some() => {
                in_flight = None;
                match done {
                    Outcome::Continue => {}
                    Outcome::Close => {
                        closing.get_or_insert_with(|| Instant::now() + CLOSE_GRACE);
                    }
                    Outcome::Switched(resumed, resumed_generation) => {
                        // The fresh session never connected: nothing to undo.
                        session = resumed;
                        generation = resumed_generation;
                        recheck = true;
                    }
                }
            }
            reply = async {
                let oldest = pipeline.as_mut().and_then(|p| p.pending.front_mut());
                (&mut oldest.expect("guarded").reply).await
            }, if pipeline.as_ref().is_some_and(|p| !p.pending.is_empty()) => {
                let _ = session.outbound().push(reply);
                // Only now may the session's other commands go.
                drop(pipeline.as_mut().and_then(|p| p.pending.pop_front()));
            }
            _ = std::future::ready(()), if !writing && !close_after_write && !control.is_empty() => {
                write_buf = std::mem::take(&mut control);
            }
            _ = session.ready(), if writing && closing.is_none() => {
                // Pushed (or closed, e.g. as a slow consumer) while a write is
                // stuck: a closed queue must not wait on a client that reads nothing.
                recheck = true;
                if session.outbound().is_closed() {
                    closing = Some(Instant::now() + CLOSE_GRACE);
                }
            }
            _ = ready_or_now(&session, recheck), if !writing && !close_after_write => {
                if !recheck {
                    // Woken by a push: let whatever is fanning out push the
                    // rest of its burst first, so one write carries many.
                    tokio::task::yield_now().await;
                }
                recheck = false;
                let (batch, end) = match session.take(generation) {
                    Take::Frames(f) => (f, None),
                    Take::Closing(f, d) => (f, Some(d)),
                    Take::Replaced => {
                        ending = Ending::Replaced;
                        let mut bye = std::mem::take(&mut control);
                        frame::encode_close(DisconnectCode::Normal.code(), "session resumed elsewhere", &mut bye);
                        let mut bye_written = 0;
                        let _ = try_write_now(&mut io, &mut bye, &mut bye_written).await;
                        break;
                    }
                };
                write_buf = encode_batch(&batch, &control, end.as_ref());
                control = Vec::new();
                if end.is_some() {
                    close_after_write = true;
                    closing.get_or_insert_with(|| Instant::now() + CLOSE_GRACE);
                }
                if write_buf.is_empty() && close_after_write {
                    break;
                }
                // Most batches fit the socket buffer: write now rather than
                // going round the loop for the socket's readiness.
                if !write_buf.is_empty() {
                    match try_write_now(&mut io, &mut write_buf, &mut written).await {
                        WriteProgress::Failed => break,
                        WriteProgress::Done if close_after_write => break,
                        WriteProgress::Done | WriteProgress::Partial => {}
                    }
                }
            }
            event = io_event(
                &mut io,
                writing.then(|| &write_buf[written..]),
                can_read.then_some((&mut reader, &mut messages)),
            ), if writing || can_read => {
                match event {
                    Ok(IoEvent::Wrote(0)) | Ok(IoEvent::Eof) | Err(_) => break,
                    Ok(IoEvent::Wrote(n)) => {
                        if advance(&mut write_buf, &mut written, n) == WriteProgress::Done
                            && close_after_write
                        {
                            break;
                        }
                    }
                    Ok(IoEvent::Read) => last_seen = Instant::now(),
                    Ok(IoEvent::Protocol(e)) => {
                        peer_closed = true;
                        let code = match e {
                            FrameError::MessageTooLarge { .. } => DisconnectCode::FrameTooLarge,
                            _ => DisconnectCode::ProtocolError,
                        };
                        let mut d: Disconnect = code.into();
                        d.reason = e.to_string();
                        begin_close(&session, d, true, &mut closing);
                    }
                }
            }
            // `wait_for` sees a shutdown that began before this task subscribed.
            _ = stopping(&mut shutdown), if closing.is_none() => {
                // Node::shutdown closes every authenticated client's queue;
                // close the ones that never connected here.
                begin_close(&session, DisconnectCode::Shutdown.into(), true, &mut closing);
            }
            _ = &mut timer => {
                let now = Instant::now();
                if closing.is_some_and(|grace| now >= grace) {
                    break;
                }
                let expired = expires.is_some_and(|exp| now_millis() / 1000 >= exp);
                if now >= silent_limit {
                    // The socket is dead or hopeless, not the session: tell
                    // the client (best effort) and let the session wait.
                    node.metrics.disconnect(DisconnectCode::NoPong.code());
                    if !writing {
                        let mut bye = std::mem::take(&mut control);
                        encode_disconnect(&DisconnectCode::NoPong.into(), &mut bye);
                        let mut bye_written = 0;
                        let _ = try_write_now(&mut io, &mut bye, &mut bye_written).await;
                    }
                    break;
                } else if !connected && now >= started + cfg.connect_timeout {
                    begin_close(&session, DisconnectCode::ConnectTimeout.into(), true, &mut closing);
                } else if expired {
                    begin_close(&session, DisconnectCode::TokenExpired.into(), true, &mut closing);
                } else if now >= next_ping {
                    next_ping = now + cfg.ping_interval;
                    session.trim();
                    // Pings belong to this socket, not to the session's sequence.
                    frame::header(OpCode::Text, frames::PING.len(), None, &mut control);
                    control.extend_from_slice(frames::PING);
                }
            }
        }
    }

    // Let commands still in flight finish so their effects are undone
    // below and their replies wait in the session for a resume.
    for mut publishing in pipeline.map(|p| p.pending).unwrap_or_default() {
        let reply = (&mut publishing.reply).await;
        let _ = session.outbound().push(reply);
    }
    if let Some(f) = in_flight.take() {
        if let Outcome::Switched(resumed, resumed_generation) = f.await {
            session = resumed;
            generation = resumed_generation;
        }
    }
    if ending != Ending::Replaced {
        match session.outbound().closed_with() {
            // Counted here, whatever path ended the loop (a slow consumer's
            // stuck write ends by the grace timer, not by a drain).
            Some(d) => {
                node.metrics.disconnect(d.code);
                session.end().await;
            }
            None => session.detach(generation),
        }
    }
    let _ = io.shutdown().await;
}

/// Closes the session's queue with `d` (with `tell`, the client first gets
/// the `disconnect` push) and starts the grace period for the last writes.
fn begin_close(session: &Session, d: Disconnect, tell: bool, closing: &mut Option<Instant>) {
    if tell {
        session.close(d);
    } else {
        session.outbound().close(d, None);
    }
    closing.get_or_insert_with(|| Instant::now() + CLOSE_GRACE);
}

/// A `disconnect` push and the matching close frame, written by the socket
/// itself (the session's queue stays open for a resume).
fn encode_disconnect(d: &Disconnect, buf: &mut Vec<u8>) {
    let push = frames::disconnect(d);
    frame::header(OpCode::Text, push.len(), None, buf);
    buf.extend_from_slice(&push);
    frame::encode_close(d.code, &d.reason, buf);
}

/// Frames every queued JSON frame as a WebSocket text frame, in one buffer,
/// after any pending control frames, and ends with a close frame if closing.
fn encode_batch(batch: &[Numbered], control: &[u8], end: Option<&Disconnect>) -> Vec<u8> {
    let size: usize = batch
        .iter()
        .map(|n| frame::header_len(n.frame.len(), false) + n.frame.len())
        .sum::<usize>()
        + control.len()
        + end.map_or(0, |d| 4 + d.reason.len());
    let mut buf = Vec::with_capacity(size);
    buf.extend_from_slice(control);
    for n in batch {
        frame::header(OpCode::Text, n.frame.len(), None, &mut buf);
        buf.extend_from_slice(&n.frame);
    }
    if let Some(d) = end {
        let reason: String = d.reason.chars().take(100).collect();
        frame::encode_close(d.code, &reason, &mut buf);
    }
    buf
}

/// Resolves once the node is shutting down (at once if it already is).
async fn stopping(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it right here. An
    // error means the node is gone, which is a shutdown too.
    let _ = shutdown.wait_for(|&stopping| stopping).await.map(|_| ());
}

/// Records `n` written bytes; frees the buffer once all of it is written.
fn advance(write_buf: &mut Vec<u8>, written: &mut usize, n: usize) -> WriteProgress {
    *written += n;
    if *written < write_buf.len() {
        return WriteProgress::Partial;
    }
    *write_buf = Vec::new();
    *written = 0;
    WriteProgress::Done
}

/// One write attempt that does not wait for the socket's readiness.
async fn try_write_now<S: AsyncWrite + Unpin>(
    io: &mut S,
    write_buf: &mut Vec<u8>,
    written: &mut usize,
) -> WriteProgress {
    let attempt = std::future::poll_fn(|cx| {
        Poll::Ready(
            match Pin::new(&mut *io).poll_write(cx, &write_buf[*written..]) {
                Poll::Ready(result) => Some(result),
                Poll::Pending => None,
            },
        )
    })
    .await;
    match attempt {
        None => WriteProgress::Partial,
        Some(Ok(0)) | Some(Err(_)) => WriteProgress::Failed,
        Some(Ok(n)) => advance(write_buf, written, n),
    }
}

/// Waits for the session's queue unless `now` says something is already there.
async fn ready_or_now(session: &Session, now: bool) {
    if !now {
        session.ready().await
    }
}

/// The tokio instant of a Unix time in seconds.
fn instant_at(unix_secs: u64) -> Instant {
    let now_ms = now_millis();
    let at_ms = unix_secs.saturating_mul(1000);
    Instant::now() + Duration::from_millis(at_ms.saturating_sub(now_ms))
}
