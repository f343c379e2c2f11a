//! Scenarios `fanout` and `fanout-sse`: deliveries per second at saturation
//! to S subscribers of one channel, subscribed over WebSockets or over SSE
//! (the publisher is a WebSocket in both).
//!
//! For each S (1,000 and 5,000 by default; fresh connections per run, the
//! previous ones closed first) S subscribers join `bench:fanout` and one
//! publisher connection (on a thread of its own, same CPU) publishes
//! ~100-byte messages as fast as the server acknowledges, with W publishes
//! in flight. The publisher also stays at
//! most L publications ahead of the slowest of a few probe subscribers, so
//! the server's queues stay bounded and the rate is one it can sustain.
//! After a warm-up, the publications received by all subscribers and the
//! acknowledged publishes are counted over a fixed window; the CPU time of
//! the server and of this process over the same window says which side was
//! the bottleneck. Finally publishing stops and every subscriber must reach
//! the same count as there were publications: a drop or a disconnect is
//! reported.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::procfs::{rss_kib, CpuMeter};
use super::publisher::{padding_data, spawn_saturating, Saturation};
use super::report::{Figure, Target};
use super::server::Server;
use super::subscriber::{probes, wait_all_received, Channels, Fleet, FleetSpec, Mode, Transport};

/// Parameters of the scenario.
#[derive(Clone, Debug)]
pub struct FanoutParams {
    /// Subscriber counts, one run each.
    pub subscribers: Vec<usize>,
    /// Seconds of publishing before the window.
    pub warmup: Duration,
    /// The measured window.
    pub window: Duration,
    /// Publishes in flight.
    pub in_flight: u64,
    /// Most publications ahead of the slowest probe subscriber.
    pub max_lag: u64,
    /// Size of each message's data.
    pub payload_bytes: usize,
    /// Connection setups in flight.
    pub concurrency: usize,
    /// How the subscribers are connected.
    pub transport: Transport,
}

/// The figures' label for `s` subscribers: `fanout 5k subs` (WebSocket),
/// `fanout SSE 5k subs`.
pub fn label(transport: Transport, s: usize) -> String {
    let k = s as f64 / 1000.0;
    match transport {
        Transport::WebSocket => format!("fanout {k}k subs"),
        t => format!("fanout {} {k}k subs", t.name()),
    }
}

/// Runs the scenario on `server` for every subscriber count.
pub async fn run(server: &mut Server, p: &FanoutParams) -> anyhow::Result<(Vec<Figure>, Value)> {
    let mut figures = Vec::new();
    let mut runs = Vec::new();
    for &s in &p.subscribers {
        let (mut f, details) = run_one(server, p, s).await?;
        figures.append(&mut f);
        runs.push(details);
        let left = server.wait_connections_at_most(0, Duration::from_secs(10))?;
        if left > 0 {
            eprintln!("fanout: warning: the server still counts {left} connections after closing");
        }
    }
    Ok((figures, json!({ "runs": runs })))
}

