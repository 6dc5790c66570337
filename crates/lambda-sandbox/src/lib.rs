//! Isolation of the processes that run user code (Node.js/Python workers,
//! rustc/cargo compiles): user, PID, mount, network, IPC, UTS and cgroup
//! namespaces, a pivot_root'ed read-only filesystem view, seccomp, landlock,
//! `no_new_privs`, rlimits and a cgroup per process tree (DESIGN.md, "Runtimes").
//!
//! This is the only crate of the workspace that uses `unsafe` (STYLE.md rule 3):
//! the child side of a spawn (`launch`), the probes and a few syscalls. Every
//! block carries a SAFETY note.
//!
//! Use: [`Sandbox::new`] once at startup (probes the kernel, fails when a
//! required mechanism is missing), [`Sandbox::view`] once per program, then per
//! process [`Sandbox::jail`] + [`Jail::apply`] on a `std::process::Command`
//! (which can then become a `tokio::process::Command`). Keep the [`Jail`] as
//! long as the process: it owns the process's cgroup.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

mod cgroup;
mod launch;
mod probe;
mod seccomp;
mod view;

pub use cgroup::{Cgroup, CgroupEvents, CgroupVersion};
pub use probe::SandboxCapabilities;
pub use view::{FsView, PreparedView};

use cgroup::CgroupRoot;
use launch::{Common, Launch};

/// How much isolation to insist on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// No sandbox: workers are plain child processes (development only).
    Off,
    /// Use every mechanism the probe finds; report the missing ones.
    #[default]
    Auto,
    /// Every mechanism is required: a missing one stops the start.
    Required,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Self::Off),
            "auto" => Ok(Self::Auto),
            "required" => Ok(Self::Required),
            other => Err(format!("unknown sandbox mode {other:?} (expected off, auto or required)")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Auto => "auto",
            Self::Required => "required",
        }
    }
}

/// One isolation mechanism, as named in `LAMBDA_SANDBOX_REQUIRE` and the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mechanism {
    UserNamespace,
    PidNamespace,
    MountNamespace,
    NetworkNamespace,
    IpcNamespace,
    UtsNamespace,
    PivotRoot,
    NoNewPrivs,
    Seccomp,
    Landlock,
    CgroupMemory,
    CgroupPids,
    CgroupCpu,
}

impl Mechanism {
    pub const ALL: [Self; 13] = [
        Self::UserNamespace,
        Self::PidNamespace,
        Self::MountNamespace,
        Self::NetworkNamespace,
        Self::IpcNamespace,
        Self::UtsNamespace,
        Self::PivotRoot,
        Self::NoNewPrivs,
        Self::Seccomp,
        Self::Landlock,
        Self::CgroupMemory,
        Self::CgroupPids,
        Self::CgroupCpu,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::UserNamespace => "user",
            Self::PidNamespace => "pid",
            Self::MountNamespace => "mount",
            Self::NetworkNamespace => "network",
            Self::IpcNamespace => "ipc",
            Self::UtsNamespace => "uts",
            Self::PivotRoot => "pivot_root",
            Self::NoNewPrivs => "no_new_privs",
            Self::Seccomp => "seccomp",
            Self::Landlock => "landlock",
            Self::CgroupMemory => "memory",
            Self::CgroupPids => "pids",
            Self::CgroupCpu => "cpu",
        }
    }

    /// Parses a comma list of names; `namespaces` and `cgroups` name groups.
    pub fn parse_list(s: &str) -> Result<Vec<Self>, String> {
        let mut out = Vec::new();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "namespaces" => out.extend(&Self::ALL[..6]),
                "cgroups" => out.extend([Self::CgroupMemory, Self::CgroupPids]),
                _ => match Self::ALL.iter().find(|m| m.name() == name) {
                    Some(m) => out.push(*m),
                    None => {
                        let known: Vec<&str> = Self::ALL.iter().map(|m| m.name()).collect();
                        return Err(format!(
                            "unknown sandbox mechanism {name:?} (known: {}, namespaces, cgroups)",
                            known.join(", ")
                        ));
                    }
                },
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Limits of one sandboxed process tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxLimits {
    /// cgroup memory limit (RAM + swap), bytes.
    pub memory_bytes: u64,
    /// cgroup pids limit: processes and threads; also RLIMIT_NPROC.
    pub pids_max: u64,
    /// cgroup CPU quota in percent of one core; `None` = no quota.
    pub cpu_percent: Option<u32>,
    /// RLIMIT_NOFILE (Node needs ≥ 20).
    pub nofile: u64,
    /// RLIMIT_FSIZE: largest file the process may write, bytes.
    pub fsize_bytes: u64,
    /// RLIMIT_CPU: CPU seconds over the process's whole life (a backstop; the
    /// supervisor's wall-clock deadline is what ends executions).
    pub cpu_seconds: u64,
    /// Size of the private /tmp, bytes (counted in the memory limit too).
    pub tmp_bytes: u64,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 256 << 20,
            pids_max: 64,
            cpu_percent: Some(100),
            nofile: 256,
            fsize_bytes: 16 << 20,
            cpu_seconds: 3600,
            tmp_bytes: 16 << 20,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SandboxConfig {
    pub mode: Mode,
    /// Mechanisms that must be present in `auto` mode too.
    pub require: Vec<Mechanism>,
    pub limits: SandboxLimits,
}

/// A required mechanism is missing, or the sandbox cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "sandbox mechanisms required but not available on this machine: {}",
        .0.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ")
    )]
    Missing(Vec<Mechanism>),
    #[error("sandbox setup failed: {0}")]
    Setup(String),
}

