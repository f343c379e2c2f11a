//! Scenario `latency`: publish → deliver latency at a fixed, modest rate.
//!
//! S subscribers (5,000 by default) on `bench:latency`; one publisher sends
//! R messages per second (20) for D seconds (10). Each message's data carries
//! its send time, `"t"` (nanoseconds since an `Instant` of this process;
//! publisher and subscribers share the process, hence the clock) and its
//! index `"i"`. Each subscriber, after every read, takes the time once and
//! extracts `"t"`/`"i"` with a byte search. Reported: p50/p99/max over every
//! delivery, and over messages of the time to reach the LAST subscriber.
//!
//! Scenario `latency-poll` ([`run_long_poll`]): the same publisher and
//! messages (10 per second by default) to a few long-polling clients, each
//! re-polling as soon as an answer arrived, as a real client does. A
//! delivery is timed when its poll answer has been read whole.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::procfs::CpuMeter;
use super::protocol::number_after;
use super::publisher::Publisher;
use super::report::{Figure, Target};
use super::server::Server;
use super::subscriber::{wait_all_received, Channels, Fleet, FleetSpec, Mode, Transport};

/// Parameters of the scenario.
#[derive(Clone, Debug)]
pub struct LatencyParams {
    /// Subscribers.
    pub subscribers: usize,
    /// Messages per second.
    pub rate: f64,
    /// Seconds of publishing.
    pub secs: f64,
    /// Padding bytes in each message's data.
    pub payload_bytes: usize,
    /// Connection setups in flight.
    pub concurrency: usize,
}

/// Latency samples, shared by every subscriber task.
pub struct Recorder {
    origin: Instant,
    deliveries: Mutex<Vec<u64>>,
    /// Per message: the largest latency seen (its last subscriber).
    last: Vec<AtomicU64>,
    /// Per message: how many subscribers got it.
    reached: Vec<AtomicU32>,
    /// Publications whose `t`/`i` could not be read.
    unreadable: AtomicU64,
}

