//! One interpreter process speaking the worker protocol. Its handle owns the
//! child and kills the child's whole process group when dropped.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use lambda_core::{ErrorCode, LambdaError, Language};
use lambda_sandbox::{Cgroup, CgroupEvents, FsView, Jail, PreparedView, Sandbox};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use super::protocol::{self, FrameRead, Response};

/// How to start the workers of one language, built once from the config.
#[derive(Debug, Clone)]
pub(crate) struct WorkerCommand {
    pub language: Language,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub work_dir: PathBuf,
    pub home: PathBuf,
    /// Bound on one response frame: result + logs + JSON overhead.
    pub max_frame: usize,
    /// The sandbox and the filesystem view of this language's workers.
    pub sandbox: Option<(Arc<Sandbox>, Arc<PreparedView>)>,
}

/// Where the host programs appear inside a sandbox (read-only).
const SANDBOX_HOSTS_DIR: &str = "/lambda";

impl WorkerCommand {
    /// Runs this language's workers in `sandbox`: the interpreter's prefix and
    /// the host program's directory (at `/lambda`) are all they see of the host.
    pub(crate) fn sandboxed(mut self, sandbox: Arc<Sandbox>) -> io::Result<Self> {
        let limits = sandbox.limits();
        let mut view = FsView::for_program(&self.program, limits.tmp_bytes);
        if sandbox.has_fs_view() {
            let host_arg = self.args.iter().position(|a| Path::new(a).is_absolute() && Path::new(a).exists());
            if let Some(i) = host_arg {
                let host = PathBuf::from(&self.args[i]);
                let (Some(dir), Some(name)) = (host.parent(), host.file_name()) else {
                    return Err(io::Error::other("host program path has no directory"));
                };
                view.read_only_at.push((dir.to_owned(), PathBuf::from(SANDBOX_HOSTS_DIR)));
                self.args[i] = Path::new(SANDBOX_HOSTS_DIR).join(name).into();
            }
            self.home = PathBuf::from("/tmp");
            self.work_dir = PathBuf::from("/tmp");
        }
        let prepared = sandbox.view(&view)?;
        self.sandbox = Some((sandbox, prepared));
        Ok(self)
    }
}

/// CPU time and peak memory of the last invocation, where the cgroup measures them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    pub cpu_us: Option<u64>,
    pub peak_memory_bytes: Option<u64>,
}

