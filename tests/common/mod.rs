//! Test harness: real servers on port 0, real WebSocket and HTTP clients.
//!
//! [`TestServer`] runs a node in-process (same code path as the binary's
//! `serve`); [`Process`] runs the real binary for what needs a process
//! (signals, `kill -9`, dev mode). [`Ws`] is a tokio-tungstenite client
//! (an independent WebSocket implementation) with protocol helpers.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use switchboard::auth::{mint_hs256, ConnectionClaims};
use switchboard::config::{AuthConfig, Config, Mode};
use switchboard::server::Running;
use switchboard::stream::RawJson;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-that-is-long-enough-000000";
pub const API_KEY: &str = "test-api-key";
/// How long a test waits for a frame that should come.
pub const WAIT: Duration = Duration::from_secs(5);

/// A test configuration: production mode, known secrets, port 0. With
/// `SWITCHBOARD_TEST_BROKER` set (a `redis://` URL), every test node uses
/// that broker: `./scripts/test` runs the core and transport suites once
/// with each broker.
pub fn config(data_dir: &Path) -> Config {
    let broker = std::env::var("SWITCHBOARD_TEST_BROKER").unwrap_or_else(|_| "memory".into());
    Config {
        broker,
        // Each test node its own keys, as the memory broker would be.
        redis_prefix: format!("t{}:", switchboard::random::token(6)),
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_path_buf(),
        mode: Mode::Production,
        auth: AuthConfig {
            hmac_secret: Some(SECRET.into()),
            api_key: Some(API_KEY.into()),
            ..AuthConfig::default()
        },
        shutdown_timeout: Duration::from_secs(3),
        ..Config::default()
    }
}

/// A node running in this process.
pub struct TestServer {
    pub running: Running,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A server with the default test config.
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// A server with a tweaked config and a fresh data dir.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = TestServer::start_in(tmp.path(), tweak).await;
        s._tmp = Some(tmp);
        s
    }

    /// A server on an existing data dir (for restarts).
    pub async fn start_in(data_dir: &Path, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let mut c = config(data_dir);
        tweak(&mut c);
        let running = switchboard::server::start(c).await.expect("server starts");
        let addr = running.local_addr();
        TestServer {
            running,
            addr,
            data_dir: data_dir.to_path_buf(),
            _tmp: None,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/connection/websocket", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A connected client for `user`.
    pub async fn client(&self, user: &str) -> Ws {
        let mut ws = Ws::open(&self.ws_url()).await;
        ws.connect(&token(user)).await;
        ws
    }

    /// Calls the server API; returns (HTTP status, body).
    pub async fn api(&self, method: &str, body: Value) -> (u16, Value) {
        api_call(self.addr, method, body, Some(API_KEY)).await
    }

    /// Publishes through the server API, asserting success; returns the
    /// position.
    pub async fn publish(&self, channel: &str, data: Value) -> Value {
        let (status, body) = self
            .api("publish", json!({"channel": channel, "data": data}))
            .await;
        assert_eq!(status, 200, "API publish answered {body}");
        body["result"]["position"].clone()
    }

    /// Graceful stop, keeping the data dir (returns the temp dir guard).
    pub async fn stop(self) -> Option<tempfile::TempDir> {
        self.running.shutdown().await;
        self._tmp
    }
}

/// Calls `/api/<method>` with an optional API key.
pub async fn api_call(
    addr: SocketAddr,
    method: &str,
    body: Value,
    key: Option<&str>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}/api/{method}"))
        .json(&body);
    if let Some(key) = key {
        req = req.header("Authorization", format!("apikey {key}"));
    }
    let resp = req.send().await.expect("API request");
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// A connection token for `user` with no expiry.
pub fn token(user: &str) -> String {
    token_with(user, None, None, None)
}

/// A connection token with optional expiry (unix secs), info and channels.
pub fn token_with(
    user: &str,
    exp: Option<u64>,
    info: Option<Value>,
    channels: Option<Vec<&str>>,
) -> String {
    let claims = ConnectionClaims {
        sub: user.into(),
        exp,
        info: info.map(|v| RawJson::from_string(v.to_string()).unwrap()),
        channels: channels.map(|c| c.into_iter().map(String::from).collect()),
        channel: None,
    };
    mint_hs256(SECRET, &claims).unwrap()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    switchboard::stream::now_millis() / 1000
}

/// A WebSocket client speaking the native protocol.
pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Frames received while waiting for something else.
    pub backlog: std::collections::VecDeque<Value>,
    pub client_id: String,
}

impl Ws {
    pub async fn open(url: &str) -> Ws {
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket opens");
        Ws {
            stream,
            next_id: 1,
            backlog: Default::default(),
            client_id: String::new(),
        }
    }

