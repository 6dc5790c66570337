//! CPU time spent per request, by process: less noisy than throughput on a VM
//! whose speed drifts, and it shows where a case's two cores go.

use std::collections::HashMap;

use serde::Serialize;

/// Clock ticks per second of `/proc/<pid>/stat`'s times, asked once.
fn ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().map_or(100.0, |t| t as f64)
    })
}

/// One `/proc/<pid>/stat`: its parent and its user + system CPU seconds
/// (all threads, exited ones included).
fn stat(pid: u32) -> Option<(u32, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // are counted after its closing parenthesis.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((ppid, (utime + stime) / ticks_per_second()))
}

/// Every live process's parent and CPU seconds.
fn processes() -> HashMap<u32, (u32, f64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return HashMap::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, stat(pid)?)))
        .collect()
}

/// CPU seconds of `pid` itself, and of each of its live descendants.
fn own_and_descendants(all: &HashMap<u32, (u32, f64)>, pid: u32) -> (f64, HashMap<u32, f64>) {
    let own = all.get(&pid).map_or(0.0, |(_, cpu)| *cpu);
    let mut descendants = HashMap::new();
    for (&p, (_, cpu)) in all {
        let mut at = p;
        // Walk up to the root; process trees here are shallow.
        while let Some(&(parent, _)) = all.get(&at) {
            if parent == pid {
                descendants.insert(p, *cpu);
                break;
            }
            if parent <= 1 {
                break;
            }
            at = parent;
        }
    }
    (own, descendants)
}

/// Busy and total jiffies of the whole machine (`/proc/stat`'s `cpu` line).
fn machine() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else { return (0.0, 0.0) };
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

/// A reading of the processes a case watches.
#[derive(Debug, Clone)]
pub struct Sample {
    server: f64,
    workers: HashMap<u32, f64>,
    load: f64,
    machine: (f64, f64),
}

/// Reads the CPU seconds so far of `server` (and, apart, its descendants:
/// the runtime workers) and of this process (the load generator).
pub fn sample(server: u32) -> Sample {
    let all = processes();
    let (server, workers) = own_and_descendants(&all, server);
    let load = stat(std::process::id()).map_or(0.0, |(_, cpu)| cpu);
    Sample { server, workers, load, machine: machine() }
}

/// CPU µs per request between two samples, by process.
#[derive(Debug, Clone, Serialize)]
pub struct PerRequest {
    /// The server under test (the controller, or a floor server).
    pub server_us: f64,
    /// Its child processes (the runtime workers), counted apart.
    pub workers_us: f64,
    /// The load generator (this harness).
    pub load_us: f64,
    /// Share of the machine's CPU time that was busy, 0–1.
    pub machine_busy: f64,
}

impl PerRequest {
    pub fn between(before: &Sample, after: &Sample, requests: u64) -> Self {
        let per = |a: f64, b: f64| (b - a) * 1e6 / requests.max(1) as f64;
        // A worker that exited in between takes its time with it; one that
        // started counts from zero.
        let workers: f64 = after
            .workers
            .iter()
            .map(|(pid, cpu)| cpu - before.workers.get(pid).copied().unwrap_or(0.0))
            .sum();
        let (busy, total) = (after.machine.0 - before.machine.0, after.machine.1 - before.machine.1);
        Self {
            server_us: per(before.server, after.server),
            workers_us: if workers > 0.0 { per(0.0, workers) } else { 0.0 },
            load_us: per(before.load, after.load),
            machine_busy: if total > 0.0 { busy / total } else { 0.0 },
        }
    }
}
