//! One interpreter process speaking the worker protocol. Its handle owns the
//! child and kills the child's whole process group when dropped.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lambda_core::{ErrorCode, LambdaError, Language};
use lambda_sandbox::{Cgroup, CgroupEvents, FsView, Jail, PreparedView, Sandbox};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};

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

/// CPU time and peak memory of one invocation.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    pub cpu_us: Option<u64>,
    pub peak_memory_bytes: Option<u64>,
}

/// Why an exchange with a worker failed. Every fault but `NotStarted` discards the worker.
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
    /// The worker died while this request still waited behind another one:
    /// it never ran, so it may run on another worker.
    NotStarted,
    /// The request's deadline passed before its answer came (the caller maps it to a timeout).
    Deadline,
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
            Self::NotStarted => LambdaError::unavailable("the worker was lost before the execution started"),
            Self::Deadline => LambdaError::new(ErrorCode::Timeout, "the deadline passed"),
        }
    }
}

/// What a request gets back: the host's frame and what the worker used for it.
pub(crate) type Reply = Result<(Response, Usage), WorkerFault>;

/// A request written to the worker, waiting for its response frame.
struct Pending {
    seq: u64,
    reply: oneshot::Sender<Reply>,
}

/// One request for the writer task: its encoded frame and where the answer goes.
struct Job {
    frame: Vec<u8>,
    seq: u64,
    reply: oneshot::Sender<Reply>,
}

/// What the worker handle and its two I/O tasks share.
struct Shared {
    id: u64,
    /// Requests written (or being written), oldest first; the host answers in order.
    pending: Mutex<VecDeque<Pending>>,
    /// The worker's sandbox (its cgroup): dropped last, killing what is left.
    jail: Option<Jail>,
    /// Limit events already accounted for.
    events: Mutex<CgroupEvents>,
    limits: (u64, u64),
    pgid: Option<Pid>,
    /// Set once the worker is killed or its reader ended: it takes no more requests.
    dead: AtomicBool,
}

impl Shared {
    fn cgroup(&self) -> Option<&Cgroup> {
        self.jail.as_ref().and_then(Jail::cgroup)
    }

