//! The HTTP transports served straight on the socket (src/http/direct.rs),
//! spoken to with hand-written HTTP/1.1 over a raw `TcpStream`: keep-alive
//! and pipelining, `Connection: close`, the hand-off of a connection to
//! hyper (another path, a chunked body, HTTP/1.0, a head that does not
//! parse, a head over 16 KiB, a body over the limit), SSE as chunks, a
//! client that goes away while its stream or poll is open, and a graceful
//! shutdown with all of these open.
//!
//! Responses are parsed here, strictly (status line, CRLF header lines,
//! `Content-Length` or chunked bodies with their CRLFs and last-chunk), so
//! a framing mistake on the socket fails a test instead of being smoothed
//! over by an HTTP client library.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{assert_alive, namespace, token, TestServer};
use serde_json::{json, Value};
use switchboard::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single step may take: a hang fails the test.
const LIMIT: Duration = Duration::from_secs(10);
/// How long to listen for bytes that must not come.
const SILENCE: Duration = Duration::from_millis(300);
/// An origin the test nodes list in `allowed_origins`.
const ORIGIN: &str = "http://app.example";

// ------------------------------------------------------------ raw HTTP/1.1

/// `fut`, or a panic naming `what` after [`LIMIT`].
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, fut)
        .await
        .unwrap_or_else(|_| panic!("no {what} within {LIMIT:?}"))
}

fn lossy(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.len() > 600 {
        format!("{}… ({} bytes)", &text[..600], bytes.len())
    } else {
        text.into_owned()
    }
}

/// A response head.
#[derive(Debug)]
struct Head {
    version: String,
    status: u16,
    /// Names lowercased, in the order sent.
    headers: Vec<(String, String)>,
}

impl Head {
    /// The only value of header `name`; panics if it is sent twice.
    fn header(&self, name: &str) -> Option<&str> {
        let mut values = self.headers.iter().filter(|(n, _)| n == name);
        let value = values.next().map(|(_, v)| v.as_str());
        assert!(values.next().is_none(), "{name} sent twice: {self:?}");
        value
    }

    /// Whether header `name` lists `token` (comma-separated, any case).
    fn lists(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn chunked(&self) -> bool {
        self.lists("transfer-encoding", "chunked")
    }

    fn closes(&self) -> bool {
        self.lists("connection", "close")
    }

    /// Whether hyper wrote this response. hyper adds `Date` to every
    /// response; the direct writer copies the router's headers and adds
    /// only the framing, so a `Date` tells the two sides apart.
    fn by_hyper(&self) -> bool {
        self.header("date").is_some()
    }
}

/// A whole response, its body de-chunked.
#[derive(Debug)]
struct Reply {
    head: Head,
    body: Vec<u8>,
}

impl Reply {
    fn status(&self) -> u16 {
        self.head.status
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"))
    }

    /// Status and JSON body, to compare in one assertion.
    fn answer(&self) -> (u16, Value) {
        (self.status(), self.json())
    }
}

/// One client connection, written and read byte for byte.
struct Raw {
    tcp: TcpStream,
    /// Bytes read and not yet parsed.
    buf: Vec<u8>,
}

impl Raw {
    async fn open(addr: SocketAddr) -> Raw {
        let tcp = within("TCP connect", TcpStream::connect(addr))
            .await
            .expect("the server accepts");
        Raw {
            tcp,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        within("request write", self.tcp.write_all(bytes))
            .await
            .expect("the request is written");
    }

    /// Reads whatever arrives next: how many bytes (0 at the end).
    async fn fill(&mut self) -> usize {
        let mut scratch = [0u8; 16 * 1024];
        let n = within("response bytes", self.tcp.read(&mut scratch))
            .await
            .unwrap_or_else(|e| panic!("read failed: {e} (buffered: {:?})", lossy(&self.buf)));
        self.buf.extend_from_slice(&scratch[..n]);
        n
    }

    /// The next `n` bytes; panics if the connection ends first.
    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            if self.fill().await == 0 {
                panic!(
                    "the connection ended {} bytes short; buffered {:?}",
                    n - self.buf.len(),
                    lossy(&self.buf)
                );
            }
        }
        self.buf.drain(..n).collect()
    }

