//! Scenario `cluster`: publish → deliver latency across nodes through Redis,
//! next to the same measurement on one node and, with `--peer socketio` or
//! `--peer all`, on three Socket.IO nodes through the same Redis; and
//! fan-out to local subscribers on a Redis-broker node next to a
//! memory-broker node.
//!
//! For each rate R (`--cluster-rate`, 50,000 and 10,000 publications/s by
//! default), back to back:
//!
//! 1. **one node** (memory broker): 2 subscribers per channel on
//!    `bench:c0` … `bench:c<C-1>` (`--cluster-channels`, 1,000), publishers
//!    on the same node;
//! 2. **three nodes** sharing one Redis (and PostgreSQL, unused by the
//!    `bench` namespace, which is not persisted: its history lives in Redis
//!    streams written by the Lua script): the publishers on node A, one
//!    subscriber per channel on node B and one on node C, so every delivery
//!    crosses Redis;
//! 3. when the selected peers include Socket.IO, **three Socket.IO nodes**
//!    (`bench/peers/socketio/server.js` with `REDIS_URL`: Socket.IO 4 with
//!    the official `@socket.io/redis-adapter`, what users would pick instead
//!    for many nodes), with exactly the same load, layout (publishers on A,
//!    one subscriber per channel on B and one on C), pinning
//!    (`--cluster-cpus`), publishers, in-flight cap and subscriber fleets,
//!    speaking Socket.IO's protocol (rooms for channels). These nodes keep
//!    no history and no offsets — Socket.IO has none — so a publish is one
//!    `PUBLISH` on the adapter's channel, not the Lua script's stream append
//!    plus `PUBLISH` that a Switchboard node does; and the adapter's nodes
//!    all `PSUBSCRIBE` to the run's prefix, so Redis sends every publication
//!    to every node, A included. Their figures carry the same names as the
//!    Switchboard three nodes' (`cluster @10k pub/s, 3 nodes via Redis: …`),
//!    under the Socket.IO peer, so that the side-by-side table puts them
//!    next to each other. With `--peer socketio` alone only this setup runs.
//!
//! P publisher connections (`--cluster-publishers`, 32; a Switchboard
//! connection handles its publishes side by side, so the count shapes the
//! traffic, not a bound of one Redis round trip per connection) share the
//! schedule: every millisecond each sends
//! what is due by then (message i goes to channel i mod C), as long as it
//! has fewer than `--cluster-in-flight` / P publishes unacknowledged. The
//! cap turns an unreachable rate into the highest rate the nodes sustain
//! with bounded queues (the publisher is then "held back"); the achieved
//! rate is the publications divided by the time until the last one was
//! acknowledged. Each message's data carries its send time `"t"` (taken
//! just before the batch is written) and index `"i"`, as in `latency`;
//! subscribers record every delivery. Every publication must reach both of
//! its subscribers.
//!
//! Then (Switchboard only) the `fanout` scenario's saturating publisher and
//! N subscribers of one channel (`--cluster-fanout-subscribers`, 1,000), all
//! on the same node, on a memory-broker node and on a Redis-broker node:
//! local fan-out with the Redis broker (publish → Redis → back to the node
//! → its subscribers) as a share of the single node's. The pair runs
//! `--cluster-fanout-rounds` times (3), alternating, and the share reported
//! is the median of the rounds' (one run moves by ±10 % on this machine);
//! the other fan-out figures are the first round's.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Map, Value};
use tokio::time::MissedTickBehavior;

use super::fanout::{self, FanoutParams};
use super::latency::{max_of, ms, percentile, Recorder};
use super::peer::Peer;
use super::procfs;
use super::protocol::Endpoint;
use super::publisher::Publisher;
use super::report::{Figure, Target};
use super::server::{random_secrets, Server, ServerOptions};
use super::subscriber::{wait_all_received, Channels, Fleet, FleetSpec, Mode, Transport};

/// Channel names are `bench:c<i>`.
const CHANNEL_PREFIX: &str = "bench:c";
/// How long the last acknowledgements may take once publishing stopped.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Target of issue 4: cross-node publish → deliver p99.
const P99_TARGET_MS: f64 = 5.0;

/// Parameters of the scenario.
#[derive(Clone, Debug)]
pub struct ClusterParams {
    /// Total publication rates to measure, one run each (per setup).
    pub rates: Vec<f64>,
    /// Channels the publications are spread over.
    pub channels: usize,
    /// Seconds of publishing per run.
    pub secs: f64,
    /// Publisher connections.
    pub publishers: usize,
    /// Publishes unacknowledged at most, all publishers together.
    pub in_flight: u64,
    /// Padding bytes in each message's data.
    pub payload_bytes: usize,
    /// Connection setups in flight.
    pub concurrency: usize,
    /// The single node's CPU (also the fan-out nodes').
    pub single_cpu: usize,
    /// CPUs of nodes A (publishers), B and C (subscribers).
    pub node_cpus: Vec<usize>,
    /// The Redis URL of the cluster.
    pub broker: String,
    /// The PostgreSQL URL of the cluster.
    pub store: String,
    /// Rounds of the local fan-out comparison; the ratio is their median.
    pub fanout_rounds: usize,
    /// The local fan-out comparison (its `subscribers` has one count).
    pub fanout: FanoutParams,
}