impl Recorder {
    /// A recorder for `messages` messages.
    pub fn new(messages: usize) -> Recorder {
        Recorder {
            origin: Instant::now(),
            deliveries: Mutex::new(Vec::new()),
            last: (0..messages).map(|_| AtomicU64::new(0)).collect(),
            reached: (0..messages).map(|_| AtomicU32::new(0)).collect(),
            unreadable: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since the recorder was made.
    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// Records one publication frame received at `now_ns`.
    pub fn record(&self, frame: &[u8], now_ns: u64) {
        let (Some(sent), Some(i)) = (
            number_after(frame, b"\"t\":"),
            number_after(frame, b"\"i\":"),
        ) else {
            self.unreadable.fetch_add(1, Relaxed);
            return;
        };
        let (Some(last), Some(reached)) = (self.last.get(i as usize), self.reached.get(i as usize))
        else {
            self.unreadable.fetch_add(1, Relaxed);
            return;
        };
        let latency = now_ns.saturating_sub(sent);
        last.fetch_max(latency, Relaxed);
        reached.fetch_add(1, Relaxed);
        self.deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(latency);
    }
}

impl Recorder {
    /// Every delivery's latency recorded so far (taken out), sorted.
    pub fn take_sorted(&self) -> Vec<u64> {
        let mut every =
            std::mem::take(&mut *self.deliveries.lock().unwrap_or_else(|e| e.into_inner()));
        every.sort_unstable();
        every
    }

    /// Messages that reached fewer than `n` subscribers.
    pub fn messages_short_of(&self, n: u32) -> usize {
        self.reached.iter().filter(|r| r.load(Relaxed) < n).count()
    }

    /// Frames whose `t`/`i` could not be read.
    pub fn unreadable(&self) -> u64 {
        self.unreadable.load(Relaxed)
    }
}

/// Nearest-rank percentile of sorted `v` (0 when empty).
pub fn percentile(v: &[u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The last (largest) element of sorted `v` (0 when empty).
pub fn max_of(v: &[u64]) -> u64 {
    v.last().copied().unwrap_or(0)
}

/// Nanoseconds as milliseconds.
pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Runs the scenario on `server`; returns its figures and details.
pub async fn run(server: &Server, p: &LatencyParams) -> anyhow::Result<(Vec<Figure>, Value)> {
    let count = (p.rate * p.secs).round().max(1.0) as u64;
    let recorder = Arc::new(Recorder::new(count as usize));
    let spec = FleetSpec {
        endpoint: server.endpoint(),
        transport: Transport::WebSocket,
        token: server.endpoint().token("bench-sub")?,
        channels: Channels::Shared("bench:latency".to_owned()),
        mode: Mode::Latency(recorder.clone()),
        concurrency: p.concurrency,
        progress: None,
    };
    eprintln!("latency: opening {} subscribers…", p.subscribers);
    let mut fleet = Fleet::new();
    fleet.add(&spec, p.subscribers).await?;
    let endpoint = server.endpoint();
    let mut publisher =
        Publisher::open(&endpoint, &endpoint.token("bench-pub")?, "bench:latency").await?;
    eprintln!(
        "latency: publishing {count} messages at {} msg/s to {} subscribers…",
        p.rate, p.subscribers
    );
    let pad = "x".repeat(p.payload_bytes.saturating_sub(40));
    let meter = CpuMeter::start(server.pid(), server.cpu)?;
    let clock = recorder.clone();
    publisher
        .fixed_rate(p.rate, count, |i| {
            format!("{{\"t\":{},\"i\":{i},\"p\":\"{pad}\"}}", clock.now_ns())
        })
        .await?;
    let (min, max) = wait_all_received(&fleet, count, Duration::from_secs(10)).await;
    let cpu = meter.stop()?;
    let (ended, reasons) = fleet.ended(5);
    // Server CPU spent per message, i.e. on its fan-out to every subscriber:
    // a floor for the time to reach the last one when the server does it
    // on one core.
    let server_ms_per_message = cpu.server_secs * 1e3 / count as f64;
    // The same for the clients: reading 5,000 sockets on one core takes time
    // too, and the last subscriber is read last.
    let client_us_per_delivery =
        cpu.client_secs * 1e6 / (count as f64 * p.subscribers.max(1) as f64);

    let mut every = std::mem::take(
        &mut *recorder
            .deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    every.sort_unstable();
    let by_message: Vec<f64> = recorder.last.iter().map(|l| ms(l.load(Relaxed))).collect();
    let mut last: Vec<u64> = recorder
        .last
        .iter()
        .zip(&recorder.reached)
        .filter(|(_, r)| r.load(Relaxed) > 0)
        .map(|(l, _)| l.load(Relaxed))
        .collect();
    last.sort_unstable();
    let complete = recorder
        .reached
        .iter()
        .filter(|r| r.load(Relaxed) as usize == p.subscribers)
        .count();
    fleet.close().await;

    let label = format!(
        "latency {}k subs @{} msg/s",
        p.subscribers as f64 / 1000.0,
        p.rate
    );
    let fig = |what: &str, value: f64, unit: &'static str| {
        Figure::new(format!("{label}: {what}"), value, unit, None)
    };
    let figures: Vec<Figure> = [
        fig("every delivery p50", ms(percentile(&every, 50.0)), "ms"),
        fig("every delivery p99", ms(percentile(&every, 99.0)), "ms"),
        fig("every delivery max", ms(max_of(&every)), "ms"),
        fig("to last subscriber p50", ms(percentile(&last, 50.0)), "ms"),
        Figure::new(
            format!("{label}: to last subscriber p99"),
            ms(percentile(&last, 99.0)),
            "ms",
            Some(Target::AtMost(20.0)),
        ),
        fig("to last subscriber max", ms(max_of(&last)), "ms"),
        fig("server CPU per message", server_ms_per_message, "ms"),
        fig("client CPU per delivery", client_us_per_delivery, "us"),
    ]
    .into_iter()
    .chain(cpu.figures(&label))
    .collect::<Vec<_>>();
    if let Some(w) = cpu.interference_warning() {
        eprintln!("latency: {w}");
    }
    let details = json!({
        "subscribers": p.subscribers,
        "rate_per_sec": p.rate,
        "messages": count,
        "deliveries_recorded": every.len(),
        "deliveries_expected": count * p.subscribers as u64,
        "messages_reaching_every_subscriber": complete,
        "unreadable_frames": recorder.unreadable.load(Relaxed),
        "per_subscriber_min": min,
        "per_subscriber_max": max,
        "disconnected_subscribers": ended,
        "disconnect_reasons": reasons,
        "every_delivery_ms": { "p50": ms(percentile(&every, 50.0)), "p90": ms(percentile(&every, 90.0)),
            "p99": ms(percentile(&every, 99.0)), "max": ms(max_of(&every)) },
        "last_subscriber_ms": { "p50": ms(percentile(&last, 50.0)), "p90": ms(percentile(&last, 90.0)),
            "p99": ms(percentile(&last, 99.0)), "max": ms(max_of(&last)) },
        "last_subscriber_ms_by_message": by_message,
        "server_cpu_ms_per_message": server_ms_per_message,
        "server_cpu_us_per_delivery": server_ms_per_message * 1e3 / p.subscribers.max(1) as f64,
        "client_cpu_us_per_delivery": client_us_per_delivery,
        "cpu": cpu.to_json(),
    });
    if ended > 0 || min < count {
        eprintln!("latency: WARNING: {ended} subscribers disconnected, slowest got {min} of {count}: {reasons:?}");
    }
    Ok((figures, details))
}

/// Parameters of the long-polling latency scenario.
#[derive(Clone, Debug)]
pub struct PollLatencyParams {
    /// Long-polling clients.
    pub clients: usize,
    /// Messages per second.
    pub rate: f64,
    /// Seconds of publishing.
    pub secs: f64,
    /// Padding bytes in each message's data.
    pub payload_bytes: usize,
    /// Connection setups in flight.
    pub concurrency: usize,
}

/// Runs the long-polling latency scenario on `server` (Switchboard).
pub async fn run_long_poll(
    server: &Server,
    p: &PollLatencyParams,
) -> anyhow::Result<(Vec<Figure>, Value)> {
    let count = (p.rate * p.secs).round().max(1.0) as u64;
    let recorder = Arc::new(Recorder::new(count as usize));
    let channel = "bench:poll-latency";
    let spec = FleetSpec {
        endpoint: server.endpoint(),
        transport: Transport::LongPoll,
        token: server.endpoint().token("bench-poll")?,
        channels: Channels::Shared(channel.to_owned()),
        mode: Mode::Latency(recorder.clone()),
        concurrency: p.concurrency,
        progress: None,
    };
    eprintln!(
        "latency long-poll: opening {} long-polling clients…",
        p.clients
    );
    let mut fleet = Fleet::new();
    fleet.add(&spec, p.clients).await?;
    let endpoint = server.endpoint();
    let mut publisher = Publisher::open(&endpoint, &endpoint.token("bench-pub")?, channel).await?;
    eprintln!(
        "latency long-poll: publishing {count} messages at {} msg/s to {} clients…",
        p.rate, p.clients
    );
    let pad = "x".repeat(p.payload_bytes.saturating_sub(40));
    let meter = CpuMeter::start(server.pid(), server.cpu)?;
    let clock = recorder.clone();
    publisher
        .fixed_rate(p.rate, count, |i| {
            format!("{{\"t\":{},\"i\":{i},\"p\":\"{pad}\"}}", clock.now_ns())
        })
        .await?;
    let (min, max) = wait_all_received(&fleet, count, Duration::from_secs(10)).await;
    let cpu = meter.stop()?;
    let (ended, reasons) = fleet.ended(5);
    let answers = fleet.reads();
    let server_ms_per_message = cpu.server_secs * 1e3 / count as f64;
    let deliveries_expected = count * p.clients as u64;
    let client_us_per_delivery = cpu.client_secs * 1e6 / deliveries_expected.max(1) as f64;
    let mut every = std::mem::take(
        &mut *recorder
            .deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    every.sort_unstable();
    let mut last: Vec<u64> = recorder
        .last
        .iter()
        .zip(&recorder.reached)
        .filter(|(_, r)| r.load(Relaxed) > 0)
        .map(|(l, _)| l.load(Relaxed))
        .collect();
    last.sort_unstable();
    fleet.close().await;
    publisher.close().await;

    let label = format!("latency long-poll {} clients @{} msg/s", p.clients, p.rate);
    let fig = |what: &str, value: f64, unit: &'static str| {
        Figure::new(format!("{label}: {what}"), value, unit, None)
    };
    let per_answer = every.len() as f64 / answers.max(1) as f64;
    let figures: Vec<Figure> = [
        fig("every delivery p50", ms(percentile(&every, 50.0)), "ms"),
        Figure::new(
            format!("{label}: every delivery p99"),
            ms(percentile(&every, 99.0)),
            "ms",
            Some(Target::AtMost(50.0)),
        ),
        fig("every delivery max", ms(max_of(&every)), "ms"),
        fig("to last client p99", ms(percentile(&last, 99.0)), "ms"),
        fig("publications per poll answer", per_answer, ""),
        fig(
            "deliveries missing",
            deliveries_expected.saturating_sub(every.len() as u64) as f64,
            "",
        ),
        fig("server CPU per message", server_ms_per_message, "ms"),
        fig("client CPU per delivery", client_us_per_delivery, "us"),
    ]
    .into_iter()
    .chain(cpu.figures(&label))
    .collect::<Vec<_>>();
    if let Some(w) = cpu.interference_warning() {
        eprintln!("latency long-poll: {w}");
    }
    eprintln!(
        "latency long-poll: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} deliveries \
         ({per_answer:.2} per poll answer)",
        ms(percentile(&every, 50.0)),
        ms(percentile(&every, 99.0)),
        ms(max_of(&every)),
        every.len()
    );
    if ended > 0 || min < count {
        eprintln!(
            "latency long-poll: WARNING: {ended} clients ended, slowest got {min} of {count}: {reasons:?}"
        );
    }
    let details = json!({
        "clients": p.clients,
        "rate_per_sec": p.rate,
        "messages": count,
        "deliveries_recorded": every.len(),
        "deliveries_expected": deliveries_expected,
        "poll_answers_with_publications": answers,
        "publications_per_poll_answer": per_answer,
        "unreadable_frames": recorder.unreadable.load(Relaxed),
        "per_client_min": min,
        "per_client_max": max,
        "ended_clients": ended,
        "end_reasons": reasons,
        "every_delivery_ms": { "p50": ms(percentile(&every, 50.0)), "p90": ms(percentile(&every, 90.0)),
            "p99": ms(percentile(&every, 99.0)), "max": ms(max_of(&every)) },
        "last_client_ms": { "p50": ms(percentile(&last, 50.0)), "p99": ms(percentile(&last, 99.0)),
            "max": ms(max_of(&last)) },
        "server_cpu_ms_per_message": server_ms_per_message,
        "client_cpu_us_per_delivery": client_us_per_delivery,
        "cpu": cpu.to_json(),
    });
    Ok((figures, details))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_t_and_i() {
        let f = br#"{"type":"publication","channel":"bench:latency","offset":3,"epoch":"ab","data":{"t":12345,"i":7,"p":"x"},"time":9}"#;
        assert_eq!(number_after(f, b"\"t\":"), Some(12345));
        assert_eq!(number_after(f, b"\"i\":"), Some(7));
        assert_eq!(number_after(f, b"\"q\":"), None);
        let r = Recorder::new(10);
        r.record(f, 20_000);
        assert_eq!(r.last[7].load(Relaxed), 20_000 - 12345);
        r.record(b"{}", 1);
        assert_eq!(r.unreadable.load(Relaxed), 1);
    }

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[], 99.0), 0);
    }
}