    /// Sends a raw text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::text(text)).await.expect("send");
    }

    /// Sends a command (an `id` is added) and returns its id.
    pub async fn send(&mut self, mut command: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = json!(id);
        self.send_text(&command.to_string()).await;
        id
    }

    /// The next JSON frame (server pings are answered and skipped), or
    /// `None` when the connection closed. Panics after [`WAIT`].
    pub async fn recv(&mut self) -> Option<Value> {
        if let Some(v) = self.backlog.pop_front() {
            return Some(v);
        }
        self.recv_wire(WAIT).await.expect("a frame within the wait")
    }

    /// Like `recv` but `Err(())` on timeout instead of panicking.
    pub async fn recv_wire(&mut self, wait: Duration) -> Result<Option<Value>, ()> {
        // One deadline for the whole wait: answered pings do not extend it.
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return Err(()),
                Ok(None) | Ok(Some(Err(_))) => return Ok(None),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).expect("server sends JSON");
                    if v["type"] == "ping" {
                        let _ = self.stream.send(Message::text(r#"{"type":"pong"}"#)).await;
                        continue;
                    }
                    return Ok(Some(v));
                }
                Message::Close(_) => return Ok(None),
                _ => continue,
            }
        }
    }

    /// Waits for the reply with `id`, keeping other frames in the backlog.
    pub async fn reply(&mut self, id: u64) -> Value {
        if let Some(at) = self.backlog.iter().position(|v| v["id"] == json!(id)) {
            return self.backlog.remove(at).unwrap();
        }
        loop {
            let v = self
                .recv_wire(WAIT)
                .await
                .expect("reply within the wait")
                .expect("connection open");
            if v["id"] == json!(id) {
                return v;
            }
            self.backlog.push_back(v);
        }
    }

    /// Sends a command and waits for its reply.
    pub async fn call(&mut self, command: Value) -> Value {
        let id = self.send(command).await;
        self.reply(id).await
    }

    /// Waits for the next push of `kind` (e.g. "publication"), keeping others.
    pub async fn push(&mut self, kind: &str) -> Value {
        if let Some(at) = self
            .backlog
            .iter()
            .position(|v| v["type"] == kind && v.get("id").is_none())
        {
            return self.backlog.remove(at).unwrap();
        }
        loop {
            let v = self
                .recv_wire(WAIT)
                .await
                .expect("push within the wait")
                .expect("connection open");
            if v["type"] == kind && v.get("id").is_none() {
                return v;
            }
            self.backlog.push_back(v);
        }
    }

    /// Asserts nothing arrives for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        assert!(
            self.backlog.is_empty(),
            "unexpected backlog: {:?}",
            self.backlog
        );
        if let Ok(Some(v)) = self.recv_wire(wait).await {
            panic!("expected silence, got {v}");
        }
    }

    /// Connects with `token`, asserting success.
    pub async fn connect(&mut self, token: &str) -> Value {
        let reply = self.call(json!({"type": "connect", "token": token})).await;
        assert_eq!(reply["type"], "connected", "{reply}");
        self.client_id = reply["client"].as_str().unwrap().to_string();
        reply
    }

    /// Subscribes, asserting success; returns the `subscribed` reply.
    pub async fn subscribe(&mut self, channel: &str) -> Value {
        let reply = self
            .call(json!({"type": "subscribe", "channel": channel}))
            .await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        reply
    }

    /// Publishes, asserting success; returns the `published` reply.
    pub async fn publish(&mut self, channel: &str, data: Value) -> Value {
        let reply = self
            .call(json!({"type": "publish", "channel": channel, "data": data}))
            .await;
        assert_eq!(reply["type"], "published", "{reply}");
        reply
    }

    /// Reads until the server closes; returns the `disconnect` push and the
    /// close frame's code.
    pub async fn closed(&mut self) -> (Option<Value>, Option<u16>) {
        let mut disconnect = self
            .backlog
            .iter()
            .find(|v| v["type"] == "disconnect")
            .cloned();
        loop {
            match tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("close within the wait")
            {
                None | Some(Err(_)) => return (disconnect, None),
                Some(Ok(Message::Close(frame))) => {
                    return (disconnect, frame.map(|f| u16::from(f.code)))
                }
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == "disconnect" {
                        disconnect = Some(v);
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    }
}

/// The real `switchboard` binary, started as a child process.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Process {
    /// Starts `switchboard serve` on a free port with `env` variables set
    /// (production secrets unless `env` says otherwise) and waits for /health.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Process {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        cmd.args(["serve", "--listen", &addr.to_string(), "--data-dir"])
            .arg(data_dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SWITCHBOARD_AUTH_HMAC_SECRET", SECRET)
            .env("SWITCHBOARD_AUTH_API_KEY", API_KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("binary starts");
        let p = Process { child, addr };
        p.wait_healthy();
        p
    }

    fn wait_healthy(&self) {
        for _ in 0..200 {
            if std::net::TcpStream::connect(self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("server did not come up on {}", self.addr);
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/connection/websocket", self.addr)
    }

    /// Sends a signal (e.g. "TERM", "KILL") with the `kill` command.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("process did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A memory namespace with history (100) and client publishing, nothing else.
pub fn namespace(
    tweak: impl FnOnce(&mut switchboard::config::NamespaceConfig),
) -> switchboard::config::NamespaceConfig {
    let mut ns = switchboard::config::NamespaceConfig {
        history_size: 100,
        client_publish: true,
        ..Default::default()
    };
    tweak(&mut ns);
    ns
}

/// The sorted keys of a JSON object (to assert a frame's exact shape).
pub fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

/// Asserts the connection is up: a client `ping` gets its `pong`.
pub async fn assert_alive(ws: &mut Ws) {
    let id = ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.reply(id).await, json!({"id": id, "type": "pong"}));
}
pub mod sse;