async fn run_one(
    server: &mut Server,
    p: &FanoutParams,
    s: usize,
) -> anyhow::Result<(Vec<Figure>, Value)> {
    let progress = Arc::new(Notify::new());
    let spec = FleetSpec {
        endpoint: server.endpoint(),
        transport: p.transport,
        token: server.endpoint().token("bench-sub")?,
        channels: Channels::Shared("bench:fanout".to_owned()),
        mode: Mode::Count,
        concurrency: p.concurrency,
        progress: Some(progress.clone()),
    };
    let tag = match p.transport {
        Transport::WebSocket => "fanout".to_owned(),
        t => format!("fanout {}", t.name()),
    };
    eprintln!("{tag}: opening {s} subscribers…");
    let mut fleet = Fleet::new();
    fleet.add(&spec, s).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let cfg = Saturation {
        window: p.in_flight.max(1),
        max_lag: p.max_lag.max(1),
        probes: probes(&fleet, 8)?,
        progress,
        stop: stop.clone(),
        acked: acked.clone(),
    };
    let data = padding_data(p.payload_bytes);
    let publishing = spawn_saturating(
        server.endpoint(),
        server.endpoint().token("bench-pub")?.to_string(),
        "bench:fanout".to_owned(),
        data,
        cfg,
    );
    eprintln!(
        "{tag}: publishing to {s} subscribers: {:?} warm-up, {:?} measured…",
        p.warmup, p.window
    );

    tokio::time::sleep(p.warmup).await;
    let (delivered0, reads0) = (fleet.total(), fleet.reads());
    let (acked0, t0) = (acked.load(Relaxed), Instant::now());
    let meter = CpuMeter::start(server.pid(), server.cpu)?;
    tokio::time::sleep(p.window).await;
    let (delivered1, reads1) = (fleet.total(), fleet.reads());
    let (acked1, secs) = (acked.load(Relaxed), t0.elapsed().as_secs_f64());
    let cpu = meter.stop()?;
    // What the server holds at saturation (queues, retransmit logs, socket
    // buffers), read before publishing stops.
    let rss_at_window_end = rss_kib(server.pid())?;
    stop.store(true, Relaxed);

    let published = match publishing
        .await
        .context("the publisher thread ended without a result")?
    {
        Ok(n) => n,
        Err(e) => {
            server.check_alive()?;
            return Err(e.context(format!("publisher ({s} subscribers)")));
        }
    };
    let (min, max) = wait_all_received(&fleet, published, Duration::from_secs(10)).await;
    let (ended, reasons) = fleet.ended(5);
    let short = fleet
        .stats
        .iter()
        .filter(|st| st.count.load(Relaxed) < published)
        .count();
    fleet.end(server, "bench-sub").await;

    let delivered = delivered1 - delivered0;
    // How many frames the server coalesced into what one read returned.
    let per_read = delivered as f64 / (reads1 - reads0).max(1) as f64;
    let deliveries = delivered as f64 / secs;
    let publications = (acked1 - acked0) as f64 / secs;
    // Cross-check: acknowledged publications times subscribers. The two
    // differ by the change in what is queued between the two snapshots
    // (bounded by --max-lag + --in-flight publications per subscriber).
    let by_acks = publications * s as f64;
    let server_us_per_delivery = cpu.server_secs * 1e6 / (delivered.max(1) as f64);
    let client_us_per_delivery = cpu.client_secs * 1e6 / (delivered.max(1) as f64);
    let label = label(p.transport, s);
    // The target is stated for 5,000 WebSocket subscribers; SSE's is
    // relative to WebSocket's (a row added once both ran, see mod.rs).
    let target =
        (s == 5000 && p.transport == Transport::WebSocket).then_some(Target::AtLeast(500_000.0));
    let fig = |what: &str, value: f64, unit: &'static str| {
        Figure::new(format!("{label}: {what}"), value, unit, None)
    };
    let complete = min == published && max == published && ended == 0;
    let figures: Vec<Figure> = [
        Figure::new(format!("{label}: deliveries/s"), deliveries, "/s", target),
        fig("publications/s", publications, "/s"),
        fig("server CPU per delivery", server_us_per_delivery, "us"),
        fig("client CPU per delivery", client_us_per_delivery, "us"),
        fig("publications per client read (coalescing)", per_read, ""),
        Figure::new(
            format!("{label}: subscribers missing publications"),
            short as f64,
            "",
            Some(Target::AtMost(0.0)),
        ),
        fig(
            "server RSS at the end of the window",
            rss_at_window_end as f64 / 1024.0,
            "MiB",
        ),
    ]
    .into_iter()
    .chain(cpu.figures(&label))
    .collect::<Vec<_>>();
    eprintln!(
        "{tag} {s}: {deliveries:.0} deliveries/s, {publications:.0} publications/s, \
         server core {:.0}% busy, client core {:.0}% busy ({})",
        cpu.server_of_available() * 100.0,
        cpu.client_of_available() * 100.0,
        cpu.verdict()
    );
    if (by_acks - deliveries).abs() > 0.05 * deliveries.max(1.0) {
        eprintln!(
            "{tag} {s}: note: publications/s x subscribers = {by_acks:.0}/s differs from the \
             counted deliveries by more than 5%: queues grew or shrank during the window; \
             a longer --fanout-secs or a smaller --max-lag narrows this"
        );
    }
    if !complete {
        eprintln!(
            "{tag} {s}: WARNING: {published} published; per-subscriber counts {min}..{max}; \
             {short} short, {ended} disconnected: {reasons:?}"
        );
    }
    if let Some(w) = cpu.interference_warning() {
        eprintln!("{tag} {s}: {w}");
    }
    let details = json!({
        "transport": p.transport.name(),
        "subscribers": s,
        "window_secs": secs,
        "warmup_secs": p.warmup.as_secs_f64(),
        "in_flight_window": p.in_flight,
        "max_lag": p.max_lag,
        "payload_bytes": p.payload_bytes,
        "deliveries_in_window": delivered1 - delivered0,
        "publications_in_window": acked1 - acked0,
        "deliveries_per_sec": deliveries,
        "publications_per_sec_times_subscribers": by_acks,
        "server_cpu_us_per_delivery": server_us_per_delivery,
        "client_cpu_us_per_delivery": client_us_per_delivery,
        "publications_per_client_read": per_read,
        "publications_per_sec": publications,
        "published_total": published,
        "per_subscriber_min": min,
        "per_subscriber_max": max,
        "subscribers_short": short,
        "disconnected_subscribers": ended,
        "disconnect_reasons": reasons,
        "every_subscriber_got_every_publication": complete,
        "server_rss_kib_at_window_end": rss_at_window_end,
        "cpu": cpu.to_json(),
    });
    Ok((figures, details))
}