/// A set of nodes measured at each rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    /// One Switchboard node on the memory broker.
    OneNode,
    /// Three Switchboard nodes through Redis.
    ThreeNodes,
    /// Three Socket.IO nodes through Redis (`@socket.io/redis-adapter`).
    ThreeSocketIo,
}

impl Setup {
    /// The setups measured for `peers`, in the order they run at a rate.
    fn for_peers(peers: &[Peer]) -> Vec<Setup> {
        let mut out = Vec::new();
        if peers.contains(&Peer::Switchboard) {
            out.extend([Setup::OneNode, Setup::ThreeNodes]);
        }
        if peers.contains(&Peer::SocketIo) {
            out.push(Setup::ThreeSocketIo);
        }
        out
    }

    /// The server whose figures these are.
    fn peer(self) -> Peer {
        match self {
            Setup::OneNode | Setup::ThreeNodes => Peer::Switchboard,
            Setup::ThreeSocketIo => Peer::SocketIo,
        }
    }

    /// Whether deliveries cross Redis (the p99 target applies).
    fn cluster(self) -> bool {
        self != Setup::OneNode
    }

    /// What the setup is, in progress lines.
    fn describe(self) -> &'static str {
        match self {
            Setup::OneNode => "1 node (memory broker)",
            Setup::ThreeNodes => "3 nodes via Redis",
            Setup::ThreeSocketIo => "3 Socket.IO nodes via Redis (redis-adapter)",
        }
    }

    /// The prefix of its figures' names. Both three-node setups share one,
    /// so that the side-by-side table (one column per server) shows them
    /// on the same rows.
    fn figure_label(self, rate: f64) -> String {
        let setup = match self {
            Setup::OneNode => "1 node (memory broker)",
            Setup::ThreeNodes | Setup::ThreeSocketIo => "3 nodes via Redis",
        };
        format!("cluster @{}k pub/s, {setup}", rate / 1000.0)
    }

    /// Its key in a run's JSON.
    fn key(self) -> &'static str {
        match self {
            Setup::OneNode => "single_node",
            Setup::ThreeNodes | Setup::ThreeSocketIo => "three_nodes",
        }
    }
}

/// What one server's part of the scenario gathered.
pub struct PeerResult {
    /// The server.
    pub peer: Peer,
    /// The figures of its runs that completed (also of a run during which
    /// a node died: they show what was lost).
    pub figures: Vec<Figure>,
    /// The parameters and, per rate, its runs' details.
    pub details: Value,
    /// Why runs failed; the other runs went on with fresh nodes.
    pub errors: Vec<anyhow::Error>,
}

/// Runs the scenario for `peers` (it starts its own servers) and returns
/// each server's figures, details and failures. At each rate the setups
/// run back to back with fresh nodes, so both servers see the machine in
/// the same state as far as possible; a failed run (a node that died, a
/// fleet that could not connect) is reported and the others still run.
pub async fn run(base: &ServerOptions, p: &ClusterParams, peers: &[Peer]) -> Vec<PeerResult> {
    let mut parts: Vec<PeerResult> = peers
        .iter()
        .map(|&peer| PeerResult {
            peer,
            figures: Vec::new(),
            details: json!({ "runs": [] }),
            errors: Vec::new(),
        })
        .collect();
    if p.node_cpus.len() != 3 {
        for part in &mut parts {
            let e = anyhow::anyhow!("--cluster-cpus needs three CPUs (nodes A, B, C)");
            part.errors.push(e);
        }
        return parts;
    }
    let mut runs: Vec<Vec<Value>> = vec![Vec::new(); parts.len()];
    for &rate in &p.rates {
        let mut this_rate: Vec<Map<String, Value>> = vec![Map::new(); parts.len()];
        for setup in Setup::for_peers(peers) {
            let Some(at) = parts.iter().position(|x| x.peer == setup.peer()) else {
                continue;
            };
            let (part, run) = (&mut parts[at], &mut this_rate[at]);
            run.insert("rate_asked_per_sec".into(), json!(rate));
            let (measured, failure) = match run_setup(base, p, setup, rate).await {
                Ok((m, died)) => (Some(m), died),
                Err(e) => (None, Some(e)),
            };
            let mut entry = json!({});
            if let Some(m) = measured {
                let label = setup.figure_label(rate);
                part.figures
                    .extend(m.figures(&label, rate, setup.cluster()));
                entry = m.to_json();
            }
            if let Some(e) = failure {
                let e = e.context(format!("{} at {rate}/s", setup.describe()));
                entry["error"] = json!(format!("{e:#}"));
                part.errors.push(e);
            }
            run.insert(setup.key().into(), entry);
        }
        for (all, run) in runs.iter_mut().zip(this_rate) {
            all.push(Value::Object(run));
        }
    }
    for (part, runs) in parts.iter_mut().zip(runs) {
        part.details = common_details(p, runs);
        if let Err(e) = finish(base, p, part).await {
            part.errors.push(e);
        }
    }
    parts
}

