//! SSE subscribers (Switchboard only): `GET /connection/sse?token=<jwt>`
//! opens a session whose frames arrive as events (`data: <frame JSON>`, see
//! docs/protocol.md, "SSE"); commands go in with `POST /connection/send`
//! on another connection, taken from a small keep-alive [`SendPool`], and
//! their replies come back on the stream.
//!
//! The steady-state read loop mirrors the WebSocket one
//! ([`super::subscriber`]): one task per stream, reads into the thread's
//! shared 64 KiB buffer, the chunked transfer coding and the event stream
//! are decoded in place ([`super::http`]), a publication is recognised by
//! the first bytes of its `data` and counted, never parsed as JSON, and
//! counts go to an atomic once per read. SSE clients answer no pings (the
//! server's keep-alive is a comment, skipped).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::http::{Chunked, HttpConn, SseParser};
use super::protocol::{contains, Endpoint, Kind, Protocol};
use super::subscriber::{Mode, SubStat, READ_BUF};

/// How long one setup step (the stream's head, a command's reply) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Keep-alive connections for `POST /connection/send`, shared by the
/// sessions being set up (a browser, too, sends its commands over a few
/// pooled connections, not one per stream). They close when the pool is
/// dropped.
pub struct SendPool {
    addr: SocketAddr,
    idle: Mutex<Vec<HttpConn>>,
}

impl SendPool {
    /// An empty pool for the server at `addr`.
    pub fn new(addr: SocketAddr) -> Arc<SendPool> {
        Arc::new(SendPool {
            addr,
            idle: Mutex::new(Vec::new()),
        })
    }

    fn take(&self) -> Option<HttpConn> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn give_back(&self, conn: HttpConn) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
    }

    /// `POST /connection/send?session=<session>` with `body`; expects 202.
    pub async fn send(&self, session: &str, token: &str, body: &str) -> anyhow::Result<()> {
        let target = format!("/connection/send?session={session}");
        let auth = format!("Authorization: Bearer {token}\r\n");
        // A pooled connection the server closed meanwhile fails at once:
        // retry once on a fresh one.
        let pooled = self.take();
        let retry = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            None => HttpConn::connect(self.addr).await?,
        };
        let answer = match conn.request("POST", &target, &auth, body.as_bytes()).await {
            Err(_) if retry => {
                conn = HttpConn::connect(self.addr).await?;
                conn.request("POST", &target, &auth, body.as_bytes())
                    .await?
            }
            other => other?,
        };
        let (status, reply) = answer;
        if status != 202 {
            bail!(
                "POST /connection/send answered {status}: {}",
                String::from_utf8_lossy(&reply)
            );
        }
        self.give_back(conn);
        Ok(())
    }
}

/// How the event stream's body is framed.
#[derive(Debug)]
enum Framing {
    /// `Transfer-Encoding: chunked` (what an HTTP/1.1 server streams with).
    Chunked(Chunked),
    /// No length: the body runs until the connection closes.
    UntilClose,
}

/// An open SSE session.
pub struct SseConn {
    /// The socket carrying the event stream.
    pub stream: TcpStream,
    framing: Framing,
    parser: SseParser,
    /// Events decoded during setup but not consumed yet (their data).
    pub early: VecDeque<Vec<u8>>,
    /// The stream ended (the last chunk arrived).
    ended: bool,
    /// The session id from the `connected` reply.
    pub session: String,
    next_id: u64,
}

