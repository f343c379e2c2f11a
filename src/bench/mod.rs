//! The `switchboard bench` command: measures, with the server on one core,
//! server memory per idle WebSocket connection, fan-out throughput at
//! saturation and publish → deliver latency (see docs/benchmarks.md); and
//! for the HTTP transports, memory per idle SSE and long-polling session,
//! SSE fan-out next to WebSocket's, and long-polling delivery latency.
//!
//! The server is this binary run as `serve` in a child process pinned with
//! `taskset` to one CPU (`--server-cpu`, default 0) with one worker thread;
//! the clients run in this process on a single-threaded runtime, meant to be
//! pinned to another CPU (`taskset -c 1 switchboard bench`). Each scenario
//! gets a fresh server. `--peer socketio` measures a Socket.IO server on
//! Node instead, pinned the same way, with the same clients speaking its
//! protocol; `--peer all` measures both, one after the other for each
//! scenario, and prints them side by side. Results are printed as a table
//! with targets and, with `--json`, written with the machine's facts and the
//! exact command.
//!
//! - [`procfs`]: RSS, CPU time, limits and machine facts from `/proc`;
//! - [`peer`], [`server`]: the servers under test, their child process and
//!   its guard;
//! - [`protocol`]: the wire protocols (Switchboard's, Socket.IO's);
//! - [`conn`], [`subscriber`], [`publisher`]: the benchmark's clients;
//!   [`http`], [`sse`], [`poll`]: the HTTP/1.1 client, SSE and long-polling
//!   subscribers;
//! - [`memory`], [`fanout`], [`latency`]: the scenarios (each for one or
//!   more transports); [`cluster`]: three nodes through Redis next to one
//!   node and, with the Socket.IO peer, three Socket.IO nodes through the
//!   same Redis (only when asked for with `--scenario cluster`);
//! - [`report`], [`compare`]: the tables and the JSON file.

mod cluster;
mod compare;
mod conn;
mod fanout;
mod http;
mod latency;
mod memory;
mod peer;
mod poll;
mod procfs;
mod protocol;
mod publisher;
mod report;
mod server;
mod sse;
mod subscriber;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};

use peer::{Peer, PeerChoice, SocketIoPeer};
use report::Figure;
use server::{Server, ServerOptions};
use subscriber::Transport;

/// Descriptors beyond the connections: the runtime, the publisher, HTTP probes.
const FD_MARGIN: u64 = 64;

/// A benchmark scenario.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Every scenario, in the order below.
    All,
    /// Server RSS per idle WebSocket connection.
    Memory,
    /// Server RSS per idle SSE session (Switchboard only).
    MemorySse,
    /// Server RSS per idle long-polling session, one poll pending
    /// (Switchboard only).
    MemoryPoll,
    /// Deliveries per second at saturation, WebSocket subscribers.
    Fanout,
    /// The same with SSE subscribers, and its ratio to `fanout`
    /// (Switchboard only).
    FanoutSse,
    /// Publish → deliver latency at a fixed rate, WebSocket subscribers.
    Latency,
    /// Publish → deliver latency to long-polling clients (Switchboard only).
    LatencyPoll,
    /// Cross-node publish → deliver latency through Redis (three nodes)
    /// next to one node, and local fan-out on a Redis-broker node; with
    /// the Socket.IO peer, also three Socket.IO nodes through Redis
    /// (`@socket.io/redis-adapter`) under the same load (needs Redis and
    /// PostgreSQL; not part of `all`).
    Cluster,
}

impl Scenario {
    /// Every scenario, in the order they run.
    const ORDER: [Scenario; 7] = [
        Scenario::Memory,
        Scenario::MemorySse,
        Scenario::MemoryPoll,
        Scenario::Fanout,
        Scenario::FanoutSse,
        Scenario::Latency,
        Scenario::LatencyPoll,
    ];