/// Starts `setup`'s nodes, measures them at `rate` and stops them; also
/// returns why, if a node died during the run (its figures show what that
/// cost).
async fn run_setup(
    base: &ServerOptions,
    p: &ClusterParams,
    setup: Setup,
    rate: f64,
) -> anyhow::Result<(Measured, Option<anyhow::Error>)> {
    eprintln!(
        "cluster: {rate} publications/s over {} channels, {}…",
        p.channels,
        setup.describe()
    );
    let label = format!("cluster @{}k pub/s, {}", rate / 1000.0, setup.describe());
    let mut nodes = match setup {
        Setup::OneNode => start_nodes(base, p, false, &[p.single_cpu])?,
        Setup::ThreeNodes => start_nodes(base, p, true, &p.node_cpus)?,
        Setup::ThreeSocketIo => start_socketio_nodes(base, p, &p.node_cpus)?,
    };
    let m = match setup {
        Setup::OneNode => {
            let procs = vec![("node".to_owned(), nodes[0].pid())];
            let subs = [&nodes[0], &nodes[0]];
            measure(&label, &nodes[0], &subs, p, rate, procs).await?
        }
        Setup::ThreeNodes | Setup::ThreeSocketIo => {
            let procs = cluster_procs(&nodes);
            measure(&label, &nodes[0], &[&nodes[1], &nodes[2]], p, rate, procs).await?
        }
    };
    let died = nodes.iter_mut().find_map(|n| n.check_alive().err());
    Ok((m, died))
}

/// The processes whose CPU a three-node run reports: nodes A, B, C and
/// Redis (when found).
fn cluster_procs(nodes: &[Server]) -> Vec<(String, u32)> {
    let mut procs: Vec<(String, u32)> = ["A", "B", "C"]
        .iter()
        .zip(nodes)
        .map(|(n, s)| (format!("node {n}"), s.pid()))
        .collect();
    if let Some(pid) = procfs::find_process("redis-server") {
        procs.push(("redis".to_owned(), pid));
    }
    procs
}

/// The scenario's parameters and `runs` (one entry per rate), as JSON.
fn common_details(p: &ClusterParams, runs: Vec<Value>) -> Value {
    json!({
        "channels": p.channels,
        "secs": p.secs,
        "publisher_connections": p.publishers,
        "in_flight_cap": p.in_flight,
        "payload_bytes": p.payload_bytes,
        "node_cpus": { "a": p.node_cpus[0], "b": p.node_cpus[1], "c": p.node_cpus[2] },
        "redis": "not pinned (the machine's service)",
        "runs": runs,
    })
}

/// Completes a server's part once its runs are done: for Switchboard, the
/// local fan-out comparison (figures and details); for Socket.IO, what its
/// nodes ran.
async fn finish(
    base: &ServerOptions,
    p: &ClusterParams,
    part: &mut PeerResult,
) -> anyhow::Result<()> {
    match part.peer {
        Peer::Switchboard => {
            part.details["single_node_cpu"] = json!(p.single_cpu);
            let (figures, fan) = local_fanout(base, p).await?;
            part.figures.extend(figures);
            part.details["local_fanout"] = fan;
        }
        Peer::SocketIo => {
            let sio = base
                .socketio
                .as_ref()
                .context("the Socket.IO peer was not prepared")?;
            let (adapter, client) = sio.redis_versions()?;
            let node = sio.cluster_node(&p.broker, "sbbench-sio-<pid>-<n>");
            part.details["setup"] = json!(Setup::ThreeSocketIo.describe());
            part.details["nodes"] = json!({
                "command": "taskset -c <cpu> node server.js <port>",
                "env": node.env_line(),
                "node_version": sio.node_version,
                "socketio_version": sio.socketio_version,
                "redis_adapter_version": adapter,
                "redis_client_version": client,
                "history": "none (Socket.IO has no history or offsets): a publish is one \
                    PUBLISH; every node PSUBSCRIBEs <prefix>#/#* and gets every publication",
            });
        }
    }
    Ok(())
}

