//! Control groups: one group per sandboxed process tree under a group owned by
//! this controller, with memory, process and CPU limits, per-execution figures
//! (CPU time, peak memory) and limit events (OOM kills, refused forks).
//!
//! cgroup v2 is used when the controller's own group has the memory and pids
//! controllers delegated; otherwise the v1 hierarchies (memory, pids, cpu,
//! cpuacct) are used, each nested under the controller's own group so that
//! limits set on the controller (by systemd, a container runtime, a CI runner)
//! still hold for its workers.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::SandboxLimits;

/// Which cgroup interface the sandbox uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// The controller's parent groups, one per hierarchy in use.
#[derive(Debug)]
pub(crate) struct CgroupRoot {
    pub version: CgroupVersion,
    /// v1: memory, pids, cpu, cpuacct group dirs (`None` = controller unusable); v2: `memory` holds the one dir.
    memory: Option<PathBuf>,
    pids: Option<PathBuf>,
    cpu: Option<PathBuf>,
    cpuacct: Option<PathBuf>,
}

/// A v1 hierarchy: its controllers and our group's dir in it.
type V1Group = (Vec<String>, PathBuf);

/// Hierarchies found in /proc/self/mountinfo and /proc/self/cgroup: v1 groups, the v2 group.
fn own_groups() -> io::Result<(Vec<V1Group>, Option<PathBuf>)> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let membership = fs::read_to_string("/proc/self/cgroup")?;
    let mut v1 = Vec::new();
    let mut v2 = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let fields: Vec<&str> = left.split(' ').collect();
        let rfields: Vec<&str> = right.split(' ').collect();
        if fields.len() < 5 || rfields.len() < 3 {
            continue;
        }
        let (root, mountpoint, fstype) = (fields[3], fields[4], rfields[0]);
        let relative = |path: &str| -> PathBuf {
            let rel = path.strip_prefix(root).unwrap_or(path).trim_start_matches('/');
            Path::new(mountpoint).join(rel)
        };
        if fstype == "cgroup2" {
            if let Some(path) = membership.lines().find_map(|l| l.strip_prefix("0::")) {
                v2 = Some(relative(path));
            }
        } else if fstype == "cgroup" {
            let controllers: Vec<String> = rfields[2]
                .split(',')
                .filter(|o| matches!(*o, "memory" | "pids" | "cpu" | "cpuacct"))
                .map(str::to_owned)
                .collect();
            if controllers.is_empty() {
                continue;
            }
            let path = membership.lines().find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
                names.split(',').any(|n| n == controllers[0]).then_some(path)
            });
            if let Some(path) = path {
                v1.push((controllers, relative(path)));
            }
        }
    }
    Ok((v1, v2))
}

/// Removes the (empty) groups left by controllers that died: `lambda-<pid>-<n>`
/// whose pid is gone. Best effort; a group with live processes stays.
fn remove_stale(own: &Path) {
    let Ok(entries) = fs::read_dir(own) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) =
            name.to_str().and_then(|n| n.strip_prefix("lambda-")).and_then(|r| r.split('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_err() || Path::new("/proc").join(pid).exists() {
            continue;
        }
        let dir = entry.path();
        if let Ok(children) = fs::read_dir(&dir) {
            for child in children.flatten().filter(|c| c.path().is_dir()) {
                let _ = fs::remove_dir(child.path());
            }
        }
        let _ = fs::remove_dir(&dir);
    }
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    OpenOptions::new().write(true).open(path)?.write_all(value.as_bytes())
}

