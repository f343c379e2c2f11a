//! Scenario `memory`: server RSS per idle WebSocket connection.
//!
//! Opens connections in steps (1,000, then 9,000 more up to 10,000, by
//! default) on one server. Each connection logs in, subscribes to a
//! channel (room) of its own (`bench:idle-<i>`) and then idles: no traffic but the
//! 25 s heartbeat. After each step the server is left alone to settle and its
//! `VmRSS` is read from `/proc/<pid>/status`. The figure is the slope between
//! the first and the last step, which cancels the fixed cost of the process:
//! (RSS(last) − RSS(first)) / (last − first connections).

use std::time::Duration;

use anyhow::bail;
use serde_json::{json, Value};

use super::procfs::rss_kib;
use super::report::{Figure, Target};
use super::server::Server;
use super::subscriber::{Channels, Fleet, FleetSpec, Mode};

/// Parameters of the scenario.
#[derive(Clone, Debug)]
pub struct MemoryParams {
    /// Total connections after each step, increasing.
    pub steps: Vec<usize>,
    /// Quiet time before reading RSS.
    pub settle: Duration,
    /// Connection setups in flight.
    pub concurrency: usize,
}

/// Runs the scenario on `server`; returns its figures and details.
pub async fn run(server: &mut Server, p: &MemoryParams) -> anyhow::Result<(Vec<Figure>, Value)> {
    if p.steps.len() < 2 || p.steps.windows(2).any(|w| w[0] >= w[1]) || p.steps[0] == 0 {
        bail!("--memory-steps needs at least two increasing, non-zero counts (e.g. 1000,10000)");
    }
    let spec = FleetSpec {
        endpoint: server.endpoint(),
        token: server.endpoint().token("bench-idle")?,
        channels: Channels::PerConnection("bench:idle-".to_owned()),
        mode: Mode::Count,
        concurrency: p.concurrency,
        progress: None,
    };
    tokio::time::sleep(p.settle).await;
    let baseline = rss_kib(server.pid())?;
    eprintln!("memory: server RSS with no connection: {baseline} KiB");
    let mut fleet = Fleet::new();
    let mut points = Vec::new();
    for &n in &p.steps {
        let more = n - fleet.stats.len();
        eprintln!("memory: opening {more} idle connections (total {n})…");
        fleet.add(&spec, more).await?;
        tokio::time::sleep(p.settle).await;
        server.check_alive()?;
        let counted = server.connections()? as usize;
        if counted != n {
            bail!("the server counts {counted} connections, expected {n}");
        }
        let (ended, reasons) = fleet.ended(3);
        if ended > 0 {
            bail!("{ended} idle connections were closed by the server: {reasons:?}");
        }
        let rss = rss_kib(server.pid())?;
        eprintln!("memory: {n} connections: server RSS {rss} KiB");
        points.push((n, rss));
    }
    fleet.close().await;

    let (n0, rss0) = points[0];
    let (n1, rss1) = points[points.len() - 1];
    let slope = (rss1 as f64 - rss0 as f64) / (n1 - n0) as f64;
    let baseline_figure = Figure::new(
        "memory: server RSS, no connection".to_owned(),
        baseline as f64 / 1024.0,
        "MiB",
        None,
    );
    let mut figures: Vec<Figure> = std::iter::once(baseline_figure)
        .chain(points.iter().map(|&(n, rss)| {
            Figure::new(
                format!("memory: server RSS at {n} idle connections"),
                rss as f64 / 1024.0,
                "MiB",
                None,
            )
        }))
        .collect();
    figures.push(Figure::new(
        format!("memory: RSS per idle connection ({n0} -> {n1})"),
        slope,
        "KiB",
        Some(Target::AtMost(4.0)),
    ));
    let details = json!({
        "baseline_rss_kib": baseline,
        "steps": points.iter().map(|&(n, rss)| json!({"connections": n, "rss_kib": rss})).collect::<Vec<_>>(),
        "kib_per_connection": slope,
        "settle_ms": p.settle.as_millis() as u64,
    });
    Ok((figures, details))
}
