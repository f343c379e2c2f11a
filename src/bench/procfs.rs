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

/// Clock ticks of one CPU, from `/proc/stat`.
#[derive(Clone, Copy, Debug, Default)]
struct CpuTicks {
    total: u64,
    /// Time in processes (user, nice, system). Not irq and softirq: without
    /// `CONFIG_IRQ_TIME_ACCOUNTING` a tick landing in the softirq that a
    /// process's own sends and receives run is counted there, not charged
    /// to the process, so those columns are the benchmark's own traffic.
    busy: u64,
    steal: u64,
}

/// Per-CPU clock ticks from `/proc/stat`, by CPU number.
fn cpu_stat() -> Vec<CpuTicks> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut cpus = Vec::new();
    for line in stat.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        // `cpu3 …` for one CPU; the aggregate line is `cpu  …` (no number).
        let Some((number, values)) = rest.split_once(' ') else {
            continue;
        };
        let Ok(n) = number.parse::<usize>() else {
            continue;
        };
        let fields = values.split_whitespace();
        let ticks: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal guest guest_nice;
        // guest time is already counted in user.
        let at = |i: usize| ticks.get(i).copied().unwrap_or(0);
        if cpus.len() <= n {
            cpus.resize(n + 1, CpuTicks::default());
        }
        cpus[n] = CpuTicks {
            total: ticks.iter().take(8).sum(),
            busy: at(0) + at(1) + at(2),
            steal: at(7),
        };
    }
    cpus
}

/// Busy (user+nice+system), stolen and total clock ticks of the whole
/// machine (every CPU), from `/proc/stat`.
pub fn machine_ticks() -> (u64, u64, u64) {
    cpu_stat().iter().fold((0, 0, 0), |(b, s, t), c| {
        (b + c.busy, s + c.steal, t + c.total)
    })
}

/// Busy (user+nice+system) and total clock ticks of each CPU, by number.
pub fn core_ticks() -> Vec<(u64, u64)> {
    cpu_stat().iter().map(|c| (c.busy, c.total)).collect()
}

/// The id of a running process whose `comm` is `name` (e.g. `redis-server`).
pub fn find_process(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == name).then_some(pid)
    })
}

/// CPU time of the server and of this process over an interval, and the
/// time the hypervisor took from each CPU (steal).
#[derive(Clone, Debug)]
pub struct CpuMeter {
    server_pid: u32,
    server_cpu: usize,
    client_cpu: Option<usize>,
    server_start: u64,
    own_start: u64,
    cpus_start: Vec<CpuTicks>,
    started: Instant,
}

/// CPU utilisation over a [`CpuMeter`] interval, as fractions of one core.
#[derive(Clone, Debug)]
pub struct CpuUse {
    /// The server process (pinned to one core): 1.0 means saturated.
    pub server: f64,
    /// This benchmark process (the clients).
    pub client: f64,
    /// CPU seconds the server used over the interval.
    pub server_secs: f64,
    /// CPU seconds this process used over the interval.
    pub client_secs: f64,
    /// Per CPU, the fraction of its time stolen by the hypervisor (a
    /// virtual machine's noisy neighbours: a stolen CPU runs nothing).
    pub steal: Vec<f64>,
    /// Steal of the server's CPU.
    pub server_steal: f64,
    /// Steal of the client's CPU (the worst CPU when not pinned to one).
    pub client_steal: f64,
    /// Share of the server's core used by other processes (neither the
    /// server nor this benchmark): builds and tests running meanwhile.
    pub server_core_others: f64,
    /// Share of the client's core used by processes other than this one
    /// (0 when this process is not pinned to one core).
    pub client_core_others: f64,
}

impl CpuUse {
    /// Server CPU as a fraction of what the hypervisor left its core.
    pub fn server_of_available(&self) -> f64 {
        self.server / (1.0 - self.server_steal).max(0.05)
    }