impl SseConn {
    /// Opens the event stream with `token` and reads the `connected` reply.
    pub async fn open(endpoint: &Endpoint, token: &str) -> anyhow::Result<SseConn> {
        if endpoint.protocol != Protocol::Switchboard {
            bail!("SSE is a Switchboard transport");
        }
        let mut http = HttpConn::connect(endpoint.addr).await?;
        http.send_request(
            "GET",
            &format!("/connection/sse?token={token}"),
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n",
            b"",
        )
        .await?;
        let head = tokio::time::timeout(STEP_TIMEOUT, http.read_head())
            .await
            .context("no answer to GET /connection/sse")??;
        if head.status != 200 {
            let body = match head.content_length {
                Some(_) => http.read_body(&head).await.unwrap_or_default(),
                None => Vec::new(),
            };
            bail!(
                "GET /connection/sse answered {}: {}",
                head.status,
                String::from_utf8_lossy(&body)
            );
        }
        if !head.content_type.starts_with("text/event-stream") {
            bail!(
                "GET /connection/sse answered {:?}, not an event stream",
                head.content_type
            );
        }
        let framing = match (head.chunked, head.content_length) {
            (true, _) => Framing::Chunked(Chunked::new()),
            (false, None) => Framing::UntilClose,
            (false, Some(n)) => bail!("GET /connection/sse answered a body of fixed length {n}"),
        };
        let rest = std::mem::take(&mut http.buf);
        let mut conn = SseConn {
            stream: http.stream,
            framing,
            parser: SseParser::new(),
            early: VecDeque::new(),
            ended: false,
            session: String::new(),
            next_id: 1,
        };
        conn.absorb(&rest)?;
        let first = tokio::time::timeout(STEP_TIMEOUT, conn.next_event())
            .await
            .context("no connected event on the SSE stream")??;
        if !contains(&first, br#""type":"connected""#) {
            bail!(
                "the first SSE event is not the connected reply: {}",
                String::from_utf8_lossy(&first)
            );
        }
        conn.session =
            string_field(&first, "session").context("the connected reply has no session")?;
        Ok(conn)
    }

    /// Decodes `bytes` into [`SseConn::early`].
    fn absorb(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let SseConn {
            framing,
            parser,
            early,
            ended,
            ..
        } = self;
        let mut on_event = |e: &[u8]| early.push_back(e.to_vec());
        match framing {
            Framing::Chunked(chunks) => {
                chunks
                    .feed(bytes, &mut |part| parser.feed(part, &mut on_event))
                    .map_err(|e| anyhow::anyhow!("server broke the chunked coding: {e}"))?;
                *ended |= chunks.is_done();
            }
            Framing::UntilClose => parser.feed(bytes, &mut on_event),
        }
        Ok(())
    }

    /// The next event's data (setup only).
    async fn next_event(&mut self) -> anyhow::Result<Vec<u8>> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(e) = self.early.pop_front() {
                if Protocol::Switchboard.classify(&e) == Kind::Disconnect {
                    bail!("server disconnected us: {}", String::from_utf8_lossy(&e));
                }
                return Ok(e);
            }
            if self.ended {
                bail!("the server ended the event stream");
            }
            let n = self.stream.read(&mut chunk).await.context("reading")?;
            if n == 0 {
                bail!("server closed the SSE connection");
            }
            self.absorb(&chunk[..n])?;
        }
    }

    /// Sends a command built by `build(id)` through `pool` and returns its
    /// reply from the stream, failing on an error reply.
    pub async fn command(
        &mut self,
        pool: &SendPool,
        token: &str,
        build: impl FnOnce(u64) -> String,
    ) -> anyhow::Result<Vec<u8>> {
        self.next_id += 1;
        let id = self.next_id;
        let text = build(id);
        pool.send(&self.session, token, &text).await?;
        let wait = async {
            loop {
                let e = self.next_event().await?;
                if Protocol::Switchboard.reply_id(&e) != Some(id) {
                    continue;
                }
                if Protocol::Switchboard.classify(&e) != (Kind::Reply { ok: true }) {
                    bail!(
                        "server answered with an error: {}",
                        String::from_utf8_lossy(&e)
                    );
                }
                return Ok(e);
            }
        };
        tokio::time::timeout(STEP_TIMEOUT, wait)
            .await
            .with_context(|| format!("no reply to {text} within {STEP_TIMEOUT:?}"))?
    }

    /// Subscribes to `channel` (a name without characters needing escapes).
    pub async fn subscribe(
        &mut self,
        pool: &SendPool,
        token: &str,
        channel: &str,
    ) -> anyhow::Result<()> {
        let reply = self
            .command(pool, token, |id| {
                Protocol::Switchboard.subscribe(id, channel)
            })
            .await?;
        if !contains(&reply, br#""type":"subscribed""#) {
            bail!(
                "unexpected reply to subscribe: {}",
                String::from_utf8_lossy(&reply)
            );
        }
        Ok(())
    }
}