fn read_key(path: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

impl CgroupRoot {
    /// Finds and creates the controller's parent group (`lambda-<pid>`). `None`
    /// when no hierarchy with the memory controller is writable.
    pub(crate) fn create() -> Option<Self> {
        let (v1, v2) = own_groups().ok()?;
        // Unique per Sandbox: several may live in one process (tests).
        static ROOTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = ROOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("lambda-{}-{n}", std::process::id());
        if let Some(root) = v2.and_then(|own| Self::create_v2(&own, &name)) {
            return Some(root);
        }
        let mut root =
            Self { version: CgroupVersion::V1, memory: None, pids: None, cpu: None, cpuacct: None };
        for (controllers, own) in v1 {
            remove_stale(&own);
            let dir = own.join(&name);
            if fs::create_dir(&dir).is_err() && !dir.is_dir() {
                continue;
            }
            for c in &controllers {
                let slot = match c.as_str() {
                    "memory" => &mut root.memory,
                    "pids" => &mut root.pids,
                    "cpu" => &mut root.cpu,
                    _ => &mut root.cpuacct,
                };
                *slot = Some(dir.clone());
            }
        }
        (root.memory.is_some() || root.pids.is_some()).then_some(root)
    }

    /// v2 with delegation: our group must offer memory and pids. A group with
    /// processes cannot enable controllers for children ("no internal
    /// processes"), so the controller first moves itself into a leaf.
    fn create_v2(own: &Path, name: &str) -> Option<Self> {
        let available = fs::read_to_string(own.join("cgroup.controllers")).ok()?;
        let has = |c: &str| available.split_whitespace().any(|a| a == c);
        if !has("memory") || !has("pids") {
            return None;
        }
        let wanted = if has("cpu") { "+memory +pids +cpu" } else { "+memory +pids" };
        if write(&own.join("cgroup.subtree_control"), wanted).is_err() {
            let leaf = own.join("lambda-controller");
            let _ = fs::create_dir(&leaf);
            write(&leaf.join("cgroup.procs"), "0").ok()?;
            write(&own.join("cgroup.subtree_control"), wanted).ok()?;
        }
        let dir = own.join(name);
        if fs::create_dir(&dir).is_err() && !dir.is_dir() {
            return None;
        }
        write(&dir.join("cgroup.subtree_control"), wanted).ok()?;
        let cpu = has("cpu").then(|| dir.clone());
        Some(Self {
            version: CgroupVersion::V2,
            memory: Some(dir.clone()),
            pids: Some(dir),
            cpu,
            cpuacct: None,
        })
    }

    pub(crate) fn has_memory(&self) -> bool {
        self.memory.is_some()
    }
    pub(crate) fn has_pids(&self) -> bool {
        self.pids.is_some()
    }
    pub(crate) fn has_cpu(&self) -> bool {
        self.cpu.is_some()
    }

    /// Creates the group of one process tree and sets its limits.
    pub(crate) fn group(&self, name: &str, limits: &SandboxLimits) -> io::Result<Cgroup> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut make = |parent: &Option<PathBuf>| -> io::Result<Option<PathBuf>> {
            let Some(parent) = parent else { return Ok(None) };
            let dir = parent.join(name);
            if !dirs.contains(&dir) {
                match fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
                dirs.push(dir.clone());
            }
            Ok(Some(dir))
        };
        let memory = make(&self.memory)?;
        let pids = make(&self.pids)?;
        let cpu = make(&self.cpu)?;
        let cpuacct = make(&self.cpuacct)?;
        let mut group = Cgroup {
            version: self.version,
            dirs,
            memory: memory.clone(),
            pids: pids.clone(),
            cpu_usage: None,
            peak: None,
        };
        group.configure(memory.as_deref(), pids.as_deref(), cpu.as_deref(), limits)?;
        let usage = match self.version {
            CgroupVersion::V1 => cpuacct.map(|d| d.join("cpuacct.usage")),
            CgroupVersion::V2 => memory.as_ref().map(|d| d.join("cpu.stat")),
        };
        group.cpu_usage = usage.and_then(|p| File::open(p).ok());
        group.peak = memory.and_then(|d| {
            let file = match self.version {
                CgroupVersion::V1 => "memory.max_usage_in_bytes",
                CgroupVersion::V2 => "memory.peak",
            };
            OpenOptions::new().read(true).write(true).open(d.join(file)).ok()
        });
        Ok(group)
    }
}

impl Drop for CgroupRoot {
    fn drop(&mut self) {
        let mut dirs: Vec<PathBuf> =
            [&self.memory, &self.pids, &self.cpu, &self.cpuacct].into_iter().flatten().cloned().collect();
        dirs.dedup();
        let pending: Vec<PathBuf> = dirs.into_iter().filter(|d| fs::remove_dir(d).is_err()).collect();
        if !pending.is_empty() {
            remove_later(pending); // after the groups of workers still dying
        }
    }
}

/// The group of one sandboxed process tree. Dropping it kills what is left in
/// it and removes it (in the background once the processes are gone).
#[derive(Debug)]
pub struct Cgroup {
    version: CgroupVersion,
    dirs: Vec<PathBuf>,
    memory: Option<PathBuf>,
    pids: Option<PathBuf>,
    /// Kept open: read around every execution.
    cpu_usage: Option<File>,
    peak: Option<File>,
}

/// Limit events counted by the kernel since the group was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupEvents {
    /// Processes killed by the OOM killer because of the memory limit.
    pub oom_kills: u64,
    /// Forks refused because of the process limit.
    pub pids_max_hits: u64,
    /// Times usage reached the memory limit (v1 `memory.failcnt`, v2 `max`
    /// events): not fatal by itself (the kernel reclaims first).
    pub memory_limit_hits: u64,
}