    /// The next CRLF-terminated line, without its CRLF.
    async fn line(&mut self) -> String {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.take(at + 2).await;
                return String::from_utf8(line[..at].to_vec()).expect("an ASCII line");
            }
            if self.fill().await == 0 {
                panic!("the connection ended mid-line: {:?}", lossy(&self.buf));
            }
        }
    }

    async fn head(&mut self) -> Head {
        let status_line = self.line().await;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_string();
        assert!(
            version == "HTTP/1.1" || version == "HTTP/1.0",
            "status line {status_line:?}"
        );
        let status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("header line {line:?}"));
            assert_eq!(name, name.trim(), "header name {name:?}");
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        Head {
            version,
            status,
            headers,
        }
    }

    /// The next chunk of a chunked body, or `None` after its last-chunk
    /// and (empty) trailer.
    async fn chunk(&mut self) -> Option<Vec<u8>> {
        let line = self.line().await;
        let size = line.split(';').next().unwrap_or_default();
        let size =
            usize::from_str_radix(size, 16).unwrap_or_else(|_| panic!("chunk-size line {line:?}"));
        if size == 0 {
            loop {
                if self.line().await.is_empty() {
                    return None;
                }
            }
        }
        let data = self.take(size).await;
        let end = self.take(2).await;
        assert_eq!(
            end,
            b"\r\n",
            "a {size}-byte chunk ends with CRLF: {:?}",
            lossy(&data)
        );
        Some(data)
    }

    /// The next whole response.
    async fn response(&mut self) -> Reply {
        let head = self.head().await;
        let body = if head.status < 200 || head.status == 204 || head.status == 304 {
            assert!(!head.chunked(), "a {} has no body: {head:?}", head.status);
            assert!(
                head.header("content-length").is_none_or(|l| l == "0"),
                "a {} has no body: {head:?}",
                head.status
            );
            Vec::new()
        } else if head.chunked() {
            assert!(
                head.header("content-length").is_none(),
                "chunked and a length: {head:?}"
            );
            let mut body = Vec::new();
            while let Some(chunk) = self.chunk().await {
                body.extend_from_slice(&chunk);
            }
            body
        } else if let Some(length) = head.header("content-length") {
            let length = length
                .parse()
                .unwrap_or_else(|_| panic!("content-length in {head:?}"));
            self.take(length).await
        } else {
            // Delimited by the end of the connection (HTTP/1.0 style).
            while self.fill().await > 0 {}
            std::mem::take(&mut self.buf)
        };
        Reply { head, body }
    }

    /// Asserts the server ends the connection with nothing more written.
    async fn closed(&mut self) {
        assert!(
            self.buf.is_empty(),
            "bytes before the end: {:?}",
            lossy(&self.buf)
        );
        let mut scratch = [0u8; 1024];
        match within("end of the connection", self.tcp.read(&mut scratch)).await {
            Ok(0) => {}
            Ok(n) => panic!("expected the end, got {:?}", lossy(&scratch[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected the end, got {e}"),
        }
    }

    /// Asserts the connection stays open and nothing arrives for `wait`.
    async fn silent(&mut self, wait: Duration) {
        assert!(self.buf.is_empty(), "unexpected {:?}", lossy(&self.buf));
        let mut scratch = [0u8; 1024];
        match tokio::time::timeout(wait, self.tcp.read(&mut scratch)).await {
            Err(_) => {}
            Ok(Ok(0)) => panic!("the server closed the connection"),
            Ok(Ok(n)) => panic!("unexpected {:?}", lossy(&scratch[..n])),
            Ok(Err(e)) => panic!("the connection failed: {e}"),
        }
    }
}

/// An HTTP/1.1 request: the request line, `Host`, `headers`, and a
/// `Content-Length` for a POST or a body.
fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: switchboard.test\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST" || !body.is_empty() {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

/// `body` in chunked transfer coding, cut into `pieces` chunks.
fn chunked(body: &str, pieces: usize) -> String {
    let bytes = body.as_bytes();
    let step = bytes.len().div_ceil(pieces);
    let mut out = String::new();
    for piece in bytes.chunks(step) {
        out.push_str(&format!("{:x}\r\n", piece.len()));
        out.push_str(std::str::from_utf8(piece).unwrap());
        out.push_str("\r\n");
    }
    out.push_str("0\r\n\r\n");
    out
}

// --------------------------------------------------- transport requests

/// `POST /connection/poll {"token"}` for `user`.
fn poll_connect(user: &str) -> Vec<u8> {
    request(
        "POST",
        "/connection/poll",
        &[("Content-Type", "application/json")],
        &json!({"token": token(user)}).to_string(),
    )
}

/// `POST /connection/send?session=…` with `user`'s bearer token.
fn send(session: &str, user: &str, body: &str) -> Vec<u8> {
    let bearer = format!("Bearer {}", token(user));
    request(
        "POST",
        &format!("/connection/send?session={session}"),
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        body,
    )
}

/// `GET /connection/poll?session=…&cursor=…`.
fn poll(session: &str, cursor: u64) -> Vec<u8> {
    request(
        "GET",
        &format!("/connection/poll?session={session}&cursor={cursor}"),
        &[],
        "",
    )
}

/// A client ping command.
fn ping(id: u64) -> String {
    json!({"id": id, "type": "ping"}).to_string()
}

/// Asserts the `connected` answer to a poll connect; its session.
fn session_of(reply: &Reply) -> String {
    let body = reply.json();
    assert_eq!(reply.status(), 200, "{reply:?}");
    assert_eq!(body["type"], "connected", "{body}");
    body["session"]
        .as_str()
        .unwrap_or_else(|| panic!("connected carries the session: {body}"))
        .to_string()
}

/// Connects `user` by long-polling on `raw`; the session.
async fn connect_on(raw: &mut Raw, user: &str) -> String {
    raw.send(&poll_connect(user)).await;
    session_of(&raw.response().await)
}

/// The answer to a poll that found the pong to client ping `id`.
fn pong(cursor: u64, id: u64) -> (u16, Value) {
    (
        200,
        json!({"cursor": cursor, "messages": [{"id": id, "type": "pong"}]}),
    )
}

/// Asserts an HTTP error with the API's body `{"error":{"code","message"}}`.
fn assert_error(reply: &Reply, status: u16, code: u64) {
    let body = reply.json();
    assert_eq!(reply.status(), status, "{reply:?}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

// ------------------------------------------------------------ raw SSE

/// The lines of one SSE block.
#[derive(Debug, Default)]
struct Block {
    comments: Vec<String>,
    id: Option<String>,
    data: Vec<String>,
    retry: Option<String>,
}

/// An event stream read as chunks off a raw socket.
struct RawSse {
    raw: Raw,
    head: Head,
    /// De-chunked stream text not yet split into blocks.
    text: Vec<u8>,
    /// The last-chunk arrived.
    ended: bool,
}

impl RawSse {
    /// `GET /connection/sse?<query>`: asserts a 200 chunked event stream.
    async fn open(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> RawSse {
        let mut raw = Raw::open(addr).await;
        raw.send(&request(
            "GET",
            &format!("/connection/sse?{query}"),
            &[headers, &[("Accept", "text/event-stream")]].concat(),
            "",
        ))
        .await;
        let head = raw.head().await;
        assert_eq!(head.status, 200, "{head:?}");
        assert!(head.chunked(), "an event stream is chunked: {head:?}");
        assert_eq!(head.header("content-length"), None, "{head:?}");
        assert!(
            head.header("content-type")
                .is_some_and(|t| t.starts_with("text/event-stream")),
            "{head:?}"
        );
        RawSse {
            raw,
            head,
            text: Vec::new(),
            ended: false,
        }
    }

    /// The next block, `None` once the body ended; `Err` after `wait`.
    async fn try_block(&mut self, wait: Duration) -> Result<Option<Block>, ()> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(at) = self.text.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.text.drain(..at + 2).collect();
                let block = String::from_utf8(block).expect("the stream is UTF-8");
                return Ok(Some(parse_block(&block)));
            }
            if self.ended {
                assert!(
                    self.text.is_empty(),
                    "the stream ended mid-block: {:?}",
                    lossy(&self.text)
                );
                return Ok(None);
            }
            match tokio::time::timeout_at(deadline, self.raw.chunk()).await {
                Err(_) => return Err(()),
                Ok(Some(chunk)) => self.text.extend_from_slice(&chunk),
                Ok(None) => self.ended = true,
            }
        }
    }

    async fn block(&mut self) -> Option<Block> {
        self.try_block(LIMIT)
            .await
            .expect("an SSE block within the limit")
    }

    /// The next event (comment-only blocks skipped): its id and frame.
    async fn event(&mut self) -> (Option<String>, Value) {
        loop {
            let block = self.block().await.expect("the stream is open");
            if !block.data.is_empty() {
                let text = block.data.join("\n");
                let frame = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {text:?}"));
                return (block.id, frame);
            }
        }
    }

    /// The next event, which must carry `id: <session>.<seq>`.
    async fn numbered(&mut self, session: &str, seq: u64) -> Value {
        let (id, frame) = self.event().await;
        assert_eq!(id, Some(format!("{session}.{seq}")), "{frame}");
        frame
    }

    /// Asserts no event comes for `wait` (keep-alive comments allowed).
    async fn silent(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_block(left).await {
                Err(()) => return,
                Ok(None) => panic!("the stream ended"),
                Ok(Some(block)) if block.data.is_empty() => {}
                Ok(Some(block)) => panic!("expected silence, got {block:?}"),
            }
        }
    }

    /// Asserts the body ends (last-chunk) with no further event, and the
    /// connection closes.
    async fn ends(&mut self) {
        loop {
            match self.block().await {
                None => break,
                Some(block) if block.data.is_empty() => {}
                Some(block) => panic!("expected the end, got {block:?}"),
            }
        }
        self.raw.closed().await;
    }
}

fn parse_block(text: &str) -> Block {
    let mut block = Block::default();
    for line in text.split('\n').filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix(':') {
            block.comments.push(comment.to_string());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_string();
        match field {
            "id" => block.id = Some(value),
            "data" => block.data.push(value),
            "retry" => block.retry = Some(value),
            _ => {}
        }
    }
    block
}

// ---------------------------------------------------------------- server

/// A node with a `feed` namespace (history, client publishing) that lets
/// [`ORIGIN`] in.
async fn server(tweak: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.namespaces.insert("feed".into(), namespace(|_| {}));
        c.allowed_origins = vec![ORIGIN.into()];
        tweak(c);
    })
    .await
}