/// Local fan-out, memory broker then Redis broker, same CPU: its figures
/// and details (both runs and the ratio).
async fn local_fanout(
    base: &ServerOptions,
    p: &ClusterParams,
) -> anyhow::Result<(Vec<Figure>, Value)> {
    let mut figures = Vec::new();
    let mut fan = Map::new();
    let mut rounds = Vec::new();
    for round in 0..p.fanout_rounds.max(1) {
        let mut rates = Vec::new();
        for (redis, name) in [(false, "memory broker"), (true, "Redis broker")] {
            eprintln!(
                "cluster: local fan-out on one node, {name} (round {})…",
                round + 1
            );
            let mut node = start_nodes(base, p, redis, &[p.single_cpu])?;
            let (figs, details) = fanout::run(&mut node[0], &p.fanout)
                .await
                .with_context(|| format!("fan-out on a {name} node"))?;
            node[0].check_alive()?;
            let deliveries = figs
                .iter()
                .find(|f| f.name.ends_with(": deliveries/s"))
                .map_or(0.0, |f| f.value);
            rates.push(deliveries);
            if round > 0 {
                // The first round's figures stand for the others.
                continue;
            }
            figures.extend(figs.into_iter().map(|mut f| {
                let rest = f.name.strip_prefix("fanout ").unwrap_or(&f.name).to_owned();
                f.name = format!("cluster fan-out, {name}, {rest}");
                f.target = f
                    .target
                    .filter(|_| f.name.ends_with("missing publications"));
                f
            }));
            let key = if redis {
                "redis_broker"
            } else {
                "memory_broker"
            };
            fan.insert(key.into(), details);
        }
        let ratio = 100.0 * rates[1] / rates[0].max(1e-9);
        eprintln!(
            "cluster: local fan-out round {}: {:.0}/s (memory) vs {:.0}/s (Redis): {ratio:.1}%",
            round + 1,
            rates[0],
            rates[1]
        );
        rounds.push(json!({"memory": rates[0], "redis": rates[1], "ratio_percent": ratio}));
    }
    let mut ratios: Vec<f64> = rounds
        .iter()
        .filter_map(|r| r["ratio_percent"].as_f64())
        .collect();
    let ratio = median(&mut ratios);
    let subs = p.fanout.subscribers.first().copied().unwrap_or(0);
    figures.push(Figure::new(
        format!(
            "cluster fan-out {}k subs: Redis-broker node / single node deliveries/s",
            subs as f64 / 1000.0
        ),
        ratio,
        "%",
        Some(Target::AtLeast(100.0)),
    ));
    eprintln!(
        "cluster: local fan-out to {subs}: Redis node / memory node {ratio:.1}% (median of {} rounds)",
        rounds.len()
    );
    fan.insert("rounds".into(), Value::Array(rounds));
    fan.insert("ratio_percent".into(), json!(ratio));
    Ok((figures, Value::Object(fan)))
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Distinguishes the Redis key prefixes of the nodes sets of one run.
static CLUSTER_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A Redis prefix of its own for one set of nodes: `<kind>-<pid>-<n>`.
fn run_prefix(kind: &str) -> String {
    format!(
        "{kind}-{}-{}",
        std::process::id(),
        CLUSTER_SEQ.fetch_add(1, Relaxed)
    )
}

/// Starts one node per CPU in `cpus`, sharing their secrets; with `redis`,
/// on the cluster's Redis broker and PostgreSQL store with a key prefix of
/// their own, else on the memory broker.
fn start_nodes(
    base: &ServerOptions,
    p: &ClusterParams,
    redis: bool,
    cpus: &[usize],
) -> anyhow::Result<Vec<Server>> {
    let mut env = Vec::new();
    if redis {
        env = vec![
            ("SWITCHBOARD_BROKER".to_owned(), p.broker.clone()),
            ("SWITCHBOARD_STORE".to_owned(), p.store.clone()),
            (
                "SWITCHBOARD_REDIS_PREFIX".to_owned(),
                format!("{}:", run_prefix("sbbench")),
            ),
            // The streams of this run's prefix expire soon after it.
            (
                "SWITCHBOARD_NAMESPACES_BENCH_HISTORY_TTL".to_owned(),
                "60s".to_owned(),
            ),
        ];
    }
    let secrets = random_secrets();
    cpus.iter()
        .map(|&cpu| {
            let opts = ServerOptions {
                cpu,
                extra_env: env.clone(),
                secrets: Some(secrets.clone()),
                ..base.clone()
            };
            Server::start(Peer::Switchboard, &opts)
        })
        .collect()
}

/// Starts one Socket.IO node per CPU in `cpus`, all on the cluster's Redis
/// through `@socket.io/redis-adapter` with a channel prefix of their own
/// (`sbbench-sio-<pid>-<n>`; the adapter keeps nothing in Redis). Like the
/// Switchboard nodes, they are killed when the returned servers drop.
fn start_socketio_nodes(
    base: &ServerOptions,
    p: &ClusterParams,
    cpus: &[usize],
) -> anyhow::Result<Vec<Server>> {
    let sio = base
        .socketio
        .as_ref()
        .context("the Socket.IO peer was not prepared")?;
    let node = sio.cluster_node(&p.broker, &run_prefix("sbbench-sio"));
    cpus.iter()
        .map(|&cpu| {
            let opts = ServerOptions {
                cpu,
                socketio: Some(node.clone()),
                ..base.clone()
            };
            Server::start(Peer::SocketIo, &opts)
        })
        .collect()
}

/// CPU ticks of some processes and of the machine, at one moment.
struct CpuSnap {
    at: Instant,
    procs: Vec<u64>,
    own: u64,
    machine: (u64, u64, u64),
    cores: Vec<(u64, u64)>,
}

impl CpuSnap {
    fn take(procs: &[(String, u32)]) -> CpuSnap {
        CpuSnap {
            at: Instant::now(),
            procs: procs
                .iter()
                .map(|(_, pid)| procfs::cpu_ticks(Some(*pid)).unwrap_or(0))
                .collect(),
            own: procfs::cpu_ticks(None).unwrap_or(0),
            machine: procfs::machine_ticks(),
            cores: procfs::core_ticks(),
        }
    }

    /// Per process (and `bench`), the share of one core used since `self`;
    /// then the machine's busy and stolen shares of all its cores, and each
    /// core's busy share.
    fn since(&self, names: &[(String, u32)]) -> (Vec<(String, f64)>, f64, f64, Vec<f64>) {
        let now = CpuSnap::take(names);
        let secs = self.at.elapsed().as_secs_f64().max(1e-3);
        let tps = procfs::clock_ticks_per_sec() as f64;
        let share = |a: u64, b: u64| b.saturating_sub(a) as f64 / tps / secs;
        let mut out: Vec<(String, f64)> = names
            .iter()
            .zip(self.procs.iter().zip(&now.procs))
            .map(|((n, _), (a, b))| (n.clone(), share(*a, *b)))
            .collect();
        out.push(("bench (clients)".to_owned(), share(self.own, now.own)));
        let total = now.machine.2.saturating_sub(self.machine.2).max(1) as f64;
        let busy = now.machine.0.saturating_sub(self.machine.0) as f64 / total;
        let steal = now.machine.1.saturating_sub(self.machine.1) as f64 / total;
        let cores = self
            .cores
            .iter()
            .zip(&now.cores)
            .map(|((busy0, total0), (busy1, total1))| {
                busy1.saturating_sub(*busy0) as f64 / total1.saturating_sub(*total0).max(1) as f64
            })
            .collect();
        (out, busy, steal, cores)
    }
}

/// What one run measured.
struct Measured {
    publications: u64,
    per_channel: u64,
    publish_secs: f64,
    ack_secs: f64,
    deliver_secs: f64,
    deliveries: u64,
    every: Vec<u64>,
    short: usize,
    unreadable: u64,
    disconnected: usize,
    reasons: Vec<String>,
    held_back: u64,
    cpu: Vec<(String, f64)>,
    machine_busy: f64,
    machine_steal: f64,
    /// Each core's busy share (user+nice+system), by CPU number.
    cores: Vec<f64>,
}

impl Measured {
    fn achieved(&self) -> f64 {
        self.publications as f64 / self.ack_secs.max(1e-9)
    }

    fn deliveries_per_sec(&self) -> f64 {
        self.deliveries as f64 / self.deliver_secs.max(1e-9)
    }

    fn figures(&self, label: &str, rate: f64, cluster: bool) -> Vec<Figure> {
        let fig = |what: &str, value: f64, unit: &'static str, target: Option<Target>| {
            Figure::new(format!("{label}: {what}"), value, unit, target)
        };
        let deliveries = match cluster {
            true => "cross-node deliveries/s",
            false => "deliveries/s",
        };
        let p99_target = cluster.then_some(Target::AtMost(P99_TARGET_MS));
        let mut out = vec![
            fig(
                "publications/s achieved",
                self.achieved(),
                "/s",
                Some(Target::AtLeast(0.98 * rate)),
            ),
            fig(deliveries, self.deliveries_per_sec(), "/s", None),
            fig(
                "publish → deliver p50",
                ms(percentile(&self.every, 50.0)),
                "ms",
                None,
            ),
            fig(
                "publish → deliver p99",
                ms(percentile(&self.every, 99.0)),
                "ms",
                p99_target,
            ),
            fig("publish → deliver max", ms(max_of(&self.every)), "ms", None),
            fig(
                "publications missing a subscriber",
                self.short as f64,
                "",
                Some(Target::AtMost(0.0)),
            ),
        ];
        for (name, share) in &self.cpu {
            out.push(fig(&format!("CPU {name}"), share * 100.0, "%", None));
        }
        out.push(fig(
            "machine busy (all cores)",
            self.machine_busy * 100.0,
            "%",
            None,
        ));
        for (n, busy) in self.cores.iter().enumerate() {
            out.push(fig(&format!("core {n} busy"), busy * 100.0, "%", None));
        }
        out
    }

    /// What limited the run, as a sentence.
    fn bottleneck(&self) -> String {
        let top = self
            .cpu
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(n, s)| format!("{n}, {:.0}% of a core", s * 100.0))
            .unwrap_or_default();
        if self.machine_busy >= 0.9 {
            format!(
                "the machine's cores were saturated ({:.0}% busy; largest user: {top})",
                self.machine_busy * 100.0
            )
        } else if let Some((n, _)) = self.cpu.iter().find(|(_, s)| *s >= 0.9) {
            format!("{n} saturated its core")
        } else if let Some((n, busy)) = self.cores.iter().enumerate().find(|(_, b)| **b >= 0.9) {
            // No process alone, but those sharing one core (say two nodes
            // and the clients) filled it.
            format!(
                "core {n} saturated by the processes sharing it ({:.0}% busy; largest user: {top})",
                busy * 100.0
            )
        } else {
            format!("no core saturated (largest user: {top})")
        }
    }

    fn to_json(&self) -> Value {
        let pct = |p: f64| ms(percentile(&self.every, p));
        json!({
            "publications": self.publications,
            "publications_per_channel": self.per_channel,
            "publish_secs": self.publish_secs,
            "last_ack_secs": self.ack_secs,
            "last_delivery_secs": self.deliver_secs,
            "publications_per_sec_achieved": self.achieved(),
            "deliveries": self.deliveries,
            "deliveries_per_sec": self.deliveries_per_sec(),
            "latency_ms": { "p50": pct(50.0), "p90": pct(90.0), "p99": pct(99.0),
                "p999": pct(99.9), "max": ms(max_of(&self.every)) },
            "publications_missing_a_subscriber": self.short,
            "unreadable_frames": self.unreadable,
            "disconnected_subscribers": self.disconnected,
            "disconnect_reasons": self.reasons,
            "publisher_ticks_held_back_by_in_flight_cap": self.held_back,
            "cpu_share_of_one_core": self.cpu.iter().map(|(n, s)| (n.clone(), json!(s)))
                .collect::<Map<String, Value>>(),
            "machine_busy_share": self.machine_busy,
            "machine_steal_share": self.machine_steal,
            "core_busy_shares": self.cores,
            "bottleneck": self.bottleneck(),
        })
    }
}

