//! A minimal HTTP/1.1 client for the SSE and long-polling transports, on
//! plain tokio TCP like the WebSocket client ([`super::conn`]): requests are
//! written by hand, a response head is parsed by hand, a body is read by its
//! `Content-Length` or decoded from `Transfer-Encoding: chunked` (an event
//! stream has no length) with [`Chunked`], and an event stream is split into
//! events by [`SseParser`]. Both decoders are incremental (they keep partial
//! input between reads) and hand out slices of the caller's buffer where
//! they can, so the steady-state read loops stay cheap.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest response body read whole (a long-poll answer).
const MAX_BODY: usize = 16 << 20;
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A keep-alive HTTP/1.1 connection.
pub struct HttpConn {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read past what was consumed (the start of a body, or of the
    /// next response).
    pub buf: Vec<u8>,
    /// `Host:` value.
    host: String,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// `Content-Length`, if given.
    pub content_length: Option<usize>,
    /// `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// `Content-Type`, lower-cased.
    pub content_type: String,
    /// The server will close the connection after this response.
    pub close: bool,
}

impl HttpConn {
    /// Opens a TCP connection (`TCP_NODELAY`, like the WebSocket client).
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<HttpConn> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .context("TCP connect timed out")?
            .context("TCP connect")?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        Ok(HttpConn {
            stream,
            buf: Vec::new(),
            host: addr.to_string(),
        })
    }

    /// Writes one request; `headers` are extra header lines, each ending
    /// with `\r\n`. A body gets its `Content-Length` (and a JSON type).
    pub async fn send_request(
        &mut self,
        method: &str,
        target: &str,
        headers: &str,
        body: &[u8],
    ) -> anyhow::Result<()> {
        let mut req = Vec::with_capacity(128 + target.len() + headers.len() + body.len());
        req.extend_from_slice(method.as_bytes());
        req.push(b' ');
        req.extend_from_slice(target.as_bytes());
        req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        req.extend_from_slice(self.host.as_bytes());
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(headers.as_bytes());
        if !body.is_empty() || method == "POST" {
            req.extend_from_slice(
                format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n",
                    body.len()
                )
                .as_bytes(),
            );
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        self.stream
            .write_all(&req)
            .await
            .context("writing an HTTP request")
    }