    fn kill(&self) {
        self.dead.store(true, Ordering::Release);
        if let Some(pgid) = self.pgid {
            // ESRCH (already gone) is the expected outcome for a worker that exited.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    /// The sandbox limit hit since the last check, if any: `memory` (an OOM
    /// kill; or the limit reached by a worker that then died) or `processes`.
    fn limit_hit(&self, died: bool) -> Option<WorkerFault> {
        let now = self.cgroup()?.events();
        let before = std::mem::replace(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()), now);
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

    fn pending(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A live interpreter process speaking the worker protocol. Requests are
/// pipelined: several may be written before the first is answered, and the
/// host runs them one after another (DESIGN.md, "Runtimes"). A writer task
/// sends every queued frame in one write, a reader task matches response
/// frames to requests in order. Dropping the handle kills the process group.
pub(crate) struct Worker {
    pub id: u64,
    pub language: Language,
    shared: Arc<Shared>,
    jobs: mpsc::UnboundedSender<Job>,
    next_seq: AtomicU64,
    /// Requests sent and not yet answered (maintained by the pool's leases).
    pub in_flight: AtomicUsize,
}

/// Builds a worker's command line, environment and jail, and starts it.
fn start_process(cmd: &WorkerCommand) -> io::Result<(Child, Option<Jail>, (u64, u64))> {
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
    let child = Command::from(std_cmd).kill_on_drop(true).spawn()?;
    Ok((child, jail, limits))
}

impl Worker {
    /// Starts an interpreter running the host program and waits for its ready frame.
    pub(crate) async fn spawn(cmd: &WorkerCommand, id: u64) -> io::Result<Self> {
        // A sandboxed start blocks until the child has built its jail and
        // exec'd the interpreter (12 ms at the median, 50 ms at worst, measured
        // with `bench/run --only nodejs-init`): off the async threads, which
        // go on serving requests meanwhile.
        let owned = cmd.clone();
        let (mut child, jail, limits) =
            tokio::task::spawn_blocking(move || start_process(&owned)).await.map_err(io::Error::other)??;
        let missing = || io::Error::other("worker pipes missing");
        let stdin = child.stdin.take().ok_or_else(missing)?;
        let stdout = child.stdout.take().ok_or_else(missing)?;
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(drain_stderr(stderr, id));
        }
        let pgid = child.id().and_then(|pid| i32::try_from(pid).ok()).map(Pid::from_raw);
        let shared = Arc::new(Shared {
            id,
            pending: Mutex::new(VecDeque::new()),
            jail,
            events: Mutex::new(CgroupEvents::default()),
            limits,
            pgid,
            dead: AtomicBool::new(false),
        });
        let mut stdout = BufReader::with_capacity(64 * 1024, stdout);
        let mut line = Vec::with_capacity(4096);
        let ready = protocol::read_frame(&mut stdout, &mut line, cmd.max_frame).await;
        let ready = match ready {
            Ok(FrameRead::Line) => Response::parse(&line).ok(),
            _ => None,
        };
        match ready {
            Some(r) if r.ok && r.ready => {}
            Some(_) => return Err(io::Error::other("worker host did not start with a ready frame")),
            None => {
                let status = exit_status(&mut child, &shared).await;
                return Err(io::Error::other(format!("worker host exited at start ({status})")));
            }
        }
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(stdin, rx, shared.clone()));
        tokio::spawn(read_loop(stdout, line, child, cmd.max_frame, shared.clone()));
        Ok(Self {
            id,
            language: cmd.language,
            shared,
            jobs,
            next_seq: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
        })
    }

    pub(crate) fn pgid(&self) -> Option<Pid> {
        self.shared.pgid
    }

    /// True once the worker was killed or lost: it is only waiting to be dropped.
    pub(crate) fn is_dead(&self) -> bool {
        self.shared.dead.load(Ordering::Acquire)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The sandbox limit hit since the last check, if any.
    pub(crate) fn limit_hit(&self) -> Option<WorkerFault> {
        self.shared.limit_hit(false)
    }

    pub(crate) async fn prepare(&self, script: &str, deadline: Instant) -> Reply {
        self.send_script("prepare", script, deadline).await
    }

    /// Compiles `script` without running any of it.
    pub(crate) async fn check(&self, script: &str, deadline: Instant) -> Reply {
        self.send_script("check", script, deadline).await
    }

    async fn send_script(&self, op: &'static str, script: &str, deadline: Instant) -> Reply {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let mut frame = Vec::with_capacity(script.len() + 48);
        protocol::encode_script(&mut frame, op, seq, script);
        self.call(frame, seq, deadline).await
    }

    pub(crate) async fn invoke(
        &self,
        params: &Value,
        context: &Value,
        request_id: &str,
        deadline: Instant,
    ) -> Reply {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let mut frame = Vec::with_capacity(256);
        protocol::encode_invoke(&mut frame, seq, params, context, request_id);
        self.call(frame, seq, deadline).await
    }

    /// Sends one request and waits for its answer until `deadline`. A request
    /// still running at its deadline has its worker killed: the requests queued
    /// behind it come back as [`WorkerFault::NotStarted`]. A waiter that gives
    /// up (its deadline, or its client went away) leaves a watchdog behind, so
    /// a request that hangs the worker is killed at its deadline all the same.
    async fn call(&self, frame: Vec<u8>, seq: u64, deadline: Instant) -> Reply {
        let (reply, answer) = oneshot::channel();
        if self.jobs.send(Job { frame, seq, reply }).is_err() {
            return Err(WorkerFault::NotStarted);
        }
        let mut watchdog = Watchdog { shared: Some(self.shared.clone()), seq, deadline };
        match timeout_at(deadline, answer).await {
            Ok(Ok(reply)) => {
                watchdog.shared = None;
                reply
            }
            // The reader task ended without answering: the worker is gone.
            Ok(Err(_)) => {
                watchdog.shared = None;
                Err(WorkerFault::NotStarted)
            }
            Err(_) => Err(WorkerFault::Deadline),
        }
    }

    pub(crate) fn kill(&self) {
        self.shared.kill();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shared.kill();
    }
}

/// Kills the worker if the request `seq` is still the one running at `deadline`.
struct Watchdog {
    shared: Option<Arc<Shared>>,
    seq: u64,
    deadline: Instant,
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let Some(shared) = self.shared.take() else { return };
        let (seq, deadline) = (self.seq, self.deadline);
        let kill = move || {
            if shared.pending().front().is_some_and(|p| p.seq == seq) {
                shared.kill();
            }
        };
        if Instant::now() >= deadline {
            kill();
        } else if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                tokio::time::sleep_until(deadline).await;
                kill();
            });
        }
    }
}