    /// Key in the JSON results and in figures.
    fn key(self) -> &'static str {
        match self {
            Scenario::All => "all",
            Scenario::Memory => "memory",
            Scenario::MemorySse => "memory_sse",
            Scenario::MemoryPoll => "memory_poll",
            Scenario::Fanout => "fanout",
            Scenario::FanoutSse => "fanout_sse",
            Scenario::Latency => "latency",
            Scenario::LatencyPoll => "latency_poll",
            Scenario::Cluster => "cluster",
        }
    }

    /// The subscribers' transport.
    fn transport(self) -> Transport {
        match self {
            Scenario::MemorySse | Scenario::FanoutSse => Transport::Sse,
            Scenario::MemoryPoll | Scenario::LatencyPoll => Transport::LongPoll,
            _ => Transport::WebSocket,
        }
    }

    /// Whether the scenario can run on `peer` (the Socket.IO peer speaks
    /// WebSocket only).
    fn applies_to(self, peer: Peer) -> bool {
        self.transport() == Transport::WebSocket || peer == Peer::Switchboard
    }
}

/// Arguments of `switchboard bench`. Run it pinned to a core other than the
/// server's, after raising the open-files limit:
/// `ulimit -n 65536; taskset -c 1 switchboard bench --json bench-results.json`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Scenarios to run (comma-separated or repeated); all by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    scenario: Vec<Scenario>,
    /// The server to measure: Switchboard, the Socket.IO peer
    /// (bench/peers/socketio, needs `node`), or both side by side.
    #[arg(long, value_enum, default_value = "switchboard")]
    peer: PeerChoice,
    /// The Socket.IO peer's folder (default: bench/peers/socketio under the
    /// current directory, else under the source tree of this build).
    #[arg(long)]
    socketio_dir: Option<PathBuf>,
    /// Also write the results, machine facts and command as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// memory: total idle connections after each step.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    memory_steps: Vec<usize>,
    /// memory: quiet time before reading the server's RSS, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    /// fanout: subscriber counts, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    fanout_subscribers: Vec<usize>,
    /// fanout: seconds of publishing before the measured window.
    #[arg(long, default_value_t = 1.0)]
    fanout_warmup_secs: f64,
    /// fanout: seconds in the measured window.
    #[arg(long, default_value_t = 5.0)]
    fanout_secs: f64,
    /// fanout: publishes in flight (sent, not yet acknowledged).
    #[arg(long, default_value_t = 64)]
    in_flight: u64,
    /// fanout: most publications the publisher may be ahead of the slowest
    /// probe subscriber.
    #[arg(long, default_value_t = 256)]
    max_lag: u64,
    /// Approximate size of each message's `data`, in bytes.
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// latency: subscribers.
    #[arg(long, default_value_t = 5000)]
    latency_subscribers: usize,
    /// latency: messages per second.
    #[arg(long, default_value_t = 20.0)]
    latency_rate: f64,
    /// latency: seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    latency_secs: f64,
    /// latency-poll: long-polling clients.
    #[arg(long, default_value_t = 10)]
    poll_latency_clients: usize,
    /// latency-poll: messages per second.
    #[arg(long, default_value_t = 10.0)]
    poll_latency_rate: f64,
    /// latency-poll: seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    poll_latency_secs: f64,
    /// The CPU the server is pinned to.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// The server's outbound queue bound per connection (client.queue_max_size).
    #[arg(long, default_value = "8MiB")]
    queue_max_size: String,
    /// History size of the `bench` namespace (in memory).
    #[arg(long, default_value_t = 100)]
    history_size: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// cluster: total publication rates to measure, one run each on one
    /// node and on three nodes.
    #[arg(long, value_delimiter = ',', default_value = "50000,10000")]
    cluster_rate: Vec<f64>,
    /// cluster: channels the publications are spread over (a subscriber per
    /// channel on each of nodes B and C).
    #[arg(long, default_value_t = 1000)]
    cluster_channels: usize,
    /// cluster: seconds of publishing per run.
    #[arg(long, default_value_t = 10.0)]
    cluster_secs: f64,
    /// cluster: publisher connections (on node A).
    #[arg(long, default_value_t = 32)]
    cluster_publishers: usize,
    /// cluster: most publishes unacknowledged, all publishers together.
    #[arg(long, default_value_t = 4096)]
    cluster_in_flight: u64,
    /// cluster: CPUs of nodes A (publishers), B and C (subscribers).
    #[arg(long, value_delimiter = ',', default_value = "0,1,1")]
    cluster_cpus: Vec<usize>,
    /// cluster: subscribers of one channel in the local fan-out comparison.
    #[arg(long, default_value_t = 1000)]
    cluster_fanout_subscribers: usize,
    /// cluster: rounds of the local fan-out comparison (memory node, then
    /// Redis node, each round); the ratio reported is the rounds' median.
    #[arg(long, default_value_t = 3)]
    cluster_fanout_rounds: usize,
    /// cluster: the nodes' broker.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    cluster_broker: String,
    /// cluster: the nodes' store.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    cluster_store: String,
}

