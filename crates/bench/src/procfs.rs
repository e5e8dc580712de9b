//! What `/proc` says about a server process and about the machine.

use std::time::Instant;

use serde::Serialize;

/// Clock ticks per second for `/proc/PID/stat` (`getconf CLK_TCK`; 100 on Linux).
const CLK_TCK: f64 = 100.0;

/// User plus system CPU time of `pid`, in microseconds.
pub fn cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 overall: 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(((utime + stime) / CLK_TCK * 1e6) as u64)
}

/// Resident set size of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// CPU used by a process over a window: µs of CPU and wall seconds.
#[derive(Debug)]
pub struct CpuWindow {
    pid: Option<u32>,
    start_cpu: Option<u64>,
    start: Instant,
}

impl CpuWindow {
    /// Starts measuring `pid` (nothing is measured without one).
    pub fn start(pid: Option<u32>) -> Self {
        CpuWindow {
            pid,
            start_cpu: pid.and_then(cpu_us),
            start: Instant::now(),
        }
    }

    /// CPU µs used since the start, and the wall seconds elapsed.
    pub fn stop(&self) -> (Option<u64>, f64) {
        let cpu = match (self.pid.and_then(cpu_us), self.start_cpu) {
            (Some(end), Some(start)) => Some(end.saturating_sub(start)),
            _ => None,
        };
        (cpu, self.start.elapsed().as_secs_f64())
    }
}

/// The machine a run was made on.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    pub nofile_soft: u64,
    pub nofile_hard: u64,
    pub load_average: String,
    pub memory_total_kib: u64,
}

impl Machine {
    /// Reads it from `/proc` and the process limits.
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_else(|| "unknown".into());
        let (nofile_soft, nofile_hard) =
            rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((0, 0));
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            nofile_soft,
            nofile_hard,
            load_average: std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            memory_total_kib: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0),
        }
    }
}

/// Raises the soft open-files limit to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}