    /// Reads more bytes into [`HttpConn::buf`]; fails on EOF.
    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await.context("reading")?;
        if n == 0 {
            bail!("server closed the connection");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Reads a response head; what follows it stays in [`HttpConn::buf`].
    pub async fn read_head(&mut self) -> anyhow::Result<Head> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = parse_head(&self.buf[..end + 4])?;
                self.buf.drain(..end + 4);
                return Ok(head);
            }
            if self.buf.len() > MAX_HEAD {
                bail!("HTTP response head too long");
            }
            self.fill().await?;
        }
    }

    /// Reads the whole body of a response whose head was just read.
    pub async fn read_body(&mut self, head: &Head) -> anyhow::Result<Vec<u8>> {
        if let Some(len) = head.content_length {
            if len > MAX_BODY {
                bail!("HTTP response body of {len} bytes is too large");
            }
            while self.buf.len() < len {
                self.fill().await?;
            }
            let rest = self.buf.split_off(len);
            return Ok(std::mem::replace(&mut self.buf, rest));
        }
        if head.chunked {
            let mut decoder = Chunked::new();
            let mut body = Vec::new();
            loop {
                let input = std::mem::take(&mut self.buf);
                let used = decoder
                    .feed(&input, &mut |part| body.extend_from_slice(part))
                    .map_err(|e| anyhow::anyhow!("bad chunked encoding: {e}"))?;
                self.buf = input[used..].to_vec();
                if decoder.is_done() {
                    return Ok(body);
                }
                if body.len() > MAX_BODY {
                    bail!("HTTP response body too large");
                }
                self.fill().await?;
            }
        }
        // No length: the body runs to the end of the connection.
        let mut chunk = [0u8; 8192];
        loop {
            let n = self.stream.read(&mut chunk).await.context("reading")?;
            if n == 0 {
                return Ok(std::mem::take(&mut self.buf));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// One request and its whole response: (status, body).
    pub async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        self.send_request(method, target, headers, body).await?;
        let head = self.read_head().await?;
        let body = self.read_body(&head).await?;
        Ok((head.status, body))
    }
}

/// Parses `HTTP/1.1 200 OK\r\nName: value\r\n…\r\n\r\n`.
pub fn parse_head(bytes: &[u8]) -> anyhow::Result<Head> {
    let text = std::str::from_utf8(bytes).context("HTTP response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1.x response: {status_line:?}");
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut head = Head {
        status,
        content_length: None,
        chunked: false,
        content_type: String::new(),
        close: version == "HTTP/1.0",
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(value.parse().context("bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value
                .split(',')
                .any(|c| c.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("content-type") {
            head.content_type = value.to_ascii_lowercase();
        } else if name.eq_ignore_ascii_case("connection") {
            head.close = value.eq_ignore_ascii_case("close");
        }
    }
    if head.chunked {
        head.content_length = None;
    }
    Ok(head)
}

/// Incremental decoder of `Transfer-Encoding: chunked`.
#[derive(Debug)]
pub struct Chunked {
    state: ChunkState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size; `ext` once past a `;` extension.
    Size {
        size: u64,
        digits: u8,
        ext: bool,
    },
    /// Saw the size line's `\r`.
    SizeLf {
        size: u64,
    },
    /// Inside a chunk's data.
    Data(u64),
    /// After the data: `\r` then `\n`.
    DataCr,
    DataLf,
    /// After the last (zero) chunk: trailer lines up to an empty one;
    /// `line_len` counts the current line's bytes.
    Trailer {
        line_len: usize,
        cr: bool,
    },
    /// The body is complete.
    Done,
}

impl Default for Chunked {
    fn default() -> Self {
        Self::new()
    }
}

impl Chunked {
    /// A decoder at the start of a body.
    pub fn new() -> Chunked {
        Chunked {
            state: ChunkState::Size {
                size: 0,
                digits: 0,
                ext: false,
            },
        }
    }

    /// Whether the last chunk (and its trailer) was seen.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes `input`, handing each piece of payload to `out`; returns how
    /// many bytes were used (all of them, unless the body ended).
    pub fn feed(&mut self, input: &[u8], out: &mut impl FnMut(&[u8])) -> Result<usize, String> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                ChunkState::Data(left) => {
                    let take = (left as usize).min(input.len() - i);
                    out(&input[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::Size { size, digits, ext } => {
                    let b = input[i];
                    i += 1;
                    self.state = match b {
                        b'\r' if digits > 0 => ChunkState::SizeLf { size },
                        b'\n' if digits > 0 => self.after_size(size),
                        _ if ext => ChunkState::Size { size, digits, ext },
                        b';' if digits > 0 => ChunkState::Size {
                            size,
                            digits,
                            ext: true,
                        },
                        b' ' | b'\t' if digits > 0 => ChunkState::Size { size, digits, ext },
                        _ => {
                            let d = (b as char)
                                .to_digit(16)
                                .ok_or_else(|| format!("bad chunk size byte {b:#04x}"))?;
                            if digits >= 15 {
                                return Err("chunk size too large".into());
                            }
                            ChunkState::Size {
                                size: size * 16 + u64::from(d),
                                digits: digits + 1,
                                ext,
                            }
                        }
                    };
                }
                ChunkState::SizeLf { size } => {
                    if input[i] != b'\n' {
                        return Err("chunk size line not ended by CRLF".into());
                    }
                    i += 1;
                    self.state = self.after_size(size);
                }
                ChunkState::DataCr => {
                    self.state = match input[i] {
                        b'\r' => ChunkState::DataLf,
                        b'\n' => Self::new().state,
                        _ => return Err("chunk data not followed by CRLF".into()),
                    };
                    i += 1;
                }
                ChunkState::DataLf => {
                    if input[i] != b'\n' {
                        return Err("chunk data not followed by CRLF".into());
                    }
                    i += 1;
                    self.state = Self::new().state;
                }
                ChunkState::Trailer { line_len, cr } => {
                    let b = input[i];
                    i += 1;
                    self.state = match b {
                        b'\n' if line_len == 0 => ChunkState::Done,
                        b'\n' => ChunkState::Trailer {
                            line_len: 0,
                            cr: false,
                        },
                        b'\r' => ChunkState::Trailer { line_len, cr: true },
                        _ => ChunkState::Trailer {
                            line_len: line_len + 1 + usize::from(cr),
                            cr: false,
                        },
                    };
                }
                ChunkState::Done => return Ok(i),
            }
        }
        Ok(i)
    }

    fn after_size(&self, size: u64) -> ChunkState {
        if size == 0 {
            ChunkState::Trailer {
                line_len: 0,
                cr: false,
            }
        } else {
            ChunkState::Data(size)
        }
    }
}

/// Incremental parser of a `text/event-stream`: lines ending in `\n`,
/// `\r\n` or `\r`… (this parser takes `\n` and `\r\n`, which is what the
/// server writes); `data:` lines of an event are joined with `\n` and the
/// event is dispatched at the empty line that ends it; comments (`:`) and
/// other fields are skipped, the last `id:` is kept.
#[derive(Debug, Default)]
pub struct SseParser {
    /// A line split across inputs.
    partial: Vec<u8>,
    /// The data of the event being read.
    data: Vec<u8>,
    has_data: bool,
    /// The last event id seen (only when [`SseParser::keep_ids`] is set).
    pub last_id: Vec<u8>,
    /// Whether to keep `last_id` (a copy per event).
    pub keep_ids: bool,
    /// Events dispatched.
    pub events: u64,
    /// Comment lines seen (keep-alives, padding).
    pub comments: u64,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Parses `input`, calling `on_event` with each complete event's data.
    pub fn feed(&mut self, mut input: &[u8], on_event: &mut impl FnMut(&[u8])) {
        while let Some(nl) = find_byte(input, b'\n') {
            if self.partial.is_empty() {
                self.line(&input[..nl], on_event);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&input[..nl]);
                self.line(&line, on_event);
                line.clear();
                self.partial = line;
            }
            input = &input[nl + 1..];
        }
        if !input.is_empty() {
            self.partial.extend_from_slice(input);
        }
    }

    fn line(&mut self, line: &[u8], on_event: &mut impl FnMut(&[u8])) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.has_data {
                self.events += 1;
                on_event(&self.data);
                self.data.clear();
                self.has_data = false;
            }
            return;
        }
        if line[0] == b':' {
            self.comments += 1;
            return;
        }
        let (field, value) = match find_byte(line, b':') {
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"id" if self.keep_ids => {
                self.last_id.clear();
                self.last_id.extend_from_slice(value);
            }
            _ => {}
        }
    }
}

/// Position of the first `needle` in `haystack`, eight bytes at a time.
pub fn find_byte(haystack: &[u8], needle: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO.wrapping_mul(u64::from(needle));
    let mut chunks = haystack.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        // Chunks are exactly eight bytes.
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])) ^ pattern;
        let zero = word.wrapping_sub(LO) & !word & HI;
        if zero != 0 {
            return Some(at + (zero.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == needle)
        .map(|p| at + p)
}

/// Position of the first `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    super::protocol::find(haystack, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_bytes_in_any_position() {
        let hay: Vec<u8> = (0..40).map(|i| b'a' + (i % 20) as u8).collect();
        for needle in [b'a', b'e', b'h', b'i', b't'] {
            assert_eq!(
                find_byte(&hay, needle),
                hay.iter().position(|&b| b == needle)
            );
        }
        assert_eq!(find_byte(&hay, b'\n'), None);
        for len in 0..20 {
            let mut v = vec![b'x'; len];
            v.push(b'\n');
            assert_eq!(find_byte(&v, b'\n'), Some(len));
        }
        // A byte just above the needle must not be taken for it.
        assert_eq!(
            find_byte(b"\x0b\x0b\x0b\x0b\x0b\x0b\x0b\x0b\x0b\n", b'\n'),
            Some(9)
        );
        assert_eq!(find_byte(b"\x8a\x0a", b'\n'), Some(1));
    }

    #[test]
    fn parses_heads() {
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n\
              transfer-encoding: chunked\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.status, 200);
        assert!(h.chunked);
        assert!(h.content_type.starts_with("text/event-stream"));
        let h = parse_head(b"HTTP/1.1 202 Accepted\r\nContent-Length: 14\r\n\r\n").unwrap();
        assert_eq!(
            (h.status, h.content_length, h.close),
            (202, Some(14), false)
        );
        assert!(parse_head(b"SSH-2.0\r\n\r\n").is_err());
    }

    fn dechunk(input: &[u8], step: usize) -> (Vec<u8>, bool, usize) {
        let mut d = Chunked::new();
        let mut out = Vec::new();
        let mut used = 0;
        for piece in input.chunks(step) {
            used += d.feed(piece, &mut |p| out.extend_from_slice(p)).unwrap();
            if d.is_done() {
                break;
            }
        }
        (out, d.is_done(), used)
    }

    #[test]
    fn decodes_chunked_bodies_split_anywhere() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        for step in 1..body.len() {
            let (out, done, used) = dechunk(body, step);
            assert_eq!(out, b"hello, world", "step {step}");
            assert!(done);
            assert_eq!(used, body.len() - 4, "step {step}");
        }
        let (_, done, used) = dechunk(body, body.len());
        assert!(done);
        assert_eq!(&body[used..], b"NEXT");
        let (out, done, _) = dechunk(b"A\r\n0123456789\r\n", 3);
        assert_eq!(out, b"0123456789");
        assert!(!done);
        assert!(Chunked::new().feed(b"zz\r\n", &mut |_| {}).is_err());
    }

    fn events(stream: &[u8], step: usize) -> (Vec<String>, SseParser) {
        let mut p = SseParser::new();
        p.keep_ids = true;
        let mut got = Vec::new();
        for piece in stream.chunks(step) {
            p.feed(piece, &mut |e| {
                got.push(String::from_utf8_lossy(e).into_owned())
            });
        }
        (got, p)
    }

    #[test]
    fn splits_event_streams_anywhere() {
        let stream = b":    padding\n\nretry: 2000\n\nid: s.1\ndata: {\"type\":\"connected\"}\n\n\
            :\n\nid: s.2\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\ndata:x\n\n";
        for step in 1..=stream.len() {
            let (got, p) = events(stream, step);
            assert_eq!(
                got,
                vec!["{\"type\":\"connected\"}", "{\"a\":\n1}", "x"],
                "step {step}"
            );
            assert_eq!(p.last_id, b"s.2");
            assert_eq!((p.events, p.comments), (3, 2));
        }
    }
}