impl BenchArgs {
    fn wants(&self, s: Scenario) -> bool {
        if s == Scenario::Cluster {
            // Not part of `all`: it needs Redis and PostgreSQL and takes
            // about two minutes.
            return self.scenario.contains(&s);
        }
        self.scenario.is_empty()
            || self.scenario.contains(&Scenario::All)
            || self.scenario.contains(&s)
    }

    /// Most connections open at once in the selected scenarios (SSE
    /// setups also hold up to `--connect-concurrency` connections for
    /// their commands).
    fn max_connections(&self) -> u64 {
        let mut most = 0;
        let steps = self.memory_steps.iter().copied().max().unwrap_or(0);
        let fanout = self.fanout_subscribers.iter().copied().max().unwrap_or(0) + 1;
        if self.wants(Scenario::Memory) || self.wants(Scenario::MemoryPoll) {
            most = most.max(steps);
        }
        if self.wants(Scenario::MemorySse) {
            most = most.max(steps + self.connect_concurrency);
        }
        if self.wants(Scenario::Fanout) {
            most = most.max(fanout);
        }
        if self.wants(Scenario::FanoutSse) {
            most = most.max(fanout + self.connect_concurrency);
        }
        if self.wants(Scenario::Latency) {
            most = most.max(self.latency_subscribers + 1);
        }
        if self.wants(Scenario::LatencyPoll) {
            most = most.max(self.poll_latency_clients + 1);
        }
        if self.wants(Scenario::Cluster) {
            let runs = 2 * self.cluster_channels + self.cluster_publishers;
            most = most.max(runs.max(self.cluster_fanout_subscribers + 1));
        }
        most as u64
    }
}

