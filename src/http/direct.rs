//! One TCP connection, served without hyper while it only carries the
//! HTTP transports' requests.
//!
//! An idle SSE stream or a pending long-poll is most of what a node holds
//! for a client on the HTTP transports, and hyper keeps two 8 KiB buffers
//! per connection for as long as it lives. So a connection starts here:
//! each request head is read into a buffer that is freed as soon as the
//! request is parsed, and when the head is a plain `GET`, `POST` or
//! `OPTIONS` for `/connection/sse`, `/connection/send` or
//! `/connection/poll`, the router answers it and the response is written
//! straight to the socket (a known length as `Content-Length`, a stream as
//! chunks). A stream's writes are the transport's own batches, so nothing
//! is buffered between the transport and the kernel.
//!
//! Anything else — another path, a WebSocket upgrade, HTTP/1.0, a chunked
//! or oversized request body, `Expect`, a head that does not parse — hands
//! the whole connection, with the bytes already read, to hyper for the rest
//! of its life. The same router answers either way, so behaviour does not
//! depend on which side serves a request.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::http::{header, HeaderName, HeaderValue, Method, Request, Response, Uri};
use axum::Router;
use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// The largest request head served here; a larger one goes to hyper.
const MAX_HEAD: usize = 16 * 1024;
/// Headers a request served here may carry.
const MAX_HEADERS: usize = 48;
/// How long a started request head may take to arrive.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes a client may send ahead (pipelining) while its request is served.
const MAX_AHEAD: usize = 4096;

/// Serves `tcp` until it closes, or until `stop` turns true and the
/// request in progress is answered.
pub async fn serve(tcp: TcpStream, app: Router, body_limit: usize, stop: watch::Receiver<bool>) {
    let mut conn = Conn {
        tcp,
        read: Vec::new(),
        stop,
    };
    loop {
        // Each phase is boxed so that a connection holds the state of the
        // phase it is in, not the largest of them (it adds up per client).
        match Box::pin(conn.next_request(body_limit)).await {
            Next::Request(request, keep_alive) => {
                let keep_alive = keep_alive && !*conn.stop.borrow();
                let Ok(response) = Box::pin(conn.answer(&app, request)).await else {
                    break;
                };
                let written = Box::pin(conn.write_response(response, keep_alive)).await;
                if written.is_err() || !keep_alive || *conn.stop.borrow() {
                    break;
                }
            }
            // Boxed: hyper's connection state is large and most
            // connections served here never need it.
            Next::Hyper => return Box::pin(hand_off(conn, app)).await,
            Next::Close => break,
        }
    }
    let _ = conn.tcp.shutdown().await;
}

struct Conn {
    tcp: TcpStream,
    /// Bytes read and not yet consumed; freed whenever empty.
    read: Vec<u8>,
    stop: watch::Receiver<bool>,
}

// Returned once per request and matched at once: boxing would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
enum Next {
    Request(Request<Body>, bool),
    Hyper,
    Close,
}

impl Conn {
    /// Waits for and reads the next request head (and its body).
    async fn next_request(&mut self, body_limit: usize) -> Next {
        if self.read.is_empty() {
            // Idle between requests: no buffer until bytes arrive.
            let mut stop = self.stop.clone();
            tokio::select! {
                ready = self.tcp.readable() => if ready.is_err() { return Next::Close },
                _ = stopping(&mut stop) => return Next::Close,
            }
        }
        // A client that stalls mid-request, or a node stopping, ends it.
        let mut stop = self.stop.clone();
        let reading = tokio::time::timeout(HEAD_TIMEOUT, self.read_request(body_limit));
        tokio::select! {
            read = reading => read.unwrap_or(Next::Close),
            _ = stopping(&mut stop) => Next::Close,
        }
    }

    /// Reads one request head and its body.
    async fn read_request(&mut self, body_limit: usize) -> Next {
        let head_len = match self.read_head().await {
            Ok(Some(len)) => len,
            Ok(None) => return Next::Hyper,
            Err(_) => return Next::Close,
        };
        let Some(head) = parse(&self.read[..head_len], body_limit) else {
            return Next::Hyper;
        };
        let total = head_len + head.content_length;
        while self.read.len() < total {
            self.read.reserve(total - self.read.len());
            match self.tcp.read_buf(&mut self.read).await {
                Ok(n) if n > 0 => {}
                _ => return Next::Close,
            }
        }
        let body = Bytes::copy_from_slice(&self.read[head_len..total]);
        self.consume(total);
        let keep_alive = head.keep_alive;
        let mut request = Request::new(Body::from(body));
        *request.method_mut() = head.method;
        *request.uri_mut() = head.uri;
        *request.headers_mut() = head.headers;
        Next::Request(request, keep_alive)
    }

