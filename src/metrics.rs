//! Node metrics: lock-free counters rendered as Prometheus text.
//!
//! Hot-path counters are relaxed atomics (one add per publication and one
//! per fan-out, never one per subscriber). Command latency is a fixed-bucket
//! histogram per command type.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::codes::{DisconnectCode, ErrorCode};
use crate::protocol::Command;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 10] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
];

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Relaxed);
    }
}

/// Counters of one node.
#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_accepted: AtomicU64,
    pub subscriptions: AtomicU64,
    pub publications: AtomicU64,
    pub deliveries: AtomicU64,
    pub queue_overflows: AtomicU64,
    pub api_requests: AtomicU64,
    errors: [AtomicU64; ErrorCode::ALL.len()],
    disconnects: [AtomicU64; DisconnectCode::ALL.len()],
    commands: [Histogram; Command::KINDS.len()],
}

impl Metrics {
    /// Counts an error answer.
    pub fn error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts a disconnect by its wire code.
    pub fn disconnect(&self, code: u16) {
        if let Some(i) = DisconnectCode::ALL.iter().position(|c| c.code() == code) {
            self.disconnects[i].fetch_add(1, Relaxed);
        }
    }

    /// Records how long a command took.
    pub fn command(&self, kind: &str, elapsed: Duration) {
        if let Some(i) = Command::KINDS.iter().position(|k| *k == kind) {
            self.commands[i].observe(elapsed);
        }
    }

    /// Prometheus text exposition; `gauges` are point-in-time values
    /// computed by the caller (connections, users, channels).
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::with_capacity(4096);
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP switchboard_{name} {help}\n# TYPE switchboard_{name} gauge\nswitchboard_{name} {value}");
        }
        let counters = [
            (
                "connections_accepted_total",
                "Connections that authenticated.",
                &self.connections_accepted,
            ),
            (
                "publications_total",
                "Publications accepted.",
                &self.publications,
            ),
            (
                "deliveries_total",
                "Frames queued to subscribers by fan-out.",
                &self.deliveries,
            ),
            (
                "queue_overflows_total",
                "Connections closed as slow consumers.",
                &self.queue_overflows,
            ),
            (
                "api_requests_total",
                "Server API requests.",
                &self.api_requests,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP switchboard_{name} {help}\n# TYPE switchboard_{name} counter\nswitchboard_{name} {}", value.load(Relaxed));
        }
        let _ = writeln!(out, "# HELP switchboard_subscriptions Subscriptions on this node.\n# TYPE switchboard_subscriptions gauge\nswitchboard_subscriptions {}", self.subscriptions.load(Relaxed));
        let _ = writeln!(out, "# HELP switchboard_errors_total Error answers by code.\n# TYPE switchboard_errors_total counter");
        for (code, n) in ErrorCode::ALL.iter().zip(&self.errors) {
            let _ = writeln!(
                out,
                "switchboard_errors_total{{code=\"{}\"}} {}",
                code.code(),
                n.load(Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP switchboard_disconnects_total Disconnects by code.\n# TYPE switchboard_disconnects_total counter");
        for (code, n) in DisconnectCode::ALL.iter().zip(&self.disconnects) {
            let _ = writeln!(
                out,
                "switchboard_disconnects_total{{code=\"{}\"}} {}",
                code.code(),
                n.load(Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP switchboard_command_duration_seconds Command handling time.\n# TYPE switchboard_command_duration_seconds histogram");
        for (kind, h) in Command::KINDS.iter().zip(&self.commands) {
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(&h.buckets) {
                cumulative += n.load(Relaxed);
                let _ = writeln!(out, "switchboard_command_duration_seconds_bucket{{command=\"{kind}\",le=\"{bound}\"}} {cumulative}");
            }
            let count = h.count.load(Relaxed);
            let _ = writeln!(out, "switchboard_command_duration_seconds_bucket{{command=\"{kind}\",le=\"+Inf\"}} {count}");
            let _ = writeln!(
                out,
                "switchboard_command_duration_seconds_sum{{command=\"{kind}\"}} {}",
                h.sum_micros.load(Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "switchboard_command_duration_seconds_count{{command=\"{kind}\"}} {count}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_errors_and_histograms() {
        let m = Metrics::default();
        m.error(ErrorCode::PermissionDenied);
        m.command("publish", Duration::from_micros(300));
        m.publications.fetch_add(2, Relaxed);
        let text = m.render(&[("connections", "Open connections.", 7)]);
        assert!(text.contains("switchboard_connections 7"));
        assert!(text.contains("switchboard_publications_total 2"));
        assert!(text.contains("switchboard_errors_total{code=\"103\"} 1"));
        assert!(text.contains(
            "switchboard_command_duration_seconds_bucket{command=\"publish\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains("switchboard_command_duration_seconds_count{command=\"publish\"} 1"));
    }
}
