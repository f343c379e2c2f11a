//! One benchmark client connection: TCP, the WebSocket handshake, and the
//! native protocol's `connect` and `subscribe` commands, using Switchboard's
//! own RFC 6455 codec (masked client frames, [`FrameReader`] in the client
//! role). Setup is not on the hot path, so replies are parsed as JSON here;
//! the steady-state read loops live in `subscriber.rs` and `publisher.rs`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use serde_json::Value;
use switchboard::ws::{self, FrameReader, Message, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    next_id: u64,
}

impl Conn {
    /// Opens TCP and completes the WebSocket handshake.
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(addr))
            .await
            .context("TCP connect timed out")?
            .context("TCP connect")?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        let mut conn = Conn {
            stream,
            reader: FrameReader::new(Role::Client, MAX_MESSAGE),
            early: VecDeque::new(),
            next_id: 1,
        };
        tokio::time::timeout(STEP_TIMEOUT, conn.handshake(addr))
            .await
            .context("WebSocket handshake timed out")??;
        Ok(conn)
    }

    async fn handshake(&mut self, addr: SocketAddr) -> anyhow::Result<()> {
        let key = ws::client_key();
        let request = format!(
            "GET /connection/websocket HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
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

    /// The next decoded message.
    async fn next_message(&mut self) -> anyhow::Result<Message> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(m) = self.early.pop_front() {
                return Ok(m);
            }
            let n = self.stream.read(&mut chunk).await.context("reading")?;
            if n == 0 {
                bail!("server closed the connection");
            }
            self.absorb(&chunk[..n])?;
        }
    }

    /// Sends a command (`{"id":…,` prepended to `body`) and returns its reply,
    /// failing on an `error` reply. Pushes received meanwhile are dropped
    /// (nothing is published during setup).
    pub async fn command(&mut self, body: &str) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let text = format!("{{\"id\":{id},{body}");
        self.send_text(text.as_bytes()).await?;
        tokio::time::timeout(STEP_TIMEOUT, self.reply_to(id))
            .await
            .with_context(|| format!("no reply to {text} within {STEP_TIMEOUT:?}"))?
    }

    async fn reply_to(&mut self, id: u64) -> anyhow::Result<Value> {
        loop {
            let text: Bytes = match self.next_message().await? {
                Message::Text(t) => t,
                Message::Ping(p) => {
                    let mut pong = Vec::new();
                    ws::encode_client_pong(&p, &mut pong);
                    self.stream.write_all(&pong).await?;
                    continue;
                }
                Message::Close(c) => bail!("server closed the WebSocket: {c:?}"),
                _ => continue,
            };
            let value: Value = serde_json::from_slice(&text).context("server sent invalid JSON")?;
            if value["type"] == "disconnect" {
                bail!("server disconnected us: {value}");
            }
            if value["id"].as_u64() != Some(id) {
                continue;
            }
            if value["type"] == "error" {
                bail!("server answered with an error: {value}");
            }
            return Ok(value);
        }
    }

    /// Authenticates with `token`.
    pub async fn connect(&mut self, token: &str) -> anyhow::Result<()> {
        let reply = self
            .command(&format!("\"type\":\"connect\",\"token\":\"{token}\"}}"))
            .await?;
        if reply["type"] != "connected" {
            bail!("unexpected reply to connect: {reply}");
        }
        Ok(())
    }

    /// Subscribes to `channel` (a name without characters needing escapes).
    pub async fn subscribe(&mut self, channel: &str) -> anyhow::Result<()> {
        let reply = self
            .command(&format!(
                "\"type\":\"subscribe\",\"channel\":\"{channel}\"}}"
            ))
            .await?;
        if reply["type"] != "subscribed" {
            bail!("unexpected reply to subscribe: {reply}");
        }
        Ok(())
    }
}

/// Opens a connection, authenticates it and subscribes it to `channel`.
pub async fn open_subscriber(addr: SocketAddr, token: &str, channel: &str) -> anyhow::Result<Conn> {
    let mut conn = Conn::open(addr).await?;
    conn.connect(token).await?;
    conn.subscribe(channel).await?;
    Ok(conn)
}

/// A connection token for `user` (no expiry) signed with the server's secret.
pub fn token(secret: &str, user: &str) -> anyhow::Result<String> {
    let claims = switchboard::auth::ConnectionClaims {
        sub: user.to_owned(),
        exp: None,
        info: None,
        channels: None,
        channel: None,
    };
    switchboard::auth::mint_hs256(secret, &claims).context("minting a token")
}