    /// Reads until a whole head is buffered: its length, or `None` when
    /// it is too large to serve here (or the peer closed mid-head).
    async fn read_head(&mut self) -> io::Result<Option<usize>> {
        loop {
            match head_end(&self.read) {
                HeadEnd::At(end) => return Ok(Some(end)),
                HeadEnd::Invalid => return Ok(None),
                HeadEnd::NotYet => {}
            }
            if self.read.len() >= MAX_HEAD {
                return Ok(None);
            }
            self.read.reserve(1024.min(MAX_HEAD - self.read.len()));
            if self.tcp.read_buf(&mut self.read).await? == 0 {
                return match self.read.is_empty() {
                    true => Err(io::ErrorKind::UnexpectedEof.into()),
                    false => Ok(None),
                };
            }
        }
    }

    fn consume(&mut self, n: usize) {
        if n >= self.read.len() {
            self.read = Vec::new();
        } else {
            self.read.drain(..n);
        }
    }

    /// The router's response to one request.
    async fn answer(&mut self, app: &Router, request: Request<Body>) -> io::Result<Response<Body>> {
        let mut service = app.clone();
        let handling = tower_service::Service::call(&mut service, request);
        // A long-poll waits here: give up on it when the client leaves.
        tokio::select! {
            response = handling => match response {
                Ok(response) => Ok(response),
                Err(never) => match never {},
            },
            gone = watch_peer(&mut self.tcp, &mut self.read) => Err(gone),
        }
    }

    async fn write_response(
        &mut self,
        response: Response<Body>,
        keep_alive: bool,
    ) -> io::Result<()> {
        let (parts, body) = response.into_parts();
        let status = parts.status;
        let no_body = status.is_informational()
            || status == axum::http::StatusCode::NO_CONTENT
            || status == axum::http::StatusCode::NOT_MODIFIED;
        let length = if no_body {
            Some(0)
        } else {
            body.size_hint().exact()
        };
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(b"HTTP/1.1 ");
        head.extend_from_slice(status.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        head.extend_from_slice(b"\r\n");
        for (name, value) in &parts.headers {
            if name == header::CONTENT_LENGTH
                || name == header::TRANSFER_ENCODING
                || name == header::CONNECTION
            {
                continue;
            }
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        match length {
            Some(len) if !no_body => {
                head.extend_from_slice(format!("content-length: {len}\r\n").as_bytes())
            }
            Some(_) => {}
            None => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
        if !keep_alive {
            head.extend_from_slice(b"connection: close\r\n");
        }
        head.extend_from_slice(b"\r\n");
        // A stream lives long: keep nothing of the head but its bytes.
        drop(parts);
        if no_body {
            return self.tcp.write_all(&head).await;
        }
        let mut head = Some(Bytes::from(head));
        let chunked = length.is_none();
        let mut data = body.into_data_stream();
        loop {
            let (reader, mut writer) = self.tcp.split();
            let next = tokio::select! {
                next = data.next() => next,
                gone = watch_peer_half(reader, &mut self.read) => return Err(gone),
            };
            let chunk = match next {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => break,
            };
            if chunk.is_empty() {
                continue;
            }
            let head = head.take().unwrap_or_default();
            if chunked {
                let size = format!("{:x}\r\n", chunk.len());
                let mut out = head.chain(size.as_bytes()).chain(chunk).chain(&b"\r\n"[..]);
                writer.write_all_buf(&mut out).await?;
            } else {
                writer.write_all_buf(&mut head.chain(chunk)).await?;
            }
        }
        match (head, chunked) {
            (Some(head), true) => {
                let mut out = head.chain(&b"0\r\n\r\n"[..]);
                self.tcp.write_all_buf(&mut out).await
            }
            (Some(head), false) => self.tcp.write_all(&head).await,
            (None, true) => self.tcp.write_all(b"0\r\n\r\n").await,
            (None, false) => Ok(()),
        }
    }
}

/// Resolves once `stop` is true (or its sender is gone).
pub async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// Resolves when the peer closes (or errs); bytes it sends ahead are kept.
async fn watch_peer(tcp: &mut TcpStream, ahead: &mut Vec<u8>) -> io::Error {
    let (reader, _) = tcp.split();
    watch_peer_half(reader, ahead).await
}

async fn watch_peer_half(reader: tokio::net::tcp::ReadHalf<'_>, ahead: &mut Vec<u8>) -> io::Error {
    let tcp: &TcpStream = reader.as_ref();
    loop {
        if ahead.len() >= MAX_AHEAD {
            // Enough pipelined for now: answer first, read later.
            return std::future::pending().await;
        }
        if let Err(e) = tcp.readable().await {
            return e;
        }
        // The scratch lives on the stack, not in this future's state.
        let mut scratch = [0u8; 512];
        match tcp.try_read(&mut scratch) {
            Ok(0) => return io::ErrorKind::UnexpectedEof.into(),
            Ok(n) => ahead.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return e,
        }
    }
}

/// Where a buffered head ends.
#[derive(Debug, PartialEq, Eq)]
enum HeadEnd {
    /// After its blank line, at this length.
    At(usize),
    /// Not all of it is buffered yet.
    NotYet,
    /// It does not parse (hyper will answer it).
    Invalid,
}

/// Where the head ends, by httparse's rules (which accept bare `\n`
/// line ends as hyper does).
fn head_end(read: &[u8]) -> HeadEnd {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::Request::new(&mut slots).parse(read) {
        Ok(httparse::Status::Complete(end)) => HeadEnd::At(end),
        Ok(httparse::Status::Partial) => HeadEnd::NotYet,
        Err(_) => HeadEnd::Invalid,
    }
}

/// A head this module serves.
struct Head {
    method: Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
    content_length: usize,
    keep_alive: bool,
}

/// Parses a head, or `None` when hyper should serve the connection.
fn parse(bytes: &[u8], body_limit: usize) -> Option<Head> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut slots);
    if !request.parse(bytes).ok()?.is_complete() || request.version != Some(1) {
        return None;
    }
    let method = match request.method? {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "OPTIONS" => Method::OPTIONS,
        _ => return None,
    };
    let target = request.path?;
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    if !matches!(
        path,
        "/connection/sse" | "/connection/send" | "/connection/poll"
    ) {
        return None;
    }
    let mut headers = axum::http::HeaderMap::with_capacity(request.headers.len());
    let mut content_length = 0usize;
    let mut keep_alive = true;
    for h in request.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        if name == header::TRANSFER_ENCODING || name == header::EXPECT || name == header::UPGRADE {
            return None;
        }
        if name == header::CONTENT_LENGTH {
            let len: usize = value.to_str().ok()?.trim().parse().ok()?;
            if len > body_limit || (content_length != 0 && content_length != len) {
                return None;
            }
            content_length = len;
        }
        if name == header::CONNECTION {
            let value = value.to_str().ok()?;
            if value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"))
            {
                keep_alive = false;
            }
        }
        headers.append(name, value);
    }
    Some(Head {
        method,
        uri: target.parse().ok()?,
        headers,
        content_length,
        keep_alive,
    })
}