/// The value of `"name":"…"` in a frame (a string without escapes).
pub fn string_field(frame: &[u8], name: &str) -> Option<String> {
    let key = format!("\"{name}\":\"");
    let start = super::protocol::find(frame, key.as_bytes())? + key.len();
    let len = frame[start..].iter().position(|&b| b == b'"')?;
    Some(String::from_utf8_lossy(&frame[start..start + len]).into_owned())
}

/// What one stream's loop has seen since its last flush.
struct Seen {
    publications: u64,
    disconnect: Option<String>,
}

impl Seen {
    fn event(&mut self, data: &[u8], mode: &Mode, now_ns: u64) {
        match Protocol::Switchboard.classify(data) {
            Kind::Publication => {
                self.publications += 1;
                if let Mode::Latency(rec) = mode {
                    rec.record(data, now_ns);
                }
            }
            Kind::Disconnect => {
                self.disconnect = Some(String::from_utf8_lossy(data).into_owned());
            }
            Kind::Reply { .. } | Kind::Ping | Kind::Other => {}
        }
    }
}

/// Reads the stream until it ends, counting publications into `stat`.
pub async fn read_loop(mut conn: SseConn, stat: &SubStat, mode: &Mode, progress: Option<&Notify>) {
    let mut seen = Seen {
        publications: 0,
        disconnect: None,
    };
    for e in std::mem::take(&mut conn.early) {
        seen.event(&e, mode, 0);
    }
    let mut done: Option<String> = None;
    loop {
        if seen.publications > 0 {
            stat.count
                .fetch_add(seen.publications, std::sync::atomic::Ordering::Relaxed);
            stat.reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            seen.publications = 0;
            if let Some(p) = progress {
                p.notify_one();
            }
        }
        if conn.ended && done.is_none() {
            done = Some("the server ended the event stream".to_owned());
        }
        if let Some(why) = done.take() {
            return stat.end(seen.disconnect.take().unwrap_or(why));
        }
        if let Err(e) = conn.stream.readable().await {
            return stat.end(format!("read error: {e}"));
        }
        let read = READ_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            let n = match conn.stream.try_read(&mut buf[..]) {
                Ok(0) => return Err("server closed the SSE connection".to_owned()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(format!("read error: {e}")),
            };
            let now_ns = match mode {
                Mode::Latency(rec) => rec.now_ns(),
                Mode::Count => 0,
            };
            let SseConn {
                framing,
                parser,
                ended,
                ..
            } = &mut conn;
            let mut on_event = |e: &[u8]| seen.event(e, mode, now_ns);
            match framing {
                Framing::Chunked(chunks) => {
                    chunks
                        .feed(&buf[..n], &mut |part| parser.feed(part, &mut on_event))
                        .map_err(|e| format!("server broke the chunked coding: {e}"))?;
                    *ended |= chunks.is_done();
                }
                Framing::UntilClose => parser.feed(&buf[..n], &mut on_event),
            }
            Ok(())
        });
        if let Err(why) = read {
            done = Some(why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_session_from_the_connected_reply() {
        let reply = br#"{"id":0,"type":"connected","client":"0e01","user":"u","session":"2Qz-cr_9","ping":25}"#;
        assert_eq!(string_field(reply, "session").as_deref(), Some("2Qz-cr_9"));
        assert_eq!(string_field(reply, "nothing"), None);
    }
}