/// Writes queued requests, every frame waiting at that moment in one write.
async fn write_loop(mut stdin: ChildStdin, mut jobs: mpsc::UnboundedReceiver<Job>, shared: Arc<Shared>) {
    let mut out = Vec::with_capacity(4096);
    while let Some(job) = jobs.recv().await {
        // Let the other ready tasks (requests being parsed) queue theirs first:
        // one write, and one wake-up of the worker, for all of them. Waking a
        // sleeping worker through its pipe was the controller's largest cost
        // on the warm path; two yields took nodejs warm execute from 14.7k to
        // 21.4k req/s and the controller from 84 to 53 µs of CPU per request
        // (16 clients, 2 workers, this 2-vCPU VM).
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        out.clear();
        let mut next = Some(job);
        while let Some(Job { frame, seq, reply }) = next {
            out.extend_from_slice(&frame);
            shared.pending().push_back(Pending { seq, reply });
            next = jobs.try_recv().ok();
        }
        if stdin.write_all(&out).await.is_err() {
            break; // the reader sees EOF and answers what is pending
        }
        if out.capacity() > 1 << 20 {
            out = Vec::with_capacity(4096); // do not keep a huge params buffer per idle worker
        }
    }
    // Requests that arrive after the end are refused by the closed channel.
}

/// Reads response frames and hands each to the oldest pending request. On
/// EOF or a bad frame the worker is done: the request it was running gets the
/// fault (or the sandbox limit behind it), the ones queued behind it `NotStarted`.
async fn read_loop(
    mut stdout: BufReader<ChildStdout>,
    mut line: Vec<u8>,
    mut child: Child,
    max_frame: usize,
    shared: Arc<Shared>,
) {
    // The group's peak memory, read once per read from the pipe: frames that
    // arrived together were all answered before that read, so one reading
    // covers them (a `pread` of the cgroup file per frame was ≈2 % of the
    // controller's CPU on the warm path).
    let mut peak: Option<Option<u64>> = None;
    let fault = loop {
        if !stdout.buffer().contains(&b'\n') {
            peak = None; // this frame needs a new read: memory may have grown since
        }
        let frame = match protocol::read_frame(&mut stdout, &mut line, max_frame).await {
            Ok(FrameRead::Line) => Response::parse(&line).map_err(|_| WorkerFault::Malformed),
            Ok(FrameRead::Oversize) => Err(WorkerFault::Oversize(max_frame)),
            Ok(FrameRead::Eof) | Err(_) => break None,
        };
        let response = match frame {
            Ok(response) => response,
            Err(fault) => break Some(fault),
        };
        let cg = shared.cgroup();
        let (head, idle) = {
            let mut pending = shared.pending();
            let head = pending.pop_front();
            (head, pending.is_empty())
        };
        let Some(head) = head else { break Some(WorkerFault::Malformed) }; // an unasked frame
        if response.seq != Some(head.seq) {
            // A frame the script wrote itself: it answers no request. Put the head
            // back, so that it gets the fault, and end the worker.
            shared.pending().push_front(head);
            break Some(WorkerFault::Malformed);
        }
        let peak_memory_bytes = *peak.get_or_insert_with(|| cg.and_then(Cgroup::peak_memory_bytes));
        let usage = Usage { cpu_us: response.cpu_us, peak_memory_bytes };
        if idle && let Some(cg) = cg {
            cg.reset_peak(); // the next request starts a new peak-memory window
            peak = None;
        }
        let _ = head.reply.send(Ok((response, usage)));
        if line.capacity() > 1 << 20 {
            line = Vec::with_capacity(4096);
        }
    };
    shared.dead.store(true, Ordering::Release);
    let fault = match fault {
        Some(fault) => fault,
        None => WorkerFault::Exited(exit_status(&mut child, &shared).await),
    };
    shared.kill(); // whatever the script left running
    let died = matches!(fault, WorkerFault::Exited(_));
    let fault = shared.limit_hit(died).unwrap_or(fault);
    let mut pending = std::mem::take(&mut *shared.pending());
    if let Some(head) = pending.pop_front() {
        let _ = head.reply.send(Err(fault));
    }
    for rest in pending {
        let _ = rest.reply.send(Err(WorkerFault::NotStarted));
    }
    tracing::trace!(worker = shared.id, "worker reader ended");
}

/// The exit status after EOF; a process that closed its stdout but lives on is killed.
async fn exit_status(child: &mut Child, shared: &Shared) -> String {
    match tokio::time::timeout(Duration::from_millis(500), child.wait()).await {
        Ok(Ok(status)) => match status.code() {
            // The sandbox's init reports a killed worker as 128 + signal.
            Some(code @ 129..=192) if shared.jail.is_some() => format!("killed by signal {}", code - 128),
            _ => status.to_string(),
        },
        Ok(Err(e)) => format!("status unknown: {e}"),
        Err(_) => {
            shared.kill();
            "closed its output".to_owned()
        }
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
