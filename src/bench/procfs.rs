//! What the benchmark reads from `/proc`: resident memory, CPU time, the
//! open-files limit, CPU affinity and the machine facts recorded with the
//! results. Linux only, like the `taskset` pinning the benchmark relies on.

use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::{json, Value};

/// Resident set size of process `pid`, in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status_field(&status, "VmRSS:")
        .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS line in {path}"))
}

/// The value after `key` on its line of a `/proc/*/status` text.
fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
}

/// User plus system CPU time of a process (all its threads), in clock ticks.
/// `pid` `None` means this process.
pub fn cpu_ticks(pid: Option<u32>) -> anyhow::Result<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may contain spaces; fields after its closing
    // parenthesis are space-separated: state is field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("unexpected format of {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("field {n} missing from {path}"))
    };
    Ok(field(14)? + field(15)?)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every common Linux).
pub fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// CPU time of the server and of this process over an interval.
#[derive(Clone, Copy, Debug)]
pub struct CpuMeter {
    server_pid: u32,
    server_start: u64,
    own_start: u64,
    started: Instant,
}

/// CPU utilisation over a [`CpuMeter`] interval, as fractions of one core.
#[derive(Clone, Copy, Debug)]
pub struct CpuUse {
    /// The server process (pinned to one core): 1.0 means saturated.
    pub server: f64,
    /// This benchmark process (the clients).
    pub client: f64,
}

impl CpuUse {
    /// Which side ran out of CPU first, as a sentence for the report.
    pub fn verdict(&self) -> &'static str {
        const BUSY: f64 = 0.95;
        match (self.server >= BUSY, self.client >= BUSY) {
            (true, false) => "server core saturated: the figure is the server's",
            (false, true) => "CLIENT core saturated before the server: the figure understates the server",
            (true, true) => "both cores saturated",
            (false, false) => "neither core saturated: latency- or flow-bound",
        }
    }

    /// JSON form.
    pub fn to_json(self) -> Value {
        json!({ "server_cpu": self.server, "client_cpu": self.client, "bottleneck": self.verdict() })
    }
}

impl CpuMeter {
    /// Starts measuring.
    pub fn start(server_pid: u32) -> anyhow::Result<Self> {
        Ok(CpuMeter {
            server_pid,
            server_start: cpu_ticks(Some(server_pid))?,
            own_start: cpu_ticks(None)?,
            started: Instant::now(),
        })
    }

    /// Utilisation since [`start`](Self::start).
    pub fn stop(&self) -> anyhow::Result<CpuUse> {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let tps = clock_ticks_per_sec() as f64;
        let server = cpu_ticks(Some(self.server_pid))?.saturating_sub(self.server_start);
        let own = cpu_ticks(None)?.saturating_sub(self.own_start);
        Ok(CpuUse {
            server: server as f64 / tps / secs,
            client: own as f64 / tps / secs,
        })
    }
}

/// Fails unless this process may open `needed` files (`RLIMIT_NOFILE`, read
/// from `/proc/self/limits`). The server inherits the same limit.
pub fn check_open_files(needed: u64) -> anyhow::Result<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").context("reading /proc/self/limits")?;
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .context("no `Max open files` line in /proc/self/limits")?;
    if soft == "unlimited" {
        return Ok(u64::MAX);
    }
    let soft: u64 = soft
        .parse()
        .with_context(|| format!("unexpected open-files limit {soft:?}"))?;
    if soft < needed {
        bail!(
            "the open-files limit is {soft} but this run needs about {needed} descriptors \
             (one per connection, plus a margin). Raise it in the shell first, e.g. \
             `ulimit -n 65536`, or ask for fewer connections"
        );
    }
    Ok(soft)
}

/// The CPUs this process may run on (`Cpus_allowed_list`, e.g. `1` or `0-1`).
pub fn own_affinity() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| status_field(&s, "Cpus_allowed_list:").map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Whether CPU `cpu` is in a `Cpus_allowed_list` such as `0-1,4`.
pub fn affinity_includes(list: &str, cpu: usize) -> bool {
    list.split(',').any(|part| match part.split_once('-') {
        Some((a, b)) => match (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
            (Ok(a), Ok(b)) => (a..=b).contains(&cpu),
            _ => false,
        },
        None => part.trim().parse() == Ok(cpu),
    })
}

/// Machine facts recorded with the results.
pub fn machine_facts() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let nproc = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_owned()).unwrap_or_default();
    let mem_total = status_field(&read("/proc/meminfo"), "MemTotal:").map(str::to_owned);
    json!({
        "nproc": nproc,
        "cpu_model": model,
        "kernel": read("/proc/sys/kernel/osrelease"),
        "mem_total": mem_total,
        "loadavg_at_start": read("/proc/loadavg"),
        "bench_affinity": own_affinity(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_lists() {
        assert!(affinity_includes("0-1", 0));
        assert!(affinity_includes("1", 1));
        assert!(!affinity_includes("1", 0));
        assert!(affinity_includes("0,2-3", 3));
        assert!(!affinity_includes("0,2-3", 1));
    }

    #[test]
    fn reads_own_process() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        cpu_ticks(None).unwrap();
        assert!(check_open_files(1).is_ok());
        assert!(check_open_files(u64::MAX - 1).is_err());
    }
}