    /// Client CPU as a fraction of what the hypervisor left its core.
    pub fn client_of_available(&self) -> f64 {
        self.client / (1.0 - self.client_steal).max(0.05)
    }

    /// The six accounting figures every timed scenario reports, each named
    /// `"<label>: <what>"`.
    pub fn figures(&self, label: &str) -> Vec<super::report::Figure> {
        [
            (
                "server core busy (of time not stolen)",
                self.server_of_available(),
            ),
            (
                "client core busy (of time not stolen)",
                self.client_of_available(),
            ),
            ("server core stolen by the hypervisor", self.server_steal),
            ("client core stolen by the hypervisor", self.client_steal),
            (
                "server core used by other processes",
                self.server_core_others,
            ),
            (
                "client core used by other processes",
                self.client_core_others,
            ),
        ]
        .into_iter()
        .map(|(what, share)| {
            super::report::Figure::new(format!("{label}: {what}"), share * 100.0, "%", None)
        })
        .collect()
    }

    /// Which side ran out of CPU first, as a sentence for the report.
    pub fn verdict(&self) -> &'static str {
        // /proc counts in 10 ms ticks and a busy event loop still blocks now
        // and then: 90% of the core the hypervisor left counts as saturated.
        const BUSY: f64 = 0.90;
        let server = self.server_of_available() >= BUSY;
        let client = self.client_of_available() >= BUSY;
        match (server, client) {
            (true, false) => "server core saturated: the figure is the server's",
            (false, true) => {
                "CLIENT core saturated before the server: the figure understates the server"
            }
            (true, true) => "both cores saturated: the figure may understate the server",
            (false, false) => "neither core saturated: bound by round trips or flow control",
        }
    }

    /// A warning when the hypervisor or other processes took more than 5%
    /// of either core: a stolen core runs nothing and a shared one runs
    /// something else, so latency spikes and rates drop.
    pub fn interference_warning(&self) -> Option<String> {
        let mut warnings = Vec::new();
        if self.server_steal.max(self.client_steal) > 0.05 {
            warnings.push(format!(
                "WARNING: the hypervisor stole {:.0}% of the server's core and {:.0}% of the \
                 client's: figures are noisy (see /proc/stat, column steal)",
                self.server_steal * 100.0,
                self.client_steal * 100.0
            ));
        }
        if self.server_core_others.max(self.client_core_others) > 0.05 {
            warnings.push(format!(
                "WARNING: other processes used {:.0}% of the server's core and {:.0}% of the \
                 client's: figures are noisy (something else runs on this machine)",
                self.server_core_others * 100.0,
                self.client_core_others * 100.0
            ));
        }
        (!warnings.is_empty()).then(|| warnings.join("; "))
    }

    /// JSON form.
    pub fn to_json(&self) -> Value {
        json!({
            "server_cpu": self.server,
            "client_cpu": self.client,
            "server_cpu_of_available": self.server_of_available(),
            "client_cpu_of_available": self.client_of_available(),
            "server_cpu_secs": self.server_secs,
            "client_cpu_secs": self.client_secs,
            "steal_server_core": self.server_steal,
            "steal_client_core": self.client_steal,
            "steal_by_cpu": self.steal,
            "server_core_used_by_other_processes": self.server_core_others,
            "client_core_used_by_other_processes": self.client_core_others,
            "bottleneck": self.verdict(),
        })
    }
}

impl CpuMeter {
    /// Starts measuring the server `server_pid`, pinned to `server_cpu`,
    /// and this process, pinned to `client_cpu` if to a single CPU.
    pub fn start(server_pid: u32, server_cpu: usize) -> anyhow::Result<Self> {
        let affinity = own_affinity();
        Ok(CpuMeter {
            server_pid,
            server_cpu,
            client_cpu: affinity.trim().parse().ok(),
            server_start: cpu_ticks(Some(server_pid))?,
            own_start: cpu_ticks(None)?,
            cpus_start: cpu_stat(),
            started: Instant::now(),
        })
    }

