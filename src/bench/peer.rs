//! The servers the benchmark can measure: Switchboard itself and, for a
//! side-by-side comparison, what users would pick instead — a Socket.IO 4
//! server on Node (`bench/peers/socketio/server.js`: clients join a room,
//! the server broadcasts to it). Each runs as a child process pinned to the
//! same core with `taskset`; this file knows how to find and start the peer.
//! For the `cluster` scenario the same server runs as a node of a cluster
//! through Redis (`@socket.io/redis-adapter`, see [`SocketIoPeer::cluster_node`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::protocol::Protocol;

/// The npm packages the peer needs (its `node_modules` must hold them all).
const PACKAGES: [&str; 3] = ["socket.io", "@socket.io/redis-adapter", "redis"];

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
    /// Environment of the node process besides `NODE_ENV` (a cluster
    /// node's `REDIS_URL` and `REDIS_PREFIX`; empty for a single node).
    pub env: Vec<(String, String)>,
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
        let missing = |p: &&str| !manifest_path(&dir, p).is_file();
        if PACKAGES.iter().any(missing) {
            install(&dir)?;
        }
        let socketio_version = installed_version(&dir, "socket.io")?;
        Ok(SocketIoPeer {
            dir,
            node_version,
            socketio_version,
            env: Vec::new(),
        })
    }

    /// The same peer as a node of a cluster: `REDIS_URL` makes server.js
    /// attach `@socket.io/redis-adapter` on `redis_url`, with `prefix` as
    /// the adapter's key (the prefix of every Redis channel it uses).
    pub fn cluster_node(&self, redis_url: &str, prefix: &str) -> SocketIoPeer {
        SocketIoPeer {
            env: vec![
                ("REDIS_URL".to_owned(), redis_url.to_owned()),
                ("REDIS_PREFIX".to_owned(), prefix.to_owned()),
            ],
            ..self.clone()
        }
    }

    /// The installed versions of the Redis adapter and client packages.
    pub fn redis_versions(&self) -> anyhow::Result<(String, String)> {
        Ok((
            installed_version(&self.dir, "@socket.io/redis-adapter")?,
            installed_version(&self.dir, "redis")?,
        ))
    }

    /// `taskset -c <cpu> node server.js <port>`, run in the peer's folder
    /// with [`env`](Self::env).
    pub fn command(&self, cpu: usize, port: u16) -> Command {
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(cpu.to_string());
        cmd.args(["node", "server.js", &port.to_string()]);
        cmd.current_dir(&self.dir).env("NODE_ENV", "production");
        for var in ["REDIS_URL", "REDIS_PREFIX"] {
            // The user's own settings must not turn a single node into a
            // cluster node.
            cmd.env_remove(var);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Facts recorded with the results.
    pub fn to_json(&self, cpu: usize) -> Value {
        json!({
            "dir": self.dir.display().to_string(),
            "node_version": self.node_version,
            "socketio_version": self.socketio_version,
            "command": format!("taskset -c {cpu} node server.js <port>"),
            "env": self.env_line(),
        })
    }

    /// The node process's environment as `NAME=value` words.
    pub fn env_line(&self) -> String {
        let mut words = vec!["NODE_ENV=production".to_owned()];
        words.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        words.join(" ")
    }
}

/// `node_modules/<package>/package.json` under `dir`.
fn manifest_path(dir: &Path, package: &str) -> PathBuf {
    dir.join("node_modules").join(package).join("package.json")
}

/// The `version` of an installed package (`unknown` if it has none).
fn installed_version(dir: &Path, package: &str) -> anyhow::Result<String> {
    let manifest = std::fs::read_to_string(manifest_path(dir, package))
        .with_context(|| format!("reading the installed {package} package.json"))?;
    Ok(serde_json::from_str::<Value>(&manifest)
        .ok()
        .and_then(|v| v["version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketIoPeer {
        SocketIoPeer {
            dir: PathBuf::from("/nowhere"),
            node_version: "v20".into(),
            socketio_version: "4.8.1".into(),
            env: Vec::new(),
        }
    }

    /// The value `cmd` sets for `name`: `Some(None)` when it removes it.
    fn env_of(cmd: &Command, name: &str) -> Option<Option<String>> {
        cmd.get_envs()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
    }

    #[test]
    fn a_cluster_node_gets_redis_and_a_single_node_does_not() {
        let single = peer().command(0, 9000);
        assert_eq!(env_of(&single, "REDIS_URL"), Some(None));
        assert_eq!(env_of(&single, "REDIS_PREFIX"), Some(None));
        let node = peer().cluster_node("redis://127.0.0.1:6379", "sbbench-sio-1-0");
        let cmd = node.command(1, 9001);
        let url = env_of(&cmd, "REDIS_URL");
        assert_eq!(url, Some(Some("redis://127.0.0.1:6379".into())));
        let prefix = env_of(&cmd, "REDIS_PREFIX");
        assert_eq!(prefix, Some(Some("sbbench-sio-1-0".into())));
        assert_eq!(
            node.env_line(),
            "NODE_ENV=production REDIS_URL=redis://127.0.0.1:6379 REDIS_PREFIX=sbbench-sio-1-0"
        );
        assert_eq!(peer().env_line(), "NODE_ENV=production");
    }
}
