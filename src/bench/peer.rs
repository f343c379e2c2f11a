//! The servers the benchmark can measure: Switchboard itself and, for a
//! side-by-side comparison, what users would pick instead — a Socket.IO 4
//! server on Node (`bench/peers/socketio/server.js`: clients join a room,
//! the server broadcasts to it). Each runs as a child process pinned to the
//! same core with `taskset`; this file knows how to find and start the peer.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::protocol::Protocol;

/// Which servers `--peer` selects.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerChoice {
    /// Switchboard (this binary).
    Switchboard,
    /// Socket.IO 4 on Node (bench/peers/socketio).
    Socketio,
    /// Both, one after the other for each scenario.
    All,
}

impl PeerChoice {
    /// The servers selected, Switchboard first.
    pub fn peers(self) -> Vec<Peer> {
        match self {
            PeerChoice::Switchboard => vec![Peer::Switchboard],
            PeerChoice::Socketio => vec![Peer::SocketIo],
            PeerChoice::All => vec![Peer::Switchboard, Peer::SocketIo],
        }
    }
}

/// A server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// This binary, `switchboard serve`.
    Switchboard,
    /// `node server.js` in bench/peers/socketio.
    SocketIo,
}

impl Peer {
    /// Display name.
    pub fn name(self) -> &'static str {
        self.protocol().name()
    }

    /// Key in the JSON results.
    pub fn key(self) -> &'static str {
        match self {
            Peer::Switchboard => "switchboard",
            Peer::SocketIo => "socketio",
        }
    }

    /// The protocol its clients speak.
    pub fn protocol(self) -> Protocol {
        match self {
            Peer::Switchboard => Protocol::Switchboard,
            Peer::SocketIo => Protocol::SocketIo,
        }
    }

    /// The `/metrics` line counting its connected (logged-in) clients.
    pub fn connections_metric(self) -> &'static str {
        match self {
            Peer::Switchboard => "switchboard_connections",
            Peer::SocketIo => "socketio_connections",
        }
    }
}

/// The Socket.IO peer, ready to start.
#[derive(Clone, Debug)]
pub struct SocketIoPeer {
    /// bench/peers/socketio.
    pub dir: PathBuf,
    /// `node --version`.
    pub node_version: String,
    /// The installed socket.io package's version.
    pub socketio_version: String,
}

impl SocketIoPeer {
    /// Finds the peer's folder (`dir`, else `bench/peers/socketio` under the
    /// current directory, else under the source tree this binary was built
    /// from), checks that `node` runs and installs the peer's packages with
    /// `npm ci` if `node_modules` is missing.
    pub fn prepare(dir: Option<&Path>) -> anyhow::Result<SocketIoPeer> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => default_dir().context(
                "cannot find bench/peers/socketio (run from the repository's root or pass \
                 --socketio-dir)",
            )?,
        };
        if !dir.join("server.js").is_file() {
            bail!("{} has no server.js", dir.display());
        }
        let node_version = match Command::new("node").arg("--version").output() {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
            _ => bail!(
                "`node` is needed for --peer socketio and does not run: install Node.js 18 or \
                 later (e.g. `apt-get install nodejs npm`)"
            ),
        };
        if !dir.join("node_modules/socket.io/package.json").is_file() {
            install(&dir)?;
        }
        let manifest = std::fs::read_to_string(dir.join("node_modules/socket.io/package.json"))
            .context("reading the installed socket.io package.json")?;
        let socketio_version = serde_json::from_str::<Value>(&manifest)
            .ok()
            .and_then(|v| v["version"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "unknown".to_owned());
        Ok(SocketIoPeer {
            dir,
            node_version,
            socketio_version,
        })
    }

    /// `taskset -c <cpu> node server.js <port>`, run in the peer's folder.
    pub fn command(&self, cpu: usize, port: u16) -> Command {
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(cpu.to_string());
        cmd.args(["node", "server.js", &port.to_string()]);
        cmd.current_dir(&self.dir).env("NODE_ENV", "production");
        cmd
    }

    /// Facts recorded with the results.
    pub fn to_json(&self, cpu: usize) -> Value {
        json!({
            "dir": self.dir.display().to_string(),
            "node_version": self.node_version,
            "socketio_version": self.socketio_version,
            "command": format!("taskset -c {cpu} node server.js <port>"),
            "env": "NODE_ENV=production",
        })
    }
}

fn default_dir() -> Option<PathBuf> {
    let relative = PathBuf::from("bench/peers/socketio");
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/peers/socketio");
    [relative, built_from]
        .into_iter()
        .find(|d| d.join("server.js").is_file())
}

/// `npm ci --no-audit --no-fund` in `dir`; fails with the command to type.
fn install(dir: &Path) -> anyhow::Result<()> {
    let typed = format!("(cd {} && npm ci --no-audit --no-fund)", dir.display());
    eprintln!(
        "bench: {} has no node_modules; running {typed}",
        dir.display()
    );
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .stdout(std::io::stderr())
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => bail!("`npm ci` failed ({s}); install the peer's packages with: {typed}"),
        Err(e) => bail!("cannot run npm ({e}); install the peer's packages with: {typed}"),
    }
}