    /// Utilisation since [`start`](Self::start).
    pub fn stop(&self) -> anyhow::Result<CpuUse> {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let tps = clock_ticks_per_sec() as f64;
        let server = cpu_ticks(Some(self.server_pid))?.saturating_sub(self.server_start);
        let own = cpu_ticks(None)?.saturating_sub(self.own_start);
        let now = cpu_stat();
        let steal: Vec<f64> = self
            .cpus_start
            .iter()
            .zip(&now)
            .map(|(a, b)| b.steal.saturating_sub(a.steal) as f64 / span(a, b))
            .collect();
        let worst = steal.iter().copied().fold(0.0, f64::max);
        let (server_frac, client_frac) = (server as f64 / tps / secs, own as f64 / tps / secs);
        // What ran on a core besides the process pinned to it.
        let others = |cpu: Option<usize>, own_share: f64| -> f64 {
            let Some((a, b)) = cpu.and_then(|c| Some((self.cpus_start.get(c)?, now.get(c)?)))
            else {
                return 0.0;
            };
            let used = b.busy.saturating_sub(a.busy) as f64 / span(a, b);
            (used - own_share).max(0.0)
        };
        Ok(CpuUse {
            server: server_frac,
            client: client_frac,
            server_secs: server as f64 / tps,
            client_secs: own as f64 / tps,
            server_steal: steal.get(self.server_cpu).copied().unwrap_or(0.0),
            client_steal: self
                .client_cpu
                .and_then(|c| steal.get(c).copied())
                .unwrap_or(worst),
            server_core_others: others(Some(self.server_cpu), server_frac),
            client_core_others: others(self.client_cpu, client_frac),
            steal,
        })
    }
}

/// Ticks that passed on a CPU between two readings (at least 1).
fn span(a: &CpuTicks, b: &CpuTicks) -> f64 {
    b.total.saturating_sub(a.total).max(1) as f64
}

/// Fails unless this process may open `needed` files (`RLIMIT_NOFILE`, read
/// from `/proc/self/limits`); returns the soft limit. The server inherits
/// the same limit.
pub fn check_open_files(needed: u64) -> anyhow::Result<u64> {
    let limits =
        std::fs::read_to_string("/proc/self/limits").context("reading /proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no `Max open files` line in /proc/self/limits")?;
    // "Max open files  <soft>  <hard>  files"
    let mut values = line.split_whitespace().skip(3).map(|v| match v {
        "unlimited" => Some(u64::MAX),
        v => v.parse::<u64>().ok(),
    });
    let (Some(Some(soft)), Some(Some(hard))) = (values.next(), values.next()) else {
        bail!("unexpected `Max open files` line in /proc/self/limits: {line:?}");
    };
    if soft >= needed {
        return Ok(soft);
    }
    if hard >= needed {
        bail!(
            "the open-files limit is {soft} but this run needs about {needed} descriptors (one \
             per connection, plus a margin). Raise it in this shell first: `ulimit -n {}`",
            hard.min(65536).max(needed)
        );
    }
    bail!(
        "this run needs about {needed} open files but the hard limit is {hard} (soft {soft}): \
         raise the hard limit (limits.conf, systemd LimitNOFILE, or as root) or ask for fewer \
         connections (--memory-steps, --fanout-subscribers, --latency-subscribers)"
    );
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
    let nproc = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
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
    fn reads_per_cpu_steal() {
        let cpus = cpu_stat();
        let online = std::thread::available_parallelism().map_or(1, usize::from);
        assert!(!cpus.is_empty() && cpus.len() <= 4096);
        assert!(cpus.len() >= online);
    }

    #[test]
    fn reads_own_process() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        cpu_ticks(None).unwrap();
        assert!(check_open_files(1).is_ok());
        assert!(check_open_files(u64::MAX - 1).is_err());
    }
}