/// One run: subscribers on `sub_nodes` (one per channel on each), the
/// publishers on `pub_node` at `rate` for `p.secs`; its progress lines
/// start with `label`.
async fn measure(
    label: &str,
    pub_node: &Server,
    sub_nodes: &[&Server],
    p: &ClusterParams,
    rate: f64,
    procs: Vec<(String, u32)>,
) -> anyhow::Result<Measured> {
    let channels = p.channels.max(1);
    let per_channel = ((rate * p.secs) / channels as f64).round().max(1.0) as u64;
    let count = per_channel * channels as u64;
    let recorder = Arc::new(Recorder::new(count as usize));
    let mut fleets = Vec::new();
    for node in sub_nodes {
        let endpoint = node.endpoint();
        let spec = FleetSpec {
            token: endpoint.token("bench-sub")?,
            endpoint,
            transport: Transport::WebSocket,
            channels: Channels::PerConnection(CHANNEL_PREFIX.to_owned()),
            mode: Mode::Latency(recorder.clone()),
            concurrency: p.concurrency,
            progress: None,
        };
        let mut fleet = Fleet::new();
        fleet.add(&spec, channels).await?;
        fleets.push(fleet);
    }
    let endpoint = pub_node.endpoint();
    let plan = PubPlan {
        token: endpoint.token("bench-pub")?,
        endpoint,
        count,
        rate,
        channels: (0..channels)
            .map(|c| format!("{CHANNEL_PREFIX}{c}"))
            .collect(),
        conns: p.publishers.max(1),
        in_flight: p.in_flight.max(1),
        pad: "x".repeat(p.payload_bytes.saturating_sub(40)),
        recorder: recorder.clone(),
    };
    let snap = CpuSnap::take(&procs);
    let started = Instant::now();
    let published = spawn_publishers(plan)
        .await
        .context("the publisher thread ended without a result")??;
    for fleet in &fleets {
        wait_all_received(fleet, per_channel, Duration::from_secs(5)).await;
    }
    let deliver_secs = started.elapsed().as_secs_f64();
    let (cpu, machine_busy, machine_steal, cores) = snap.since(&procs);
    let mut disconnected = 0;
    let mut reasons = Vec::new();
    let mut deliveries = 0;
    for fleet in &fleets {
        let (n, mut r) = fleet.ended(5);
        disconnected += n;
        reasons.append(&mut r);
        deliveries += fleet.total();
    }
    let every = recorder.take_sorted();
    let short = recorder.messages_short_of(sub_nodes.len() as u32);
    for fleet in fleets {
        fleet.close().await;
    }
    let m = Measured {
        publications: count,
        per_channel,
        publish_secs: published.last_send.as_secs_f64(),
        ack_secs: published.last_ack.as_secs_f64(),
        deliver_secs,
        deliveries,
        every,
        short,
        unreadable: recorder.unreadable(),
        disconnected,
        reasons,
        held_back: published.held_back,
        cpu,
        machine_busy,
        machine_steal,
        cores,
    };
    let cpu_line: Vec<String> = m
        .cpu
        .iter()
        .map(|(n, s)| format!("{n} {:.0}%", s * 100.0))
        .collect();
    eprintln!(
        "{label}: {count} publications in {:.2} s ({:.0}/s acknowledged; held back by the \
         in-flight cap on {} ticks), {:.0} deliveries/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, \
         {short} missing a subscriber; CPU: {}; machine {:.0}% busy (cores: {}), {:.0}% stolen",
        m.publish_secs,
        m.achieved(),
        m.held_back,
        m.deliveries_per_sec(),
        ms(percentile(&m.every, 50.0)),
        ms(percentile(&m.every, 99.0)),
        ms(max_of(&m.every)),
        cpu_line.join(", "),
        machine_busy * 100.0,
        m.cores
            .iter()
            .map(|b| format!("{:.0}%", b * 100.0))
            .collect::<Vec<_>>()
            .join(", "),
        machine_steal * 100.0,
    );
    eprintln!("{label}: limited by: {}", m.bottleneck());
    if disconnected > 0 {
        eprintln!(
            "{label}: WARNING: {disconnected} subscribers disconnected: {:?}",
            m.reasons
        );
    }
    Ok(m)
}

