//! The `switchboard bench` command: measures, with the server on one core,
//! server memory per idle WebSocket connection, fan-out throughput at
//! saturation and publish → deliver latency (see docs/benchmarks.md).
//!
//! The server is this binary run as `serve` in a child process pinned with
//! `taskset` to one CPU (`--server-cpu`, default 0) with one worker thread;
//! the clients run in this process on a single-threaded runtime, meant to be
//! pinned to another CPU (`taskset -c 1 switchboard bench`). Each scenario
//! gets a fresh server. Results are printed as a table with targets and,
//! with `--json`, written with the machine's facts and the exact command.
//!
//! - [`procfs`]: RSS, CPU time, limits and machine facts from `/proc`;
//! - [`server`]: the server child process and its guard;
//! - [`conn`], [`subscriber`], [`publisher`]: the benchmark's clients;
//! - [`memory`], [`fanout`], [`latency`]: the scenarios;
//! - [`report`]: the table and the JSON file.

mod conn;
mod fanout;
mod latency;
mod memory;
mod procfs;
mod publisher;
mod report;
mod server;
mod subscriber;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Map, Value};

use report::Figure;
use server::{Server, ServerOptions};

/// Descriptors beyond the connections: the runtime, the publisher, HTTP probes.
const FD_MARGIN: u64 = 64;

/// A benchmark scenario.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Every scenario, in the order below.
    All,
    /// Server RSS per idle connection.
    Memory,
    /// Deliveries per second at saturation.
    Fanout,
    /// Publish → deliver latency at a fixed rate.
    Latency,
}

/// Arguments of `switchboard bench`. Run it pinned to a core other than the
/// server's, after raising the open-files limit:
/// `ulimit -n 65536; taskset -c 1 switchboard bench --json bench-results.json`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Scenarios to run (comma-separated or repeated); all by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    scenario: Vec<Scenario>,
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
}

impl BenchArgs {
    fn wants(&self, s: Scenario) -> bool {
        self.scenario.is_empty()
            || self.scenario.contains(&Scenario::All)
            || self.scenario.contains(&s)
    }

    /// Most connections open at once in the selected scenarios.
    fn max_connections(&self) -> u64 {
        let mut most = 0;
        if self.wants(Scenario::Memory) {
            most = most.max(self.memory_steps.iter().copied().max().unwrap_or(0));
        }
        if self.wants(Scenario::Fanout) {
            most = most.max(self.fanout_subscribers.iter().copied().max().unwrap_or(0) + 1);
        }
        if self.wants(Scenario::Latency) {
            most = most.max(self.latency_subscribers + 1);
        }
        most as u64
    }
}

/// Runs the benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let limit = procfs::check_open_files(args.max_connections() + FD_MARGIN)?;
    let affinity = procfs::own_affinity();
    if procfs::affinity_includes(&affinity, args.server_cpu) {
        eprintln!(
            "bench: WARNING: this process may run on CPU {} (allowed: {affinity}), the server's \
             core; run it as `taskset -c 1 switchboard bench` so clients and server do not share a core",
            args.server_cpu
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the benchmark runtime")?;
    let machine = procfs::machine_facts();
    let mut figures: Vec<Figure> = Vec::new();
    let mut scenarios = Map::new();
    let outcome = runtime.block_on(run_scenarios(&args, &mut figures, &mut scenarios));

    println!("\n{}", report::table(&figures));
    if let Err(e) = &outcome {
        println!("\nthe benchmark stopped early: {e:#}");
    }
    if let Some(path) = &args.json {
        let results = json!({
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "version": env!("CARGO_PKG_VERSION"),
            "machine": machine,
            "loadavg_at_end": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
            "setup": {
                "server_cpu": args.server_cpu,
                "server_workers": 1,
                "client_affinity": affinity,
                "client_runtime": "tokio current_thread",
                "open_files_limit": limit,
                "queue_max_size": args.queue_max_size,
                "bench_namespace_history_size": args.history_size,
            },
            "figures": figures.iter().map(Figure::to_json).collect::<Vec<_>>(),
            "scenarios": scenarios,
            "completed": outcome.is_ok(),
        });
        report::write_json(path, &results)?;
        println!("\nresults written to {}", path.display());
    }
    outcome
}

async fn run_scenarios(
    args: &BenchArgs,
    figures: &mut Vec<Figure>,
    scenarios: &mut Map<String, Value>,
) -> anyhow::Result<()> {
    let opts = ServerOptions {
        cpu: args.server_cpu,
        queue_max_size: args.queue_max_size.clone(),
        history_size: args.history_size,
    };
    let concurrency = args.connect_concurrency;
    if args.wants(Scenario::Memory) {
        let params = memory::MemoryParams {
            steps: args.memory_steps.clone(),
            settle: Duration::from_millis(args.settle_ms),
            concurrency,
        };
        let mut server = Server::start(&opts)?;
        let (mut f, details) = memory::run(&mut server, &params)
            .await
            .context("memory scenario")?;
        figures.append(&mut f);
        scenarios.insert("memory".into(), details);
    }
    if args.wants(Scenario::Fanout) {
        let params = fanout::FanoutParams {
            subscribers: args.fanout_subscribers.clone(),
            warmup: Duration::from_secs_f64(args.fanout_warmup_secs.max(0.0)),
            window: Duration::from_secs_f64(args.fanout_secs.max(0.1)),
            in_flight: args.in_flight,
            max_lag: args.max_lag,
            payload_bytes: args.payload_bytes,
            concurrency,
        };
        let mut server = Server::start(&opts)?;
        let (mut f, details) = fanout::run(&mut server, &params)
            .await
            .context("fanout scenario")?;
        figures.append(&mut f);
        scenarios.insert("fanout".into(), details);
    }
    if args.wants(Scenario::Latency) {
        let params = latency::LatencyParams {
            subscribers: args.latency_subscribers,
            rate: args.latency_rate,
            secs: args.latency_secs,
            payload_bytes: args.payload_bytes,
            concurrency,
        };
        let mut server = Server::start(&opts)?;
        let (mut f, details) = latency::run(&server, &params)
            .await
            .context("latency scenario")?;
        server.check_alive()?;
        figures.append(&mut f);
        scenarios.insert("latency".into(), details);
    }
    Ok(())
}