/// What a run measured, per server.
#[derive(Default)]
struct Outcome {
    figures: Vec<(Peer, Figure)>,
    /// Per server key, per scenario: the scenario's details.
    scenarios: Map<String, Value>,
    /// Scenarios that failed: server, scenario, error.
    failures: Vec<Value>,
    /// Scenarios that do not apply to a server (not run on it).
    skipped: Vec<(Peer, &'static str)>,
    /// Scenarios a server ran only part of (the cluster's single node and
    /// local fan-out are Switchboard's alone): its missing figures read
    /// `n/a` in the side-by-side table rather than `failed`.
    partial: Vec<(Peer, &'static str)>,
}

/// Runs the benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let peers = args.peer.peers();
    let limit = procfs::check_open_files(args.max_connections() + FD_MARGIN)?;
    let affinity = procfs::own_affinity();
    if procfs::affinity_includes(&affinity, args.server_cpu) {
        eprintln!(
            "bench: WARNING: this process may run on CPU {} (allowed: {affinity}), the server's \
             core; run it as `taskset -c 1 switchboard bench` so clients and server do not share a core",
            args.server_cpu
        );
    }
    let socketio = match peers.contains(&Peer::SocketIo) {
        true => Some(SocketIoPeer::prepare(args.socketio_dir.as_deref())?),
        false => None,
    };
    let opts = ServerOptions {
        cpu: args.server_cpu,
        queue_max_size: args.queue_max_size.clone(),
        history_size: args.history_size,
        socketio,
        extra_env: Vec::new(),
        secrets: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the benchmark runtime")?;
    let machine = procfs::machine_facts();
    let mut out = Outcome::default();
    runtime.block_on(run_scenarios(&args, &opts, &peers, &mut out));

    if let [only] = peers[..] {
        let figures: Vec<Figure> = out.figures.iter().map(|(_, f)| f.clone()).collect();
        println!("\n{}:\n{}", only.name(), report::table(&figures));
    } else {
        let not_measured: Vec<(Peer, &str)> =
            out.skipped.iter().chain(&out.partial).copied().collect();
        println!("\n{}", compare::table(&peers, &out.figures, &not_measured));
    }
    eprintln!(
        "bench: load average at start {}, at end {}",
        machine["loadavg_at_start"].as_str().unwrap_or_default(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    for f in &out.failures {
        println!(
            "\n{} {} scenario failed: {}",
            f["peer"].as_str().unwrap_or_default(),
            f["scenario"].as_str().unwrap_or_default(),
            f["error"].as_str().unwrap_or_default()
        );
    }
    if let Some(path) = &args.json {
        let mut setup = json!({
            "server_cpu": args.server_cpu,
            "client_affinity": affinity,
            "client_runtime": "tokio current_thread",
            "open_files_limit": limit,
            "switchboard": {
                "workers": 1,
                "queue_max_size": args.queue_max_size,
                "bench_namespace_history_size": args.history_size,
            },
        });
        if let Some(sio) = &opts.socketio {
            setup["socketio"] = sio.to_json(args.server_cpu);
        }
        let results = json!({
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "version": env!("CARGO_PKG_VERSION"),
            "peers": peers.iter().map(|p| p.key()).collect::<Vec<_>>(),
            "machine": machine,
            "loadavg_at_end": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
            "setup": setup,
            "figures": out.figures.iter().map(|(p, f)| {
                let mut v = f.to_json();
                v["peer"] = json!(p.key());
                v
            }).collect::<Vec<_>>(),
            "comparison": (peers.len() > 1).then(|| compare::to_json(&peers, &out.figures)),
            "scenarios": out.scenarios,
            "failures": out.failures,
            "not_applicable": out.skipped.iter()
                .map(|(p, s)| json!({ "peer": p.key(), "scenario": s }))
                .collect::<Vec<_>>(),
            "completed": out.failures.is_empty(),
        });
        report::write_json(path, &results)?;
        println!("\nresults written to {}", path.display());
    }
    if !out.failures.is_empty() {
        bail!("{} scenario run(s) failed (see above)", out.failures.len());
    }
    Ok(())
}

/// Runs every selected scenario on every selected server, one server after
/// the other for each scenario, so that both see the machine in the same
/// state as far as possible. A failure is recorded and the run goes on.
async fn run_scenarios(args: &BenchArgs, opts: &ServerOptions, peers: &[Peer], out: &mut Outcome) {
    let order = Scenario::ORDER.into_iter().chain([Scenario::Cluster]);
    for scenario in order.filter(|&s| args.wants(s)) {
        let name = scenario.key();
        if scenario == Scenario::Cluster {
            run_cluster(args, opts, peers, out).await;
            continue;
        }
        for &peer in peers {
            if !scenario.applies_to(peer) {
                if peers.len() > 1 {
                    eprintln!(
                        "== {name}: {} == not applicable (WebSocket only)",
                        peer.name()
                    );
                }
                out.skipped.push((peer, name));
                continue;
            }
            if peers.len() > 1 {
                eprintln!("== {name}: {} ==", peer.name());
            }
            let result = match Server::start(peer, opts) {
                Ok(mut server) => run_one(args, scenario, &mut server).await,
                Err(e) => Err(e),
            };
            record(out, peer, name, result);
        }
    }
    add_sse_ratios(&mut out.figures);
}

/// Runs the `cluster` scenario once for all `peers` (it starts its own
/// servers and interleaves the servers' runs at each rate).
async fn run_cluster(args: &BenchArgs, opts: &ServerOptions, peers: &[Peer], out: &mut Outcome) {
    let name = Scenario::Cluster.key();
    if peers.len() > 1 {
        let names: Vec<&str> = peers.iter().map(|p| p.name()).collect();
        eprintln!("== {name}: {} ==", names.join(", "));
    }
    for part in cluster::run(opts, &cluster_params(args), peers).await {
        let peer = part.peer;
        if peer == Peer::SocketIo && peers.contains(&Peer::Switchboard) && !part.figures.is_empty()
        {
            out.partial.push((peer, name));
        }
        if part.errors.is_empty() || !part.figures.is_empty() {
            record(out, peer, name, Ok((part.figures, part.details)));
        }
        for e in part.errors {
            record(out, peer, name, Err(e.context("cluster scenario")));
        }
    }
}

/// Adds one scenario's outcome on `peer` to `out`.
fn record(
    out: &mut Outcome,
    peer: Peer,
    name: &'static str,
    result: anyhow::Result<(Vec<Figure>, Value)>,
) {
    match result {
        Ok((figures, details)) => {
            out.figures.extend(figures.into_iter().map(|mut f| {
                f.scenario = name;
                (peer, f)
            }));
            let entry = out.scenarios.entry(peer.key()).or_insert_with(|| json!({}));
            entry[name] = details;
        }
        Err(e) => {
            let error = format!("{e:#}");
            eprintln!("bench: {name} scenario on {} failed: {error}", peer.name());
            out.failures
                .push(json!({ "peer": peer.key(), "scenario": name, "error": error }));
        }
    }
}

/// After each SSE fan-out deliveries/s figure, its share of the WebSocket
/// figure for the same subscriber count measured by the same run (target:
/// at least 70%). Without the WebSocket run (`--scenario fanout-sse` alone)
/// there is no ratio, and a note says so.
fn add_sse_ratios(figures: &mut Vec<(Peer, Figure)>) {
    let mut at = 0;
    while at < figures.len() {
        let (peer, f) = &figures[at];
        at += 1;
        let Some(rest) = f.name.strip_prefix("fanout SSE ") else {
            continue;
        };
        let Some(size) = rest.strip_suffix(": deliveries/s") else {
            continue;
        };
        let size = size.to_owned();
        let ws_name = format!("fanout {size}: deliveries/s");
        let ws = figures
            .iter()
            .find(|(p, w)| p == peer && w.name == ws_name)
            .map(|(_, w)| w.value);
        let (peer, sse) = (*peer, f.value);
        let Some(ws) = ws.filter(|&v| v > 0.0) else {
            eprintln!(
                "bench: no WebSocket fan-out to {size} in this run: run `--scenario fanout,fanout-sse` \
                 for the SSE / WebSocket ratio"
            );
            continue;
        };
        let mut ratio = Figure::new(
            format!("fanout SSE {size}: SSE / WebSocket deliveries/s"),
            100.0 * sse / ws,
            "%",
            Some(report::Target::AtLeast(70.0)),
        );
        ratio.scenario = Scenario::FanoutSse.key();
        figures.insert(at, (peer, ratio));
        at += 1;
        // The server's CPU per delivery, a steadier comparison than rates
        // when other processes share the machine.
        let cpu = |name: &str| {
            figures
                .iter()
                .find(|(p, f)| *p == peer && f.name == name)
                .map(|(_, f)| f.value)
        };
        let ws_cpu = cpu(&format!("fanout {size}: server CPU per delivery"));
        let sse_cpu = cpu(&format!("fanout SSE {size}: server CPU per delivery"));
        if let (Some(ws_cpu), Some(sse_cpu)) = (ws_cpu, sse_cpu.filter(|&v| v > 0.0)) {
            let mut f = Figure::new(
                format!("fanout SSE {size}: server CPU per delivery, SSE / WebSocket"),
                sse_cpu / ws_cpu.max(1e-9),
                "x",
                None,
            );
            f.scenario = Scenario::FanoutSse.key();
            figures.insert(at, (peer, f));
            at += 1;
        }
    }
}

/// The `cluster` scenario's parameters.
fn cluster_params(args: &BenchArgs) -> cluster::ClusterParams {
    cluster::ClusterParams {
        rates: args.cluster_rate.clone(),
        channels: args.cluster_channels,
        secs: args.cluster_secs,
        publishers: args.cluster_publishers,
        in_flight: args.cluster_in_flight,
        payload_bytes: args.payload_bytes,
        concurrency: args.connect_concurrency,
        single_cpu: args.server_cpu,
        node_cpus: args.cluster_cpus.clone(),
        broker: args.cluster_broker.clone(),
        store: args.cluster_store.clone(),
        fanout_rounds: args.cluster_fanout_rounds.max(1),
        fanout: fanout::FanoutParams {
            subscribers: vec![args.cluster_fanout_subscribers],
            warmup: Duration::from_secs_f64(args.fanout_warmup_secs.max(0.0)),
            window: Duration::from_secs_f64(args.fanout_secs.max(0.1)),
            in_flight: args.in_flight,
            max_lag: args.max_lag,
            payload_bytes: args.payload_bytes,
            concurrency: args.connect_concurrency,
            transport: Transport::WebSocket,
        },
    }
}

/// Runs `scenario` on a fresh `server`.
async fn run_one(
    args: &BenchArgs,
    scenario: Scenario,
    server: &mut Server,
) -> anyhow::Result<(Vec<Figure>, Value)> {
    let concurrency = args.connect_concurrency;
    let transport = scenario.transport();
    match scenario {
        Scenario::Memory | Scenario::MemorySse | Scenario::MemoryPoll => {
            let params = memory::MemoryParams {
                steps: args.memory_steps.clone(),
                settle: Duration::from_millis(args.settle_ms),
                concurrency,
                transport,
            };
            memory::run(server, &params)
                .await
                .with_context(|| format!("{} scenario", scenario.key()))
        }
        Scenario::Fanout | Scenario::FanoutSse => {
            let params = fanout::FanoutParams {
                subscribers: args.fanout_subscribers.clone(),
                warmup: Duration::from_secs_f64(args.fanout_warmup_secs.max(0.0)),
                window: Duration::from_secs_f64(args.fanout_secs.max(0.1)),
                in_flight: args.in_flight,
                max_lag: args.max_lag,
                payload_bytes: args.payload_bytes,
                concurrency,
                transport,
            };
            fanout::run(server, &params)
                .await
                .with_context(|| format!("{} scenario", scenario.key()))
        }
        Scenario::LatencyPoll => {
            let params = latency::PollLatencyParams {
                clients: args.poll_latency_clients,
                rate: args.poll_latency_rate,
                secs: args.poll_latency_secs,
                payload_bytes: args.payload_bytes,
                concurrency,
            };
            let result = latency::run_long_poll(server, &params)
                .await
                .context("latency_poll scenario")?;
            server.check_alive()?;
            Ok(result)
        }
        Scenario::All => bail!("`all` is not one scenario"),
        Scenario::Cluster => bail!("`cluster` starts its own servers"),
        Scenario::Latency => {
            let params = latency::LatencyParams {
                subscribers: args.latency_subscribers,
                rate: args.latency_rate,
                secs: args.latency_secs,
                payload_bytes: args.payload_bytes,
                concurrency,
            };
            let result = latency::run(server, &params)
                .await
                .context("latency scenario")?;
            server.check_alive()?;
            Ok(result)
        }
    }
}
