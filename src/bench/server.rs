//! The server under test, a child process pinned to one core with
//! `taskset`: either this same binary run as `serve`, configured entirely
//! through `SWITCHBOARD_*` variables (production mode, a `bench` namespace),
//! or a peer server (see [`super::peer`]). Both answer `GET /health` and
//! count their clients in `GET /metrics`. The [`Server`] guard kills it and
//! removes its data directory when dropped, so an error anywhere in the
//! benchmark never leaves a server behind.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::peer::{Peer, SocketIoPeer};
use super::protocol::Endpoint;

/// How long the server may take to answer `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How the server is started.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The CPU the server is pinned to (`taskset -c`).
    pub cpu: usize,
    /// Outbound queue bound per connection, e.g. `8MiB`.
    pub queue_max_size: String,
    /// History size of the `bench` namespace (memory only).
    pub history_size: usize,
    /// The Socket.IO peer, when it is to be measured.
    pub socketio: Option<SocketIoPeer>,
    /// More `SWITCHBOARD_*` settings (e.g. the broker and store of a
    /// cluster node), set after the benchmark's own.
    pub extra_env: Vec<(String, String)>,
    /// The HMAC secret and API key to use instead of fresh random ones
    /// (every node of a cluster needs the same).
    pub secrets: Option<(String, String)>,
}

/// A running server child process; killed on drop.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Which server it is.
    pub peer: Peer,
    /// Its HMAC secret, for minting connection tokens (Switchboard only).
    secret: Option<Arc<str>>,
    /// Its server API key (Switchboard only).
    api_key: Option<String>,
    /// The CPU it is pinned to.
    pub cpu: usize,
    data_dir: PathBuf,
}

impl Server {
    /// Starts `peer` and waits until `/health` answers 200.
    pub fn start(peer: Peer, opts: &ServerOptions) -> anyhow::Result<Server> {
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let data_dir =
            std::env::temp_dir().join(format!("switchboard-bench-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let log_path = data_dir.join("server.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let (mut cmd, secret, api_key) = match peer {
            Peer::Switchboard => {
                let (secret, api_key) = opts.secrets.clone().unwrap_or_else(random_secrets);
                (
                    switchboard_command(opts, addr, &data_dir, &secret, &api_key)?,
                    Some(secret.into()),
                    Some(api_key),
                )
            }
            Peer::SocketIo => {
                let setup = opts
                    .socketio
                    .as_ref()
                    .context("the Socket.IO peer was not prepared")?;
                (setup.command(opts.cpu, port), None, None)
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow::anyhow!(
                "`taskset` (util-linux) is needed to pin the server to one core and was not found"
            ),
            _ => anyhow::Error::new(e).context(format!("starting {}", peer.name())),
        })?;
        let mut server = Server {
            child,
            addr,
            peer,
            secret,
            api_key,
            cpu: opts.cpu,
            data_dir,
        };
        server.wait_healthy()?;
        Ok(server)
    }

    /// Where and how clients connect.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            addr: self.addr,
            protocol: self.peer.protocol(),
            secret: self.secret.clone(),
        }
    }

    /// The server's process id (taskset execs the binary, so it keeps this pid).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for the server")? {
                bail!(
                    "the server exited during start ({status}); its log:\n{}",
                    self.log_tail()
                );
            }
            if matches!(http_get(self.addr, "/health"), Ok((200, _))) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the server did not answer /health within {START_TIMEOUT:?}; its log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fails (with the server's log) if the server process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait().context("checking the server")? {
            bail!("the server died ({status}); its log:\n{}", self.log_tail());
        }
        Ok(())
    }

    /// A gauge or counter from `/metrics`, e.g. `switchboard_connections`.
    pub fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let (status, body) = http_get(self.addr, "/metrics")?;
        if status != 200 {
            bail!("GET /metrics answered {status}");
        }
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no {name} in /metrics"))
    }

    /// Disconnects every session of `user` with `POST /api/disconnect`
    /// (Switchboard only): attached transports get the `disconnect` and the
    /// sessions end at once, where a dropped socket would only detach its
    /// session for `client.session_grace` (still subscribed, still fed).
    /// Returns how many sessions the server disconnected.
    pub fn disconnect_user(&self, user: &str) -> anyhow::Result<u64> {
        let key = self
            .api_key
            .as_deref()
            .context("this server has no API to disconnect users")?;
        let body = format!(r#"{{"user":"{user}"}}"#);
        let (status, answer) = http_post(self.addr, "/api/disconnect", key, &body)?;
        if status != 200 {
            bail!("POST /api/disconnect answered {status}: {answer}");
        }
        serde_json::from_str::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v["result"]["disconnected"].as_u64())
            .with_context(|| format!("unexpected answer to /api/disconnect: {answer}"))
    }

    /// The logged-in connections the server counts.
    pub fn connections(&self) -> anyhow::Result<u64> {
        Ok(self.metric(self.peer.connections_metric())? as u64)
    }

    /// Waits (up to `timeout`) until the server counts at most `n`
    /// logged-in connections; returns the last count seen.
    pub fn wait_connections_at_most(&self, n: u64, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.connections()?;
            if now <= n || Instant::now() > deadline {
                return Ok(now);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the server's log.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// `taskset -c <cpu> switchboard serve …` with the benchmark's settings.
fn switchboard_command(
    opts: &ServerOptions,
    addr: SocketAddr,
    data_dir: &std::path::Path,
    secret: &str,
    api_key: &str,
) -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("locating the switchboard binary")?;
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(opts.cpu.to_string()).arg(&exe);
    cmd.args(["serve", "--listen", &addr.to_string(), "--data-dir"]);
    cmd.arg(data_dir);
    // The user's own SWITCHBOARD_* settings (a config file, other
    // namespaces) must not leak into the measured server.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SWITCHBOARD_") {
            cmd.env_remove(name);
        }
    }
    let ns = "SWITCHBOARD_NAMESPACES_BENCH_";
    cmd.env("SWITCHBOARD_LOG", "warn")
        .env("SWITCHBOARD_WORKERS", "1")
        .env("SWITCHBOARD_AUTH_HMAC_SECRET", secret)
        .env("SWITCHBOARD_AUTH_API_KEY", api_key)
        .env("SWITCHBOARD_CLIENT_QUEUE_MAX_SIZE", &opts.queue_max_size)
        .env(format!("{ns}CLIENT_PUBLISH"), "true")
        .env(format!("{ns}HISTORY_SIZE"), opts.history_size.to_string())
        .env(format!("{ns}PERSIST"), "false")
        .env(format!("{ns}PRESENCE"), "false")
        .env(format!("{ns}JOIN_LEAVE"), "false");
    for (name, value) in &opts.extra_env {
        cmd.env(name, value);
    }
    Ok(cmd)
}

/// A fresh HMAC secret and server API key.
pub fn random_secrets() -> (String, String) {
    let secret = format!(
        "{}{}",
        switchboard::ws::client_key(),
        switchboard::ws::client_key()
    );
    (secret, switchboard::ws::client_key())
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr().context("finding a free port")?.port())
}

/// A minimal blocking `GET` over HTTP/1.1; returns (status, body).
fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    http_exchange(addr, path, &request)
}

/// A minimal blocking server API call; returns (status, body).
fn http_post(addr: SocketAddr, path: &str, key: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: apikey {key}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http_exchange(addr, path, &request)
}

/// Writes `request`, reads the response to the end (the request asks the
/// server to close; the body is not chunked for these small answers).
fn http_exchange(addr: SocketAddr, path: &str, request: &str) -> anyhow::Result<(u16, String)> {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad HTTP response to {path}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}