/// What the publishers are to do.
struct PubPlan {
    endpoint: Endpoint,
    token: Arc<str>,
    /// Publications in all.
    count: u64,
    /// Publications per second, all connections together.
    rate: f64,
    /// Channel names; message i goes to `channels[i % len]`.
    channels: Vec<String>,
    /// Publisher connections.
    conns: usize,
    /// Unacknowledged publishes at most, all connections together.
    in_flight: u64,
    /// Padding of each message's data.
    pad: String,
    /// The clock (and the subscribers' samples).
    recorder: Arc<Recorder>,
}

/// What the publishers did.
struct Published {
    /// From the start to the last publish written.
    last_send: Duration,
    /// From the start to the last acknowledgement.
    last_ack: Duration,
    /// Ticks on which a connection had more due than its in-flight cap allowed.
    held_back: u64,
}

/// Runs the publishers on a thread of their own (one single-threaded
/// runtime, a task per connection), like the fan-out publisher: on the
/// subscribers' runtime they would wait behind thousands of subscriber tasks.
fn spawn_publishers(plan: PubPlan) -> tokio::sync::oneshot::Receiver<anyhow::Result<Published>> {
    let (done, result) = tokio::sync::oneshot::channel();
    let run = move || -> anyhow::Result<Published> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the publishers' runtime")?;
        runtime.block_on(async {
            let plan = Arc::new(plan);
            let mut publishers = Vec::new();
            for _ in 0..plan.conns {
                let channel = &plan.channels[0];
                publishers.push(Publisher::open(&plan.endpoint, &plan.token, channel).await?);
            }
            let start = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for (j, publisher) in publishers.into_iter().enumerate() {
                tasks.spawn(publish_share(plan.clone(), j, publisher, start));
            }
            let mut out = Published {
                last_send: Duration::ZERO,
                last_ack: Duration::ZERO,
                held_back: 0,
            };
            while let Some(r) = tasks.join_next().await {
                let p = r.context("a publisher task failed")??;
                out.last_send = out.last_send.max(p.last_send);
                out.last_ack = out.last_ack.max(p.last_ack);
                out.held_back += p.held_back;
            }
            Ok(out)
        })
    };
    let spawned = std::thread::Builder::new()
        .name("bench-cluster-publishers".into())
        .spawn(move || {
            let _ = done.send(run());
        });
    if let Err(e) = spawned {
        eprintln!("bench: cannot start the publishers' thread: {e}");
    }
    result
}