/// Lets hyper serve the rest of the connection, replaying what was read.
async fn hand_off(conn: Conn, app: Router) {
    let Conn {
        tcp,
        read,
        mut stop,
    } = conn;
    let io = TokioIo::new(Rewind {
        ahead: Bytes::from(read),
        inner: tcp,
    });
    let service = TowerToHyperService::new(app);
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(connection);
    let mut asked = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!("connection ended: {e}");
                }
                return;
            }
            _ = stopping(&mut stop), if !asked => {
                asked = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A socket with some bytes already read, given back first.
struct Rewind {
    ahead: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.ahead.has_remaining() {
            let n = self.ahead.len().min(buf.remaining());
            buf.put_slice(&self.ahead[..n]);
            self.ahead.advance(n);
            if !self.ahead.has_remaining() {
                self.ahead = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1024;

    #[test]
    fn transport_requests_are_served_here() {
        let head = parse(
            b"GET /connection/sse?token=x HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n\r\n",
            LIMIT,
        )
        .unwrap();
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri.query(), Some("token=x"));
        assert_eq!(head.headers["accept"], "text/event-stream");
        assert!(head.keep_alive);
        let head = parse(
            b"POST /connection/send HTTP/1.1\r\nContent-Length: 12\r\nConnection: Close\r\n\r\n",
            LIMIT,
        )
        .unwrap();
        assert_eq!(head.content_length, 12);
        assert!(!head.keep_alive);
        assert!(parse(b"OPTIONS /connection/poll HTTP/1.1\r\n\r\n", LIMIT).is_some());
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for head in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"GET /connection/websocket HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"GET /connection/sse HTTP/1.0\r\n\r\n",
            b"HEAD /connection/sse HTTP/1.1\r\n\r\n",
            b"GET /connection/sse HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
            b"POST /connection/send HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /connection/send HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"POST /connection/send HTTP/1.1\r\nContent-Length: 1025\r\n\r\n",
            b"POST /connection/send HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST /connection/send HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET /connection/sse/x HTTP/1.1\r\n\r\n",
            b"GARBAGE\r\n\r\n",
        ] {
            assert!(
                parse(head, LIMIT).is_none(),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn head_ends_after_the_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), HeadEnd::At(18));
        assert_eq!(
            head_end(b"GET / HTTP/1.1\nHost: a\n\nbody"),
            HeadEnd::At(24)
        );
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), HeadEnd::NotYet);
        assert_eq!(
            head_end(b"GET / HTTP/1.1\r\nno colon\r\n\r\n"),
            HeadEnd::Invalid
        );
    }
}
