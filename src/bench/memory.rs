//! Scenarios `memory`, `memory-sse`, `memory-poll`: server RSS per idle
//! WebSocket connection, per idle SSE session (an open event stream) and per
//! idle long-polling session (one `GET` poll pending).
//!
//! Opens connections in steps (1,000, then 9,000 more up to 10,000, by
//! default) on one server. Each connection logs in, subscribes to a
//! channel (room) of its own (`bench:idle-<i>`) and then idles: no traffic but the
//! 25 s heartbeat. After each step the server is left alone to settle and its
//! `VmRSS` is read from `/proc/<pid>/status`. The figure is the slope between
//! the first and the last step, which cancels the fixed cost of the process:
//! (RSS(last) − RSS(first)) / (last − first connections). The server must
//! count every session connected (`switchboard_connections`) and, for SSE,
//! none detached (`switchboard_sessions_detached`); for long-polling the
//! detached sessions are reported (a poll answered empty after
//! `client.poll_hold` leaves its session detached until the client's next
//! `GET` arrives, a moment later).

use std::time::Duration;

use anyhow::bail;
use serde_json::{json, Value};

use super::procfs::rss_kib;
use super::report::{Figure, Target};
use super::server::Server;
use super::subscriber::{Channels, Fleet, FleetSpec, Mode, Transport};

/// Parameters of the scenario.
#[derive(Clone, Debug)]
pub struct MemoryParams {
    /// Total connections after each step, increasing.
    pub steps: Vec<usize>,
    /// Quiet time before reading RSS.
    pub settle: Duration,
    /// Connection setups in flight.
    pub concurrency: usize,
    /// How the idle clients are connected.
    pub transport: Transport,
}

/// Figure names and the target for one transport.
struct Names {
    /// `memory`, `memory SSE`, `memory long-poll`.
    label: &'static str,
    /// `connection` or `session`.
    unit: &'static str,
    /// KiB per idle connection.
    target: f64,
}

fn names(t: Transport) -> Names {
    match t {
        Transport::WebSocket => Names {
            label: "memory",
            unit: "connection",
            target: 4.0,
        },
        Transport::Sse => Names {
            label: "memory SSE",
            unit: "session",
            target: 6.0,
        },
        Transport::LongPoll => Names {
            label: "memory long-poll",
            unit: "session",
            target: 6.0,
        },
    }
}

/// Runs the scenario on `server`; returns its figures and details.
pub async fn run(server: &mut Server, p: &MemoryParams) -> anyhow::Result<(Vec<Figure>, Value)> {
    if p.steps.len() < 2 || p.steps.windows(2).any(|w| w[0] >= w[1]) || p.steps[0] == 0 {
        bail!("--memory-steps needs at least two increasing, non-zero counts (e.g. 1000,10000)");
    }
    let names = names(p.transport);
    let (label, what) = (names.label, names.unit);
    let kind = match p.transport {
        Transport::WebSocket => "",
        Transport::Sse => "SSE ",
        Transport::LongPoll => "long-poll ",
    };
    let spec = FleetSpec {
        endpoint: server.endpoint(),
        transport: p.transport,
        token: server.endpoint().token("bench-idle")?,
        channels: Channels::PerConnection("bench:idle-".to_owned()),
        mode: Mode::Count,
        concurrency: p.concurrency,
        progress: None,
    };
    tokio::time::sleep(p.settle).await;
    let baseline = rss_kib(server.pid())?;
    eprintln!("{label}: server RSS with no {what}: {baseline} KiB");
    let mut fleet = Fleet::new();
    let mut points = Vec::new();
    let mut detached_at = Vec::new();
    for &n in &p.steps {
        let more = n - fleet.stats.len();
        eprintln!("{label}: opening {more} idle {kind}{what}s (total {n})…");
        fleet.add(&spec, more).await?;
        tokio::time::sleep(p.settle).await;
        server.check_alive()?;
        let counted = server.connections()? as usize;
        if counted != n {
            bail!("the server counts {counted} connections, expected {n}");
        }
        let (ended, reasons) = fleet.ended(3);
        if ended > 0 {
            bail!("{ended} idle {what}s were closed by the server: {reasons:?}");
        }
        let rss = rss_kib(server.pid())?;
        // Only Switchboard has sessions (and the gauge).
        let detached = match p.transport {
            Transport::WebSocket => None,
            _ => Some(server.metric("switchboard_sessions_detached")? as u64),
        };
        if p.transport == Transport::Sse && detached.unwrap_or(0) > 0 {
            eprintln!(
                "{label}: WARNING: the server counts {} detached sessions with every SSE stream open",
                detached.unwrap_or(0)
            );
        }
        let note = detached.map_or_else(String::new, |d| format!(", {d} sessions detached"));
        eprintln!("{label}: {n} {what}s: server RSS {rss} KiB{note}");
        points.push((n, rss));
        detached_at.push(detached);
    }
    fleet.close().await;

    let (n0, rss0) = points[0];
    let (n1, rss1) = points[points.len() - 1];
    let slope = (rss1 as f64 - rss0 as f64) / (n1 - n0) as f64;
    let baseline_figure = Figure::new(
        format!("{label}: server RSS, no {what}"),
        baseline as f64 / 1024.0,
        "MiB",
        None,
    );
    let mut figures: Vec<Figure> = std::iter::once(baseline_figure)
        .chain(points.iter().map(|&(n, rss)| {
            Figure::new(
                format!("{label}: server RSS at {n} idle {what}s"),
                rss as f64 / 1024.0,
                "MiB",
                None,
            )
        }))
        .collect();
    figures.push(Figure::new(
        format!("{label}: RSS per idle {what} ({n0} -> {n1})"),
        slope,
        "KiB",
        Some(Target::AtMost(names.target)),
    ));
    let details = json!({
        "transport": p.transport.name(),
        "baseline_rss_kib": baseline,
        "steps": points.iter().zip(&detached_at).map(|(&(n, rss), d)| {
            json!({"connections": n, "rss_kib": rss, "sessions_detached": d})
        }).collect::<Vec<_>>(),
        "kib_per_connection": slope,
        "settle_ms": p.settle.as_millis() as u64,
    });
    Ok((figures, details))
}
