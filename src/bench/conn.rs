//! One benchmark client connection: TCP, the WebSocket handshake, and the
//! setup commands (log in, subscribe) of either protocol (see
//! [`super::protocol`]), using Switchboard's own RFC 6455 codec (masked
//! client frames, [`FrameReader`] in the client role). The steady-state read
//! loops live in `subscriber.rs` and `publisher.rs`.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use switchboard::ws::{self, FrameReader, Message, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::protocol::{contains, Endpoint, Kind, Protocol};

/// Largest message a benchmark client accepts.
pub const MAX_MESSAGE: usize = 1 << 20;
/// How long one setup step (handshake, a command's reply) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// An open WebSocket connection in the client role.
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// The decoder (holds partial frames between reads).
    pub reader: FrameReader,
    /// Messages decoded during setup but not consumed yet.
    pub early: VecDeque<Message>,
    /// The protocol spoken.
    pub protocol: Protocol,
    next_id: u64,
}

impl Conn {
    /// Opens TCP and completes the WebSocket handshake.
    pub async fn open(endpoint: &Endpoint) -> anyhow::Result<Conn> {
        let addr = endpoint.addr;
        let stream = tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(addr))
            .await
            .context("TCP connect timed out")?
            .context("TCP connect")?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        let mut conn = Conn {
            stream,
            reader: FrameReader::new(Role::Client, MAX_MESSAGE),
            early: VecDeque::new(),
            protocol: endpoint.protocol,
            next_id: 1,
        };
        tokio::time::timeout(STEP_TIMEOUT, conn.handshake(endpoint))
            .await
            .context("WebSocket handshake timed out")??;
        Ok(conn)
    }

    async fn handshake(&mut self, endpoint: &Endpoint) -> anyhow::Result<()> {
        let key = ws::client_key();
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            self.protocol.path(),
            endpoint.addr
        );
        self.stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::with_capacity(256);
        let mut chunk = [0u8; 512];
        let end = loop {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("server closed the connection during the WebSocket handshake");
            }
            response.extend_from_slice(&chunk[..n]);
            if let Some(at) = response.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if response.len() > 16 * 1024 {
                bail!("WebSocket handshake response too long");
            }
        };
        let head = String::from_utf8_lossy(&response[..end]);
        if !head.starts_with("HTTP/1.1 101") {
            let first = head.lines().next().unwrap_or_default();
            bail!("WebSocket handshake refused: {first}");
        }
        let accept = ws::accept_key(key.as_bytes());
        let accepted = head.lines().any(|l| {
            l.split_once(':').is_some_and(|(name, value)| {
                name.eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == accept
            })
        });
        if !accepted {
            bail!("WebSocket handshake: wrong or missing Sec-WebSocket-Accept");
        }
        self.absorb(&response[end..])
    }

    /// Decodes `bytes` into [`Conn::early`].
    fn absorb(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let early = &mut self.early;
        self.reader
            .feed(bytes, &mut |m| {
                early.push_back(m);
                true
            })
            .context("server broke WebSocket framing")
    }

    /// Sends one text frame.
    pub async fn send_text(&mut self, text: &[u8]) -> anyhow::Result<()> {
        let mut frame = Vec::with_capacity(text.len() + 14);
        ws::encode_client_text(text, &mut frame);
        self.stream
            .write_all(&frame)
            .await
            .context("writing a frame")
    }

    /// The next text message, answering heartbeats on the way.
    async fn next_text(&mut self) -> anyhow::Result<Bytes> {
        let mut chunk = [0u8; 4096];
        loop {
            let Some(m) = self.early.pop_front() else {
                let n = self.stream.read(&mut chunk).await.context("reading")?;
                if n == 0 {
                    bail!("server closed the connection");
                }
                self.absorb(&chunk[..n])?;
                continue;
            };
            match m {
                Message::Text(t) if self.protocol.classify(&t) == Kind::Ping => {
                    let pong = self.protocol.pong();
                    self.send_text(pong).await?;
                }
                Message::Text(t) if self.protocol.classify(&t) == Kind::Disconnect => {
                    bail!("server disconnected us: {}", String::from_utf8_lossy(&t))
                }
                Message::Text(t) => return Ok(t),
                Message::Ping(p) => {
                    let mut pong = Vec::new();
                    ws::encode_client_pong(&p, &mut pong);
                    self.stream.write_all(&pong).await?;
                }
                Message::Close(c) => bail!("server closed the WebSocket: {c:?}"),
                _ => {}
            }
        }
    }

    /// The first text message starting with `prefix` (others are dropped:
    /// nothing is published during setup), within [`STEP_TIMEOUT`].
    async fn expect(&mut self, prefix: &[u8], what: &str) -> anyhow::Result<Bytes> {
        let wait = async {
            loop {
                let t = self.next_text().await?;
                if t.starts_with(prefix) {
                    return Ok::<_, anyhow::Error>(t);
                }
            }
        };
        tokio::time::timeout(STEP_TIMEOUT, wait)
            .await
            .with_context(|| format!("no {what} within {STEP_TIMEOUT:?}"))?
    }

    /// Sends a command built by `build(id)` and returns its reply, failing
    /// on an error reply.
    async fn command(&mut self, build: impl FnOnce(u64) -> String) -> anyhow::Result<Bytes> {
        let id = self.next_id;
        self.next_id += 1;
        let text = build(id);
        self.send_text(text.as_bytes()).await?;
        let protocol = self.protocol;
        let wait = async {
            loop {
                let t = self.next_text().await?;
                if protocol.reply_id(&t) != Some(id) {
                    continue;
                }
                if protocol.classify(&t) != (Kind::Reply { ok: true }) {
                    bail!(
                        "server answered with an error: {}",
                        String::from_utf8_lossy(&t)
                    );
                }
                return Ok(t);
            }
        };
        tokio::time::timeout(STEP_TIMEOUT, wait)
            .await
            .with_context(|| format!("no reply to {text} within {STEP_TIMEOUT:?}"))?
    }

    /// Starts the session: Switchboard's `connect` with `token`; Socket.IO's
    /// open packet, then joining the main namespace.
    pub async fn login(&mut self, token: &str) -> anyhow::Result<()> {
        match self.protocol {
            Protocol::Switchboard => {
                let reply = self
                    .command(|id| format!(r#"{{"id":{id},"type":"connect","token":"{token}"}}"#))
                    .await?;
                if !contains(&reply, br#""type":"connected""#) {
                    bail!(
                        "unexpected reply to connect: {}",
                        String::from_utf8_lossy(&reply)
                    );
                }
            }
            Protocol::SocketIo => {
                self.expect(b"0{", "Engine.IO open packet").await?;
                self.send_text(b"40").await?;
                self.expect(b"40", "Socket.IO namespace connect").await?;
            }
        }
        Ok(())
    }

    /// Subscribes to `channel` (a name without characters needing escapes).
    pub async fn subscribe(&mut self, channel: &str) -> anyhow::Result<()> {
        let protocol = self.protocol;
        let reply = self.command(|id| protocol.subscribe(id, channel)).await?;
        if protocol == Protocol::Switchboard && !contains(&reply, br#""type":"subscribed""#) {
            bail!(
                "unexpected reply to subscribe: {}",
                String::from_utf8_lossy(&reply)
            );
        }
        Ok(())
    }
}

/// Opens a connection, logs it in and subscribes it to `channel`.
pub async fn open_subscriber(
    endpoint: &Endpoint,
    token: &str,
    channel: &str,
) -> anyhow::Result<Conn> {
    let mut conn = Conn::open(endpoint).await?;
    conn.login(token).await?;
    conn.subscribe(channel).await?;
    Ok(conn)
}