impl Cgroup {
    fn configure(
        &self,
        memory: Option<&Path>,
        pids: Option<&Path>,
        cpu: Option<&Path>,
        limits: &SandboxLimits,
    ) -> io::Result<()> {
        let bytes = limits.memory_bytes.to_string();
        // Microseconds per 100 ms period: 100 % = one core.
        let quota = limits.cpu_percent.map(|p| u64::from(p.max(1)) * 1000);
        match self.version {
            CgroupVersion::V1 => {
                if let Some(d) = memory {
                    write(&d.join("memory.limit_in_bytes"), &bytes)?;
                    // Swap counts against the limit too, where swap accounting exists.
                    let _ = write(&d.join("memory.memsw.limit_in_bytes"), &bytes);
                }
                if let Some(d) = pids {
                    write(&d.join("pids.max"), &limits.pids_max.to_string())?;
                }
                if let (Some(d), Some(quota)) = (cpu, quota) {
                    write(&d.join("cpu.cfs_period_us"), "100000")?;
                    write(&d.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
            }
            CgroupVersion::V2 => {
                if let Some(d) = memory {
                    write(&d.join("memory.max"), &bytes)?;
                    let _ = write(&d.join("memory.swap.max"), "0");
                    write(&d.join("pids.max"), &limits.pids_max.to_string())?;
                }
                if let (Some(d), Some(quota)) = (cpu, quota) {
                    write(&d.join("cpu.max"), &format!("{quota} 100000"))?;
                }
            }
        }
        Ok(())
    }

    /// The `cgroup.procs` files a new process writes itself into (one per hierarchy).
    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// CPU time (user + system) of the whole group so far, microseconds.
    pub fn cpu_usage_us(&self) -> Option<u64> {
        let file = self.cpu_usage.as_ref()?;
        let mut buf = [0u8; 256];
        let n = file.read_at(&mut buf, 0).ok()?;
        let text = std::str::from_utf8(&buf[..n]).ok()?;
        match self.version {
            CgroupVersion::V1 => text.trim().parse::<u64>().ok().map(|ns| ns / 1000),
            CgroupVersion::V2 => {
                text.lines().find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse().ok())
            }
        }
    }

    /// Peak memory since the last [`Cgroup::reset_peak`], bytes.
    pub fn peak_memory_bytes(&self) -> Option<u64> {
        let file = self.peak.as_ref()?;
        let mut buf = [0u8; 32];
        let n = file.read_at(&mut buf, 0).ok()?;
        std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
    }

    /// Starts a new peak-memory window (v1: writes 0; v2: any write resets the
    /// peak as seen through this open file, kernel ≥ 6.12).
    pub fn reset_peak(&self) {
        if let Some(file) = &self.peak {
            let _ = file.write_at(b"0", 0);
        }
    }

    /// OOM kills and refused forks so far.
    pub fn events(&self) -> CgroupEvents {
        let mut events = CgroupEvents::default();
        if let Some(d) = &self.memory {
            match self.version {
                CgroupVersion::V1 => {
                    events.oom_kills = read_key(&d.join("memory.oom_control"), "oom_kill").unwrap_or(0);
                    events.memory_limit_hits = fs::read_to_string(d.join("memory.failcnt"))
                        .ok()
                        .and_then(|t| t.trim().parse().ok())
                        .unwrap_or(0);
                }
                CgroupVersion::V2 => {
                    let file = d.join("memory.events");
                    events.oom_kills = read_key(&file, "oom_kill").unwrap_or(0);
                    events.memory_limit_hits = read_key(&file, "max").unwrap_or(0);
                }
            }
        }
        if let Some(d) = &self.pids {
            events.pids_max_hits = read_key(&d.join("pids.events"), "max").unwrap_or(0);
        }
        events
    }

    /// SIGKILLs every process in the group (v2: `cgroup.kill`; v1: each pid in `cgroup.procs`).
    pub fn kill_all(&self) {
        if self.version == CgroupVersion::V2
            && let Some(d) = &self.memory
            && write(&d.join("cgroup.kill"), "1").is_ok()
        {
            return;
        }
        for dir in &self.dirs {
            let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) else { continue };
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) has no memory-safety preconditions; a pid that
                // was reused meanwhile cannot be in this group (it is ours until rmdir).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.kill_all();
        let dirs = std::mem::take(&mut self.dirs);
        let pending: Vec<PathBuf> = dirs.into_iter().filter(|d| fs::remove_dir(d).is_err()).collect();
        if !pending.is_empty() {
            remove_later(pending);
        }
    }
}

/// Groups whose processes are still dying are removed by one background
/// thread, retried for a while (a process holding GiBs takes tens of ms to go).
fn remove_later(dirs: Vec<PathBuf>) {
    static QUEUE: OnceLock<Mutex<mpsc::Sender<Vec<PathBuf>>>> = OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Vec<PathBuf>>();
        let spawned = std::thread::Builder::new().name("cgroup-cleanup".into()).spawn(move || {
            let mut pending: Vec<(PathBuf, Instant)> = Vec::new();
            loop {
                let wait =
                    if pending.is_empty() { Duration::from_secs(3600) } else { Duration::from_millis(50) };
                match rx.recv_timeout(wait) {
                    Ok(dirs) => pending.extend(dirs.into_iter().map(|d| (d, Instant::now()))),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                pending.retain(|(dir, since)| {
                    let gone = fs::remove_dir(dir).is_ok() || !dir.exists();
                    if !gone && since.elapsed() > Duration::from_secs(30) {
                        tracing::warn!(dir = %dir.display(), "cgroup still busy after 30 s; left behind");
                        return false;
                    }
                    !gone
                });
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the cgroup cleanup thread");
        }
        Mutex::new(tx)
    });
    let _ = queue.lock().unwrap_or_else(|e| e.into_inner()).send(dirs);
}