/// Why an exchange with a worker failed. Every fault discards the worker.
#[derive(Debug)]
pub(crate) enum WorkerFault {
    /// EOF on the protocol channel: the process exited or was killed.
    Exited(String),
    /// Not a protocol frame: a script wrote to the channel itself.
    Malformed,
    /// A frame longer than the bound.
    Oversize(usize),
    /// A sandbox limit was hit (`memory`, `processes`): the cgroup counted it.
    Limit(&'static str, String),
}

impl WorkerFault {
    /// All of these are the script's doing: a worker host never exits or lies on its own.
    pub(crate) fn into_error(self) -> LambdaError {
        match self {
            Self::Exited(status) => LambdaError::new(
                lambda_core::ErrorCode::RuntimeError,
                format!("worker exited unexpectedly ({status})"),
            ),
            Self::Malformed => LambdaError::new(
                lambda_core::ErrorCode::RuntimeError,
                "worker wrote a malformed response (the script wrote to the protocol channel)",
            ),
            Self::Oversize(max) => LambdaError::new(
                lambda_core::ErrorCode::ResourceLimit,
                format!("response of the script is over the limit of {max} bytes"),
            )
            .with("limit", "result"),
            Self::Limit(limit, message) => {
                LambdaError::new(ErrorCode::ResourceLimit, message).with("limit", limit)
            }
        }
    }
}

pub(crate) struct Worker {
    pub id: u64,
    pub language: Language,
    pgid: Option<Pid>,
    /// The worker's sandbox (its cgroup): dropped after `child`, killing what is left.
    jail: Option<Jail>,
    /// Limit events already accounted for.
    events: CgroupEvents,
    usage: Usage,
    limits: (u64, u64),
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Reused request and response buffers: the warm path allocates only the JSON values.
    out: Vec<u8>,
    line: Vec<u8>,
    max_frame: usize,
}

impl Worker {
    /// Starts an interpreter running the host program and waits for its ready frame.
    pub(crate) async fn spawn(cmd: &WorkerCommand, id: u64) -> io::Result<Self> {
        let mut std_cmd = std::process::Command::new(&cmd.program);
        // An empty environment but for these: nothing of the controller's (secrets) reaches a script.
        std_cmd
            .args(&cmd.args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("HOME", &cmd.home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (jail, limits) = match &cmd.sandbox {
            Some((sandbox, view)) => {
                let mut jail = sandbox.jail(&cmd.language.to_string(), view)?;
                jail.apply(&mut std_cmd); // its own process group, chdir /tmp inside
                let l = sandbox.limits();
                (Some(jail), (l.memory_bytes, l.pids_max))
            }
            None => {
                std::os::unix::process::CommandExt::process_group(&mut std_cmd, 0);
                std_cmd.current_dir(&cmd.work_dir);
                (None, (0, 0))
            }
        };
        let mut child = Command::from(std_cmd).kill_on_drop(true).spawn()?;
        let missing = || io::Error::other("worker pipes missing");
        let stdin = child.stdin.take().ok_or_else(missing)?;
        let stdout = child.stdout.take().ok_or_else(missing)?;
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(drain_stderr(stderr, id));
        }
        let pgid = child.id().and_then(|pid| i32::try_from(pid).ok()).map(Pid::from_raw);
        let mut worker = Self {
            id,
            language: cmd.language,
            pgid,
            jail,
            events: CgroupEvents::default(),
            usage: Usage::default(),
            limits,
            child,
            stdin,
            stdout: BufReader::with_capacity(64 * 1024, stdout),
            out: Vec::with_capacity(4096),
            line: Vec::with_capacity(4096),
            max_frame: cmd.max_frame,
        };
        match worker.read_response().await {
            Ok(r) if r.ok && r.ready => Ok(worker),
            Ok(_) => Err(io::Error::other("worker host did not start with a ready frame")),
            Err(WorkerFault::Exited(status)) => {
                Err(io::Error::other(format!("worker host exited at start ({status})")))
            }
            Err(_) => Err(io::Error::other("worker host wrote a bad ready frame")),
        }
    }

    pub(crate) fn pgid(&self) -> Option<Pid> {
        self.pgid
    }

    fn cgroup(&self) -> Option<&Cgroup> {
        self.jail.as_ref().and_then(Jail::cgroup)
    }

    /// CPU time and peak memory of the last invocation.
    pub(crate) fn usage(&self) -> Usage {
        self.usage
    }

    /// The sandbox limit hit since the last check, if any: `memory` (an OOM
    /// kill; or the limit reached by a worker that then died) or `processes`.
    pub(crate) fn limit_hit(&mut self, died: bool) -> Option<WorkerFault> {
        let now = self.cgroup()?.events();
        let before = std::mem::replace(&mut self.events, now);
        let (memory, pids) = self.limits;
        if now.oom_kills > before.oom_kills || (died && now.memory_limit_hits > before.memory_limit_hits) {
            let message = format!("the script exceeded the memory limit of {} MiB", memory >> 20);
            return Some(WorkerFault::Limit("memory", message));
        }
        if now.pids_max_hits > before.pids_max_hits {
            let message = format!("the script exceeded the limit of {pids} processes and threads");
            return Some(WorkerFault::Limit("processes", message));
        }
        None
    }

    /// A fault, or the sandbox limit behind it.
    pub(crate) fn classify(&mut self, fault: WorkerFault) -> WorkerFault {
        let died = matches!(fault, WorkerFault::Exited(_));
        self.limit_hit(died).unwrap_or(fault)
    }

    pub(crate) async fn prepare(&mut self, script: &str) -> Result<Response, WorkerFault> {
        protocol::encode_prepare(&mut self.out, script);
        self.exchange().await
    }

    pub(crate) async fn invoke(
        &mut self,
        params: &Value,
        context: &Value,
        request_id: &str,
    ) -> Result<Response, WorkerFault> {
        protocol::encode_invoke(&mut self.out, params, context, request_id);
        let cpu_before = self.cgroup().and_then(|cg| {
            cg.reset_peak();
            cg.cpu_usage_us()
        });
        let response = self.exchange().await;
        let cg = self.cgroup();
        self.usage = Usage {
            cpu_us: cpu_before.zip(cg.and_then(Cgroup::cpu_usage_us)).map(|(a, b)| b.saturating_sub(a)),
            peak_memory_bytes: cg.and_then(Cgroup::peak_memory_bytes),
        };
        response
    }

    /// Writes the request in `out` and reads one response frame.
    async fn exchange(&mut self) -> Result<Response, WorkerFault> {
        if self.stdin.write_all(&self.out).await.is_err() {
            return Err(WorkerFault::Exited(self.exit_status().await));
        }
        if self.out.capacity() > 1 << 20 {
            self.out = Vec::with_capacity(4096); // do not keep a huge params buffer per idle worker
        }
        let response = self.read_response().await;
        if self.line.capacity() > 1 << 20 {
            self.line = Vec::with_capacity(4096);
        }
        response
    }

    async fn read_response(&mut self) -> Result<Response, WorkerFault> {
        match protocol::read_frame(&mut self.stdout, &mut self.line, self.max_frame).await {
            Ok(FrameRead::Line) => Response::parse(&self.line).map_err(|_| WorkerFault::Malformed),
            Ok(FrameRead::Oversize) => Err(WorkerFault::Oversize(self.max_frame)),
            Ok(FrameRead::Eof) | Err(_) => Err(WorkerFault::Exited(self.exit_status().await)),
        }
    }

    /// The exit status after EOF; a process that closed its stdout but lives on is killed.
    async fn exit_status(&mut self) -> String {
        match tokio::time::timeout(Duration::from_millis(500), self.child.wait()).await {
            Ok(Ok(status)) => match status.code() {
                // The sandbox's init reports a killed worker as 128 + signal.
                Some(code @ 129..=192) if self.jail.is_some() => format!("killed by signal {}", code - 128),
                _ => status.to_string(),
            },
            Ok(Err(e)) => format!("status unknown: {e}"),
            Err(_) => {
                self.kill();
                "closed its output".to_owned()
            }
        }
    }

    fn kill(&self) {
        if let Some(pgid) = self.pgid {
            // ESRCH (already gone) is the expected outcome for a worker that exited.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads the worker's stderr so it never blocks on a full pipe; the first
/// 16 KiB go to the debug log (the host's own failures show up there).
async fn drain_stderr(mut stderr: ChildStderr, id: u64) {
    let mut budget = 16 * 1024usize;
    let mut buf = vec![0u8; 4096];
    while let Ok(n @ 1..) = stderr.read(&mut buf).await {
        if budget > 0 {
            let shown = n.min(budget);
            budget -= shown;
            tracing::debug!(worker = id, "stderr: {}", String::from_utf8_lossy(&buf[..shown]).trim_end());
        }
    }
}

/// The command line of a language's workers.
pub(crate) fn worker_command(
    language: Language,
    program: &Path,
    host: &Path,
    config: &super::LocalRuntimeConfig,
) -> WorkerCommand {
    let limits = &config.limits;
    let mut args: Vec<OsString> = match language {
        Language::Python => vec!["-I".into(), "-S".into()],
        _ => vec![format!("--max-old-space-size={}", config.node_max_old_space_mb).into()],
    };
    args.push(host.into());
    for n in [limits.max_log_lines, limits.max_log_bytes, limits.max_result_bytes] {
        args.push(n.to_string().into());
    }
    WorkerCommand {
        language,
        program: program.to_path_buf(),
        args,
        work_dir: config.work_dir.clone(),
        home: config.work_dir.join("home"),
        sandbox: None,
        // Logs may grow up to 6x when JSON-escaped; the rest is slack for the envelope.
        max_frame: limits.max_result_bytes + 6 * limits.max_log_bytes + 64 * 1024,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_core::{ErrorCode, Limits};

    #[test]
    fn faults_are_the_scripts_not_the_platforms() {
        let e = WorkerFault::Exited("exit status: 3".into()).into_error();
        assert_eq!(e.code, ErrorCode::RuntimeError);
        assert_eq!(e.message, "worker exited unexpectedly (exit status: 3)");
        assert_eq!(WorkerFault::Malformed.into_error().code, ErrorCode::RuntimeError);
        let e = WorkerFault::Oversize(10).into_error();
        assert_eq!((e.code, e.details["limit"].as_str()), (ErrorCode::ResourceLimit, Some("result")));
    }

    #[test]
    fn command_lines_carry_the_limits() {
        let config = super::super::LocalRuntimeConfig {
            work_dir: "/w".into(),
            node_max_old_space_mb: 128,
            limits: Limits {
                max_log_lines: 7,
                max_log_bytes: 100,
                max_result_bytes: 1000,
                ..Limits::default()
            },
            ..Default::default()
        };
        let node = worker_command(Language::Nodejs, "node".as_ref(), "/w/host.js".as_ref(), &config);
        assert_eq!(
            node.args,
            ["--max-old-space-size=128", "/w/host.js", "7", "100", "1000"].map(OsString::from)
        );
        let py = worker_command(Language::Python, "python3".as_ref(), "/w/host.py".as_ref(), &config);
        assert_eq!(py.args[..3], ["-I", "-S", "/w/host.py"].map(OsString::from));
        assert_eq!(py.home, Path::new("/w/home"));
        assert_eq!(py.max_frame, 1000 + 600 + 64 * 1024);
    }
}