/// How many of messages 0..count are j, j + conns, j + 2 conns, ….
fn share_len(count: u64, conns: u64, j: u64) -> u64 {
    match j < count {
        true => (count - j).div_ceil(conns.max(1)),
        false => 0,
    }
}

/// Publisher `j`'s share: messages j, j + P, j + 2P, … on schedule.
async fn publish_share(
    plan: Arc<PubPlan>,
    j: usize,
    mut publisher: Publisher,
    start: Instant,
) -> anyhow::Result<Published> {
    let conns = plan.conns as u64;
    let j = j as u64;
    let mine = share_len(plan.count, conns, j);
    let rate = plan.rate / conns as f64;
    let cap = (plan.in_flight / conns).max(1);
    let n_channels = plan.channels.len() as u64;
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut out = Published {
        last_send: Duration::ZERO,
        last_ack: Duration::ZERO,
        held_back: 0,
    };
    let mut data = String::new();
    while publisher.sent < mine {
        tokio::select! {
            _ = ticks.tick() => {
                let due = ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(mine);
                let mut queued = false;
                while publisher.sent < due {
                    if publisher.sent - publisher.acked >= cap {
                        out.held_back += 1;
                        break;
                    }
                    let i = j + publisher.sent * conns;
                    data.clear();
                    use std::fmt::Write as _;
                    let _ = write!(
                        data,
                        "{{\"t\":{},\"i\":{i},\"p\":\"{}\"}}",
                        plan.recorder.now_ns(),
                        plan.pad
                    );
                    publisher.queue_to(&plan.channels[(i % n_channels) as usize], &data);
                    queued = true;
                }
                if queued {
                    publisher.flush().await?;
                    out.last_send = start.elapsed();
                }
            }
            read = publisher.read_acks(), if publisher.acked < publisher.sent => read?,
        }
    }
    while publisher.acked < publisher.sent {
        tokio::time::timeout(ACK_TIMEOUT, publisher.read_acks())
            .await
            .context("acknowledgements stopped coming")??;
    }
    out.last_ack = start.elapsed();
    publisher.close().await;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socketio_runs_only_when_selected_and_after_switchboard() {
        use Setup::*;
        assert_eq!(
            Setup::for_peers(&[Peer::Switchboard]),
            [OneNode, ThreeNodes]
        );
        assert_eq!(Setup::for_peers(&[Peer::SocketIo]), [ThreeSocketIo]);
        let both = Setup::for_peers(&[Peer::Switchboard, Peer::SocketIo]);
        assert_eq!(both, [OneNode, ThreeNodes, ThreeSocketIo]);
        assert_eq!(ThreeSocketIo.peer(), Peer::SocketIo);
        assert!(ThreeSocketIo.cluster() && !OneNode.cluster());
    }

    #[test]
    fn three_node_figures_line_up_across_servers() {
        let sio = Setup::ThreeSocketIo.figure_label(10_000.0);
        assert_eq!(sio, "cluster @10k pub/s, 3 nodes via Redis");
        assert_eq!(sio, Setup::ThreeNodes.figure_label(10_000.0));
        assert_eq!(
            Setup::OneNode.figure_label(50_000.0),
            "cluster @50k pub/s, 1 node (memory broker)"
        );
        assert_eq!(Setup::ThreeSocketIo.key(), Setup::ThreeNodes.key());
        // The progress lines tell the two apart.
        assert!(Setup::ThreeSocketIo.describe().contains("Socket.IO"));
        assert!(!Setup::ThreeNodes.describe().contains("Socket.IO"));
    }

    #[test]
    fn each_set_of_nodes_gets_its_own_prefix() {
        let (a, b) = (run_prefix("sbbench-sio"), run_prefix("sbbench-sio"));
        assert_ne!(a, b);
        let pid = std::process::id().to_string();
        assert!(a.starts_with(&format!("sbbench-sio-{pid}-")), "{a}");
    }

    /// A run whose processes used `cpu` shares, on cores `cores` busy.
    fn measured(cpu: &[(&str, f64)], machine_busy: f64, cores: &[f64]) -> Measured {
        Measured {
            publications: 0,
            per_channel: 0,
            publish_secs: 1.0,
            ack_secs: 1.0,
            deliver_secs: 1.0,
            deliveries: 0,
            every: Vec::new(),
            short: 0,
            unreadable: 0,
            disconnected: 0,
            reasons: Vec::new(),
            held_back: 0,
            cpu: cpu.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
            machine_busy,
            machine_steal: 0.0,
            cores: cores.to_vec(),
        }
    }

    #[test]
    fn a_core_filled_by_the_processes_sharing_it_is_the_bottleneck() {
        let cpu = [("node A", 0.34), ("node B", 0.27), ("node C", 0.27)];
        let m = measured(&cpu, 0.72, &[0.47, 0.97]);
        assert_eq!(
            m.bottleneck(),
            "core 1 saturated by the processes sharing it (97% busy; largest user: node A, 34% of a core)"
        );
        let quiet = measured(&cpu, 0.5, &[0.45, 0.55]);
        assert!(quiet.bottleneck().starts_with("no core saturated"));
        let whole = measured(&cpu, 0.95, &[0.95, 0.95]);
        assert!(whole.bottleneck().starts_with("the machine's cores"));
        let one = measured(&[("node", 0.99)], 0.6, &[0.99, 0.2]);
        assert_eq!(one.bottleneck(), "node saturated its core");
        let figures = m.figures("x", 1.0, true);
        assert!(figures.iter().any(|f| f.name.ends_with("core 1 busy")));
    }

    #[test]
    fn the_fan_out_ratio_is_the_median_of_the_rounds() {
        assert_eq!(median(&mut [105.0, 86.0, 93.0]), 93.0);
        assert_eq!(median(&mut [90.0, 100.0]), 95.0);
        assert_eq!(median(&mut [88.0]), 88.0);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn shares_cover_every_message_once() {
        for (count, conns) in [(10, 3), (3, 8), (500_000, 32), (0, 4)] {
            let total: u64 = (0..conns).map(|j| share_len(count, conns, j)).sum();
            assert_eq!(total, count, "{count} messages over {conns} connections");
        }
    }
}