/// The host ids that uid/gid 0 inside map to when the controller is root.
const NOBODY: u32 = 65534;

/// The probed, configured sandbox. Shared by every spawn.
#[derive(Debug)]
pub struct Sandbox {
    config: SandboxConfig,
    caps: SandboxCapabilities,
    common: Arc<Common>,
    cgroups: Option<CgroupRoot>,
    next: AtomicU64,
}

impl Sandbox {
    /// Probes the machine, checks the requirements and prepares what every
    /// spawn shares (seccomp filters, uid maps, the controller's cgroup).
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let filters = seccomp::filters().map_err(SandboxError::Setup)?;
        let caps = SandboxCapabilities::probe_with(&filters);
        let cgroups = CgroupRoot::create();
        let present = |m: Mechanism| match m {
            Mechanism::UserNamespace => caps.user_namespace,
            Mechanism::PidNamespace => caps.pid_namespace,
            Mechanism::MountNamespace => caps.mount_namespace,
            Mechanism::NetworkNamespace => caps.network_namespace,
            Mechanism::IpcNamespace => caps.ipc_namespace,
            Mechanism::UtsNamespace => caps.uts_namespace,
            Mechanism::PivotRoot => caps.pivot_root && caps.pid_namespace,
            Mechanism::NoNewPrivs => caps.no_new_privs,
            Mechanism::Seccomp => caps.seccomp,
            Mechanism::Landlock => caps.landlock_abi > 0,
            Mechanism::CgroupMemory => cgroups.as_ref().is_some_and(CgroupRoot::has_memory),
            Mechanism::CgroupPids => cgroups.as_ref().is_some_and(CgroupRoot::has_pids),
            Mechanism::CgroupCpu => cgroups.as_ref().is_some_and(CgroupRoot::has_cpu),
        };
        let required: Vec<Mechanism> =
            if config.mode == Mode::Required { Mechanism::ALL.to_vec() } else { config.require.clone() };
        let missing: Vec<Mechanism> = required.into_iter().filter(|m| !present(*m)).collect();
        if !missing.is_empty() && config.mode != Mode::Off {
            return Err(SandboxError::Missing(missing));
        }
        let mut ns_flags = 0;
        if caps.user_namespace {
            ns_flags = libc::CLONE_NEWUSER;
            for (ok, flag) in [
                (caps.pid_namespace, libc::CLONE_NEWPID),
                (caps.mount_namespace, libc::CLONE_NEWNS),
                (caps.network_namespace, libc::CLONE_NEWNET),
                (caps.ipc_namespace, libc::CLONE_NEWIPC),
                (caps.uts_namespace, libc::CLONE_NEWUTS),
                (caps.cgroup_namespace, libc::CLONE_NEWCGROUP),
            ] {
                if ok {
                    ns_flags |= flag;
                }
            }
        }
        let maps = caps.user_namespace.then(|| {
            // SAFETY: geteuid/getegid have no preconditions.
            let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
            let (uid, gid) = if caps.root { (NOBODY, NOBODY) } else { (uid, gid) };
            (format!("0 {uid} 1\n").into_bytes(), format!("0 {gid} 1\n").into_bytes())
        });
        let l = &config.limits;
        let mut rlimits = vec![
            (libc::RLIMIT_NOFILE, l.nofile),
            (libc::RLIMIT_FSIZE, l.fsize_bytes),
            (libc::RLIMIT_CORE, 0),
            (libc::RLIMIT_CPU, l.cpu_seconds),
        ];
        if caps.user_namespace {
            // Counted per user namespace, so per sandbox (ignored for host root).
            rlimits.push((libc::RLIMIT_NPROC, l.pids_max));
        }
        let common = Common {
            ns_flags,
            maps,
            hostname: CString::from(c"lambda"),
            rlimits,
            no_new_privs: caps.no_new_privs,
            seccomp: if caps.seccomp { filters } else { Vec::new() },
            landlock_abi: if present(Mechanism::PivotRoot) { caps.landlock_abi } else { 0 },
            drop_caps: caps.user_namespace,
        };
        Ok(Self { config, caps, common: Arc::new(common), cgroups, next: AtomicU64::new(1) })
    }

    pub fn capabilities(&self) -> &SandboxCapabilities {
        &self.caps
    }

    pub fn limits(&self) -> &SandboxLimits {
        &self.config.limits
    }

    /// True when processes get their own mount namespace and filesystem view.
    pub fn has_fs_view(&self) -> bool {
        self.caps.user_namespace
            && self.caps.mount_namespace
            && self.caps.pivot_root
            && self.caps.pid_namespace
    }

    /// Resolves a filesystem view once (per program); pass it to every [`Sandbox::jail`].
    pub fn view(&self, view: &FsView) -> io::Result<Arc<PreparedView>> {
        PreparedView::prepare(view).map(Arc::new)
    }

    /// Makes the cgroup of one new process tree (named `<name>-<n>`) and
    /// returns the jail to apply to its command.
    pub fn jail(&self, name: &str, view: &Arc<PreparedView>) -> io::Result<Jail> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let cgroup = match &self.cgroups {
            Some(root) => Some(root.group(&format!("{name}-{n}"), &self.config.limits)?),
            None => None,
        };
        let procs = cgroup
            .iter()
            .flat_map(Cgroup::procs_files)
            .map(|p| CString::new(p.into_os_string().into_encoded_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| io::Error::other("cgroup path contains a NUL byte"))?;
        let view = self.has_fs_view().then(|| view.clone());
        Ok(Jail { cgroup, launch: Some(Launch { common: self.common.clone(), view, procs }) })
    }

    /// A `Command` for `program` that will start inside a new jail, with an
    /// empty environment: the convenience entry for compiler processes.
    /// Inside, `program` must be reachable through `view` (same path); the
    /// working directory is the private `/tmp` unless the caller sets one
    /// (a path inside the view, e.g. a `read_write_at` target).
    pub fn command(
        &self,
        name: &str,
        view: &Arc<PreparedView>,
        program: &std::path::Path,
    ) -> io::Result<(Command, Jail)> {
        let mut jail = self.jail(name, view)?;
        let mut cmd = Command::new(program);
        cmd.env_clear();
        jail.apply(&mut cmd);
        Ok((cmd, jail))
    }

    /// What is in force, for `/health` (`components.sandbox`) and the startup log.
    pub fn report(&self) -> Value {
        let c = &self.caps;
        let cg = self.cgroups.as_ref();
        let l = &self.config.limits;
        let missing: Vec<&str> =
            Mechanism::ALL.iter().filter(|m| !self.is_active(**m)).map(|m| m.name()).collect();
        json!({
            "mode": self.config.mode.as_str(),
            "status": if missing.is_empty() { "full" } else { "degraded" },
            "missing": missing,
            "running_as_root": c.root,
            "uid_inside_maps_to": self.common.maps.as_ref().map(|(u, _)| String::from_utf8_lossy(u).split_whitespace().nth(1).unwrap_or("").to_owned()),
            "namespaces": {
                "user": c.user_namespace, "pid": c.pid_namespace, "mount": c.mount_namespace,
                "network": c.network_namespace, "ipc": c.ipc_namespace, "uts": c.uts_namespace,
                "cgroup": c.cgroup_namespace,
            },
            "filesystem": if self.has_fs_view() { "pivot_root (read-only binds, private /proc and /tmp)" } else { "host" },
            "network": if c.user_namespace && c.network_namespace { "none" } else { "host" },
            "no_new_privs": c.no_new_privs,
            "seccomp": c.seccomp,
            "seccomp_denies": seccomp::DENIED_SUMMARY,
            "landlock": if self.common.landlock_abi > 0 { Value::from(format!("abi {}", self.common.landlock_abi)) } else { Value::Null },
            "capabilities_dropped": self.common.drop_caps,
            "cgroup": cg.map(|r| match r.version { CgroupVersion::V1 => "v1", CgroupVersion::V2 => "v2" }),
            "cgroup_controllers": {
                "memory": cg.is_some_and(CgroupRoot::has_memory),
                "pids": cg.is_some_and(CgroupRoot::has_pids),
                "cpu": cg.is_some_and(CgroupRoot::has_cpu),
            },
            "limits": {
                "memory_bytes": l.memory_bytes, "pids": l.pids_max, "cpu_percent": l.cpu_percent,
                "nofile": l.nofile, "fsize_bytes": l.fsize_bytes, "cpu_seconds": l.cpu_seconds,
                "tmp_bytes": l.tmp_bytes,
            },
        })
    }

    fn is_active(&self, m: Mechanism) -> bool {
        let c = &self.caps;
        let ns = |on: bool| c.user_namespace && on;
        let cg = self.cgroups.as_ref();
        match m {
            Mechanism::UserNamespace => c.user_namespace,
            Mechanism::PidNamespace => ns(c.pid_namespace),
            Mechanism::MountNamespace => ns(c.mount_namespace),
            Mechanism::NetworkNamespace => ns(c.network_namespace),
            Mechanism::IpcNamespace => ns(c.ipc_namespace),
            Mechanism::UtsNamespace => ns(c.uts_namespace),
            Mechanism::PivotRoot => self.has_fs_view(),
            Mechanism::NoNewPrivs => c.no_new_privs,
            Mechanism::Seccomp => c.seccomp,
            Mechanism::Landlock => self.common.landlock_abi > 0,
            Mechanism::CgroupMemory => cg.is_some_and(CgroupRoot::has_memory),
            Mechanism::CgroupPids => cg.is_some_and(CgroupRoot::has_pids),
            Mechanism::CgroupCpu => cg.is_some_and(CgroupRoot::has_cpu),
        }
    }

    /// Mechanisms not in force (for the startup log in `auto` mode).
    pub fn missing(&self) -> Vec<Mechanism> {
        Mechanism::ALL.iter().copied().filter(|m| !self.is_active(*m)).collect()
    }
}