/// Publishes through the server API, asserting success in time.
async fn publish(server: &TestServer, channel: &str, data: Value) {
    within("an API publish", server.publish(channel, data)).await;
}

/// A gauge from `/metrics`.
async fn gauge(server: &TestServer, name: &str) -> u64 {
    let text = within("/metrics", async {
        reqwest::get(server.http("/metrics"))
            .await
            .expect("/metrics answers")
            .text()
            .await
            .unwrap()
    })
    .await;
    let prefix = format!("switchboard_{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
        .parse()
        .unwrap()
}

/// Waits until gauge `name` reads `value`; how long that took.
async fn gauge_reaches(server: &TestServer, name: &str, value: u64) -> Duration {
    let started = Instant::now();
    loop {
        let now = gauge(server, name).await;
        if now == value {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < LIMIT,
            "switchboard_{name} stayed {now}, expected {value}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ================================================================= tests

#[tokio::test]
async fn keep_alive_serves_transport_requests_then_hands_the_same_connection_to_hyper() {
    let server = server(|c| c.client.poll_hold = Duration::from_millis(300)).await;
    let mut raw = Raw::open(server.addr).await;

    // Served on the socket: connect, send, a poll that finds the pong, a
    // poll that waits the hold out.
    raw.send(&poll_connect("alice")).await;
    let connected = raw.response().await;
    let s = session_of(&connected);
    assert_eq!(connected.head.version, "HTTP/1.1", "{connected:?}");
    assert!(!connected.head.closes(), "{connected:?}");
    assert!(!connected.head.by_hyper(), "served directly: {connected:?}");
    raw.send(&send(&s, "alice", &ping(1))).await;
    let sent = raw.response().await;
    assert_eq!(sent.answer(), (202, json!({"accepted": 1})));
    assert!(!sent.head.by_hyper(), "served directly: {sent:?}");
    raw.send(&poll(&s, 1)).await;
    let polled = raw.response().await;
    assert_eq!(polled.answer(), pong(2, 1));
    assert_eq!(polled.head.header("content-type"), Some("application/json"));
    raw.send(&poll(&s, 2)).await;
    let held = raw.response().await;
    assert_eq!(held.answer(), (200, json!({"cursor": 2, "messages": []})));
    assert!(!held.head.by_hyper(), "served directly: {held:?}");

    // Another path: hyper takes the connection over, bytes already read
    // included.
    raw.send(&request("GET", "/health", &[], "")).await;
    let health = raw.response().await;
    assert_eq!(health.answer(), (200, json!({"status": "ok"})));
    assert!(health.head.by_hyper(), "{health:?}");
    assert!(!health.head.closes(), "{health:?}");

    // The transports still work on that connection, now through hyper.
    raw.send(&send(&s, "alice", &ping(2))).await;
    let sent = raw.response().await;
    assert_eq!(sent.answer(), (202, json!({"accepted": 1})));
    assert!(sent.head.by_hyper(), "{sent:?}");
    raw.send(&poll(&s, 2)).await;
    let polled = raw.response().await;
    assert_eq!(polled.answer(), pong(3, 2));
    assert!(polled.head.by_hyper(), "{polled:?}");
    raw.silent(SILENCE).await;
}

#[tokio::test]
async fn pipelined_requests_in_one_write_get_their_responses_in_order() {
    let server = server(|_| {}).await;
    let mut raw = Raw::open(server.addr).await;
    let s = connect_on(&mut raw, "alice").await;

    let batch = [
        request(
            "OPTIONS",
            &format!("/connection/send?session={s}"),
            &[
                ("Origin", ORIGIN),
                ("Access-Control-Request-Method", "POST"),
            ],
            "",
        ),
        send(&s, "alice", &ping(1)),
        poll(&s, 1),
        // Handed to hyper with the pipelined requests after it.
        request("GET", "/health", &[], ""),
        send(&s, "alice", &ping(2)),
        poll(&s, 2),
    ]
    .concat();
    raw.send(&batch).await;

    let preflight = raw.response().await;
    assert_eq!(preflight.status(), 204, "{preflight:?}");
    assert_eq!(
        preflight.head.header("access-control-allow-origin"),
        Some(ORIGIN)
    );
    assert!(
        preflight.head.lists("access-control-allow-methods", "POST"),
        "{preflight:?}"
    );
    assert!(!preflight.head.by_hyper(), "{preflight:?}");
    let sent = raw.response().await;
    assert_eq!(sent.answer(), (202, json!({"accepted": 1})));
    assert_eq!(raw.response().await.answer(), pong(2, 1));
    let health = raw.response().await;
    assert_eq!(health.answer(), (200, json!({"status": "ok"})));
    assert!(health.head.by_hyper(), "{health:?}");
    assert_eq!(raw.response().await.answer(), (202, json!({"accepted": 1})));
    assert_eq!(raw.response().await.answer(), pong(3, 2));
    raw.silent(SILENCE).await;

    // More pipelined than the server reads ahead while it answers (4 KiB).
    let mut raw = Raw::open(server.addr).await;
    let mut batch: Vec<u8> = (3..43)
        .flat_map(|id| send(&s, "alice", &ping(id)))
        .collect();
    batch.extend(poll(&s, 3));
    assert!(batch.len() > 8 * 1024, "{}", batch.len());
    raw.send(&batch).await;
    for _ in 3..43 {
        let sent = raw.response().await;
        assert_eq!(sent.answer(), (202, json!({"accepted": 1})));
        assert!(!sent.head.by_hyper(), "served directly: {sent:?}");
    }
    let polled = raw.response().await.json();
    let ids: Vec<u64> = polled["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("{polled}"))
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (3..43).collect::<Vec<_>>(), "{polled}");
    assert_eq!(polled["cursor"], 43, "{polled}");
    raw.silent(SILENCE).await;
}

#[tokio::test]
async fn connection_close_on_a_transport_request_is_answered_then_the_socket_closes() {
    let server = server(|_| {}).await;

    // Keep-alive first: no `connection: close`, the socket stays.
    let mut raw = Raw::open(server.addr).await;
    raw.send(&poll_connect("alice")).await;
    let connected = raw.response().await;
    let s = session_of(&connected);
    assert!(!connected.head.closes(), "{connected:?}");

    // Then a send that asks to close.
    let mut last = send(&s, "alice", &ping(1));
    let at = last.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
    last.splice(at..at, b"Connection: close\r\n".iter().copied());
    raw.send(&last).await;
    let sent = raw.response().await;
    assert_eq!(sent.answer(), (202, json!({"accepted": 1})));
    assert!(sent.head.closes(), "{sent:?}");
    assert!(!sent.head.by_hyper(), "served directly: {sent:?}");
    raw.closed().await;

    // A poll on a fresh socket, `close` among the Connection tokens.
    let mut raw = Raw::open(server.addr).await;
    raw.send(&request(
        "GET",
        &format!("/connection/poll?session={s}&cursor=1"),
        &[("Connection", "keep-alive, close")],
        "",
    ))
    .await;
    let polled = raw.response().await;
    assert_eq!(polled.answer(), pong(2, 1));
    assert!(polled.head.closes(), "{polled:?}");
    raw.closed().await;
}

#[tokio::test]
async fn a_chunked_request_body_to_send_is_served_and_the_command_takes_effect() {
    let server = server(|_| {}).await;
    let mut watcher = within("a WebSocket client", server.client("watcher")).await;
    watcher.subscribe("feed:chunked").await;
    let mut raw = Raw::open(server.addr).await;
    let s = connect_on(&mut raw, "alice").await;

    let command = json!({
        "id": 1,
        "type": "publish",
        "channel": "feed:chunked",
        "data": {"text": "sent in chunks"},
    })
    .to_string();
    let bearer = format!("Bearer {}", token("alice"));
    let head = format!(
        "POST /connection/send?session={s} HTTP/1.1\r\nHost: switchboard.test\r\n\
         Authorization: {bearer}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    let body = chunked(&command, 3);
    // The head and first chunk, then the rest a moment later.
    let split = body.find("\r\n").unwrap() + 2 + command.len().div_ceil(3) + 2;
    raw.send(format!("{head}{}", &body[..split]).as_bytes())
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    raw.send(&body.as_bytes()[split..]).await;

    let sent = raw.response().await;
    assert_eq!(sent.answer(), (202, json!({"accepted": 1})));
    let publication = watcher.push("publication").await;
    assert_eq!(publication["channel"], "feed:chunked", "{publication}");
    assert_eq!(
        publication["data"],
        json!({"text": "sent in chunks"}),
        "{publication}"
    );

    // The reply waits for the poll, on the same connection.
    raw.send(&poll(&s, 1)).await;
    let polled = raw.response().await;
    let body = polled.json();
    assert_eq!(polled.status(), 200, "{polled:?}");
    assert_eq!(body["cursor"], 2, "{body}");
    assert_eq!(body["messages"][0]["id"], 1, "{body}");
    assert_eq!(body["messages"][0]["type"], "published", "{body}");
}

#[tokio::test]
async fn http_1_0_poll_requests_get_valid_answers() {
    let server = server(|c| c.client.poll_hold = Duration::from_millis(300)).await;

    // Connect with an HTTP/1.0 POST: answered, then the socket closes.
    let body = json!({"token": token("alice")}).to_string();
    let mut raw = Raw::open(server.addr).await;
    raw.send(
        format!(
            "POST /connection/poll HTTP/1.0\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    let connected = raw.response().await;
    let s = session_of(&connected);
    assert!(
        !connected.head.chunked(),
        "no chunks for HTTP/1.0: {connected:?}"
    );
    raw.closed().await;

    let mut cmd = Raw::open(server.addr).await;
    cmd.send(&send(&s, "alice", &ping(1))).await;
    assert_eq!(cmd.response().await.answer(), (202, json!({"accepted": 1})));

    // Poll with HTTP/1.0.
    let mut raw = Raw::open(server.addr).await;
    raw.send(format!("GET /connection/poll?session={s}&cursor=1 HTTP/1.0\r\n\r\n").as_bytes())
        .await;
    let polled = raw.response().await;
    assert_eq!(polled.answer(), pong(2, 1));
    assert!(!polled.head.chunked(), "{polled:?}");
    raw.closed().await;

    // HTTP/1.0 asking for keep-alive: two polls on one connection.
    let mut raw = Raw::open(server.addr).await;
    for _ in 0..2 {
        raw.send(
            format!(
                "GET /connection/poll?session={s}&cursor=2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        let held = raw.response().await;
        assert_eq!(held.answer(), (200, json!({"cursor": 2, "messages": []})));
        assert!(!held.head.chunked(), "{held:?}");
    }
}

#[tokio::test]
async fn a_malformed_request_head_gets_400_and_the_server_serves_others_afterwards() {
    let server = server(|_| {}).await;
    let mut bystander = within("a WebSocket client", server.client("bystander")).await;

    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /connection/poll HTTP/1.1\r\nno colon in this header\r\n\r\n",
        b"POST /connection/send HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        b"POST /connection/send HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"\x00\x01\x02\xff binary \r\n\r\n",
        b"GET /connection/poll?session=x&cursor=1 HTTP/9.9\r\n\r\n",
    ] {
        let mut raw = Raw::open(server.addr).await;
        raw.send(garbage).await;
        let refused = raw.response().await;
        assert_eq!(refused.status(), 400, "{:?}: {refused:?}", lossy(garbage));
        raw.closed().await;
    }

    // Everyone else is served as before.
    assert_alive(&mut bystander).await;
    let mut raw = Raw::open(server.addr).await;
    let s = connect_on(&mut raw, "alice").await;
    raw.send(&send(&s, "alice", &ping(1))).await;
    assert_eq!(raw.response().await.answer(), (202, json!({"accepted": 1})));
    raw.send(&poll(&s, 1)).await;
    assert_eq!(raw.response().await.answer(), pong(2, 1));
}

#[tokio::test]
async fn sse_over_a_raw_socket_is_chunked_events_and_a_closed_socket_detaches_the_session() {
    let server = server(|_| {}).await;
    let query = format!("token={}", token("alice"));
    let mut sse = RawSse::open(server.addr, &query, &[]).await;
    assert!(!sse.head.by_hyper(), "served directly: {:?}", sse.head);
    assert!(
        sse.head.lists("cache-control", "no-cache"),
        "{:?}",
        sse.head
    );

    // Padding, `retry`, then `connected` as seq 1.
    let padding = sse.block().await.expect("a first block");
    assert!(padding.data.is_empty(), "padding first: {padding:?}");
    assert!(
        padding
            .comments
            .first()
            .is_some_and(|c| c.len() >= 2047 && c.bytes().all(|b| b == b' ')),
        "2 KiB of padding: {:?}",
        padding.comments.iter().map(String::len).collect::<Vec<_>>()
    );
    let mut retry = padding.retry;
    let connected = loop {
        let block = sse.block().await.expect("the stream is open");
        retry = block.retry.clone().or(retry);
        if !block.data.is_empty() {
            break block;
        }
    };
    assert_eq!(retry.as_deref(), Some("2000"));
    let frame: Value = serde_json::from_str(&connected.data.join("\n")).unwrap();
    assert_eq!(frame["type"], "connected", "{frame}");
    let s = frame["session"].as_str().unwrap().to_string();
    assert_eq!(connected.id, Some(format!("{s}.1")), "{connected:?}");

    // Subscribe through send (another keep-alive connection), publish.
    let mut cmd = Raw::open(server.addr).await;
    let subscribe = json!({"id": 1, "type": "subscribe", "channel": "feed:sse"});
    cmd.send(&send(&s, "alice", &subscribe.to_string())).await;
    assert_eq!(cmd.response().await.answer(), (202, json!({"accepted": 1})));
    assert_eq!(sse.numbered(&s, 2).await["type"], "subscribed");
    publish(&server, "feed:sse", json!({"n": 1})).await;
    let publication = sse.numbered(&s, 3).await;
    assert_eq!(publication["type"], "publication", "{publication}");
    assert_eq!(publication["data"], json!({"n": 1}), "{publication}");
    assert_eq!(gauge(&server, "sessions_detached").await, 0);

    // The client closes the socket: the session is detached, not ended.
    drop(sse);
    gauge_reaches(&server, "sessions_detached", 1).await;
    assert_eq!(gauge(&server, "sessions").await, 1);
    publish(&server, "feed:sse", json!({"n": 2})).await;

    // Resume with Last-Event-ID: only what came after seq 3.
    let last_event_id = format!("{s}.3");
    let mut sse = RawSse::open(server.addr, &query, &[("Last-Event-ID", &last_event_id)]).await;
    let (id, hello) = sse.event().await;
    assert_eq!(id, None, "a resume's connected has no id: {hello}");
    assert_eq!(hello["type"], "connected", "{hello}");
    assert_eq!(hello["resumed"], true, "{hello}");
    assert_eq!(sse.numbered(&s, 4).await["data"], json!({"n": 2}));
    sse.silent(SILENCE).await;
    publish(&server, "feed:sse", json!({"n": 3})).await;
    assert_eq!(sse.numbered(&s, 5).await["data"], json!({"n": 3}));

    // Again, resuming with session and seq in the query.
    drop(sse);
    gauge_reaches(&server, "sessions_detached", 1).await;
    publish(&server, "feed:sse", json!({"n": 4})).await;
    let resume = format!("{query}&session={s}&seq=5");
    let mut sse = RawSse::open(server.addr, &resume, &[]).await;
    let (id, hello) = sse.event().await;
    assert_eq!((id, &hello["resumed"]), (None, &json!(true)), "{hello}");
    assert_eq!(sse.numbered(&s, 6).await["data"], json!({"n": 4}));
    sse.silent(SILENCE).await;
}

#[tokio::test]
async fn a_pending_long_poll_whose_client_leaves_detaches_its_session_promptly() {
    let hold = Duration::from_secs(30);
    let server = server(|c| c.client.poll_hold = hold).await;
    let mut raw = Raw::open(server.addr).await;
    let s = connect_on(&mut raw, "alice").await;
    // Between polls the session waits detached.
    gauge_reaches(&server, "sessions_detached", 1).await;

    raw.send(&poll(&s, 1)).await;
    gauge_reaches(&server, "sessions_detached", 0).await;
    raw.silent(SILENCE).await;

    // The client goes away mid-poll: detached long before the hold ends.
    drop(raw);
    let took = gauge_reaches(&server, "sessions_detached", 1).await;
    assert!(took < hold / 6, "detached only after {took:?}");
    assert_eq!(gauge(&server, "sessions").await, 1);

    // The session carries on on another connection.
    let mut raw = Raw::open(server.addr).await;
    raw.send(&send(&s, "alice", &ping(1))).await;
    assert_eq!(raw.response().await.answer(), (202, json!({"accepted": 1})));
    raw.send(&poll(&s, 1)).await;
    assert_eq!(raw.response().await.answer(), pong(2, 1));
}

#[tokio::test]
async fn graceful_shutdown_ends_direct_streams_polls_and_idle_connections_in_time() {
    let timeout = Duration::from_secs(6);
    let server = server(|c| {
        c.shutdown_timeout = timeout;
        c.client.poll_hold = Duration::from_secs(30);
    })
    .await;

    let mut sse = RawSse::open(server.addr, &format!("token={}", token("alice")), &[]).await;
    let (_, connected) = sse.event().await;
    let alice = connected["session"].as_str().unwrap().to_string();

    let mut poller = Raw::open(server.addr).await;
    let bob = connect_on(&mut poller, "bob").await;
    poller.send(&poll(&bob, 1)).await;
    gauge_reaches(&server, "sessions_detached", 0).await;

    // Idle keep-alive connections: one still served directly, one that
    // hyper took over.
    let mut idle_direct = Raw::open(server.addr).await;
    connect_on(&mut idle_direct, "carol").await;
    let mut idle_hyper = Raw::open(server.addr).await;
    idle_hyper.send(&request("GET", "/health", &[], "")).await;
    assert!(idle_hyper.response().await.head.by_hyper());

    let started = Instant::now();
    let stopping = tokio::spawn(server.stop());

    let disconnect = sse.numbered(&alice, 2).await;
    assert_eq!(disconnect["type"], "disconnect", "{disconnect}");
    assert_eq!(disconnect["code"], 3001, "{disconnect}");
    assert_eq!(disconnect["reconnect"], true, "{disconnect}");
    sse.ends().await;

    let polled = poller.response().await;
    let body = polled.json();
    assert_eq!(polled.status(), 200, "{polled:?}");
    assert_eq!(body["cursor"], 2, "{body}");
    assert_eq!(body["messages"][0]["type"], "disconnect", "{body}");
    assert_eq!(body["messages"][0]["code"], 3001, "{body}");
    poller.closed().await;

    idle_direct.closed().await;
    idle_hyper.closed().await;

    within("the end of the shutdown", stopping)
        .await
        .expect("shutdown does not panic");
    // A connection that ignored the stop would hold it for the whole
    // timeout.
    assert!(
        started.elapsed() < timeout / 2,
        "shutdown took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_request_head_over_16_kib_on_a_transport_path_is_served_by_hyper() {
    let server = server(|c| c.client.poll_hold = Duration::from_millis(300)).await;
    let mut raw = Raw::open(server.addr).await;
    let s = connect_on(&mut raw, "alice").await;
    raw.send(&send(&s, "alice", &ping(1))).await;
    assert_eq!(raw.response().await.answer(), (202, json!({"accepted": 1})));

    // 24 KiB of headers: more than the direct path reads, all of it
    // replayed to hyper.
    let padding = "p".repeat(8 * 1024);
    let big = request(
        "GET",
        &format!("/connection/poll?session={s}&cursor=1"),
        &[
            ("X-Pad-1", &padding),
            ("X-Pad-2", &padding),
            ("X-Pad-3", &padding),
        ],
        "",
    );
    assert!(big.len() > 24 * 1024);
    let mut raw = Raw::open(server.addr).await;
    raw.send(&big).await;
    let polled = raw.response().await;
    assert_eq!(polled.answer(), pong(2, 1));
    assert!(polled.head.by_hyper(), "{polled:?}");
    // The connection goes on with hyper.
    raw.send(&poll(&s, 2)).await;
    let held = raw.response().await;
    assert_eq!(held.answer(), (200, json!({"cursor": 2, "messages": []})));

    // A head far over hyper's limit (about 400 KiB, checked between reads,
    // so a head just over it may still be taken): refused, not left
    // hanging.
    let huge = request(
        "GET",
        &format!("/connection/poll?session={s}&cursor=2"),
        &[("X-Huge", &"h".repeat(2 * 1024 * 1024))],
        "",
    );
    let (mut reader, mut writer) = Raw::open(server.addr).await.tcp.into_split();
    // Written alongside: the server stops reading before the end.
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&huge).await;
        writer
    });
    let mut answer = Vec::new();
    loop {
        let mut scratch = [0u8; 4096];
        match within("an answer to a huge head", reader.read(&mut scratch)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&scratch[..n]),
        }
    }
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(
        text.starts_with("http/1.1 431 ") || text.starts_with("http/1.1 400 "),
        "{}",
        lossy(&answer)
    );
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    drop(writing);

    // Others are still served.
    let mut raw = Raw::open(server.addr).await;
    raw.send(&send(&s, "alice", &ping(2))).await;
    assert_eq!(raw.response().await.answer(), (202, json!({"accepted": 1})));
    raw.send(&poll(&s, 2)).await;
    assert_eq!(raw.response().await.answer(), pong(3, 2));
}

#[tokio::test]
async fn a_send_body_over_the_limit_is_413_message_too_large() {
    let server = server(|c| c.client.max_data_size = 1024).await;
    let limit = switchboard::transport::http_session::body_limit(&server.running.node);
    let mut raw = Raw::open(server.addr).await;
    let s = connect_on(&mut raw, "alice").await;

    // A body of exactly the limit (a ping padded with JSON whitespace).
    let padded = |len: usize| {
        let command = ping(1);
        format!("{command}{}", " ".repeat(len - command.len()))
    };
    raw.send(&send(&s, "alice", &padded(limit))).await;
    let sent = raw.response().await;
    assert_eq!(sent.answer(), (202, json!({"accepted": 1})));
    assert!(!sent.head.by_hyper(), "served directly: {sent:?}");

    // One byte more, with a length.
    let mut raw = Raw::open(server.addr).await;
    raw.send(&send(&s, "alice", &padded(limit + 1))).await;
    let refused = raw.response().await;
    assert_error(&refused, 413, 111);
    assert!(refused.head.by_hyper(), "{refused:?}");

    // One byte more, in chunks.
    let bearer = format!("Bearer {}", token("alice"));
    let mut raw = Raw::open(server.addr).await;
    raw.send(
        format!(
            "POST /connection/send?session={s} HTTP/1.1\r\nHost: switchboard.test\r\n\
             Authorization: {bearer}\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            chunked(&padded(limit + 1), 4)
        )
        .as_bytes(),
    )
    .await;
    assert_error(&raw.response().await, 413, 111);

    // Only the first ping was taken.
    let mut raw = Raw::open(server.addr).await;
    raw.send(&poll(&s, 1)).await;
    assert_eq!(raw.response().await.answer(), pong(2, 1));
}

// ----------------------------------- heads in progress and odd line ends

#[tokio::test]
async fn a_head_with_bare_lf_line_ends_is_answered_as_hyper_answers_it() {
    let server = server(|_| {}).await;
    // hyper answers LF-only heads once it has the connection…
    let mut raw = Raw::open(server.addr).await;
    raw.send(b"GET /health HTTP/1.1\r\n\r\nGET /health HTTP/1.1\nHost: a\n\n")
        .await;
    assert_eq!(raw.response().await.status(), 200);
    assert_eq!(raw.response().await.status(), 200);
    // …and as a connection's first head (any path), read by the direct
    // side, it is answered too.
    for target in ["/health", "/connection/poll?session=x&cursor=1"] {
        let mut raw = Raw::open(server.addr).await;
        raw.send(format!("GET {target} HTTP/1.1\nHost: a\n\n").as_bytes())
            .await;
        let answer = raw.response().await;
        assert!(matches!(answer.status(), 200 | 404), "{answer:?}");
    }
}

#[tokio::test]
async fn a_connection_with_a_partial_head_does_not_hold_the_shutdown() {
    let timeout = Duration::from_secs(6);
    let server = server(|c| c.shutdown_timeout = timeout).await;
    let mut raw = Raw::open(server.addr).await;
    raw.send(b"GET /connection/poll?session=x&cursor=1 HTTP/1.1\r\nHost: a\r\n")
        .await;
    tokio::time::sleep(SILENCE).await;

    let started = Instant::now();
    let stopping = tokio::spawn(server.stop());
    // hyper closes such a connection at once on a graceful shutdown.
    raw.closed().await;
    within("the end of the shutdown", stopping).await.unwrap();
    assert!(
        started.elapsed() < timeout / 2,
        "shutdown took {:?}",
        started.elapsed()
    );
}