/// The isolation of one process tree: its cgroup (removed, with anything
/// left in it killed, on drop) and the launch to apply to its command.
#[derive(Debug)]
pub struct Jail {
    cgroup: Option<Cgroup>,
    launch: Option<Launch>,
}

impl Jail {
    /// Makes `cmd` start inside this jail: it gets its own process group and
    /// starts through the sandbox's init. Apply once; stdio pipes and env are
    /// the caller's (clear the environment: nothing of the controller's
    /// should reach user code). A second call does nothing.
    pub fn apply(&mut self, cmd: &mut Command) {
        if let Some(launch) = self.launch.take() {
            launch::install(cmd, launch);
        }
    }

    /// The jail's cgroup, when cgroups are available.
    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.as_ref()
    }

    /// SIGKILLs every process of the jail that the cgroup knows of.
    pub fn kill_all(&self) {
        if let Some(cg) = &self.cgroup {
            cg.kill_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanism_lists_parse() {
        assert_eq!(
            Mechanism::parse_list("seccomp, memory"),
            Ok(vec![Mechanism::Seccomp, Mechanism::CgroupMemory])
        );
        assert_eq!(Mechanism::parse_list("namespaces").map(|v| v.len()), Ok(6));
        assert_eq!(Mechanism::parse_list(""), Ok(vec![]));
        assert!(Mechanism::parse_list("selinux").is_err_and(|e| e.contains("selinux")));
        assert_eq!(Mode::parse("required"), Ok(Mode::Required));
        assert!(Mode::parse("on").is_err());
    }
}
