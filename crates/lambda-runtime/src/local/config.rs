//! Configuration of the local worker pools, and resolution of interpreter paths.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lambda_core::{Language, Limits};
use tokio::process::Command;

/// How the local runtime runs its Node.js and Python workers.
#[derive(Debug, Clone)]
pub struct LocalRuntimeConfig {
    /// The `node` binary. Pass a resolved path: a shim on `PATH` is paid on every spawn.
    pub node_path: PathBuf,
    /// The `python3` binary, resolved (see [`resolve_interpreter`]).
    pub python_path: PathBuf,
    /// Where the host programs are written and workers run (their cwd and `HOME`).
    pub work_dir: PathBuf,
    /// Pre-started workers not yet bound to a script, per language.
    pub generic_per_language: usize,
    /// Bound on all live workers, generic ones included.
    pub max_workers: usize,
    /// Bound on the workers of one (script, owner).
    pub max_workers_per_script: usize,
    /// Requests queued on one worker at most (1 = one at a time). Requests of
    /// one (script, owner) queue on a busy worker rather than wait for a cold
    /// start; the host runs them in order and answers them in one write.
    pub pipeline_depth: usize,
    /// An idle bound worker is killed after this long without work.
    pub idle_timeout: Duration,
    /// Wall-clock limit of a prepare (a module-form script runs its top level then).
    pub prepare_timeout: Duration,
    /// `--max-old-space-size` of Node workers.
    pub node_max_old_space_mb: u64,
    /// Output, result and timeout limits.
    pub limits: Limits,
    /// The isolation of every worker (namespaces, filesystem view, seccomp,
    /// cgroup limits…); `None` runs workers as plain child processes
    /// (`LAMBDA_SANDBOX=off`, development only).
    pub sandbox: Option<Arc<lambda_sandbox::Sandbox>>,
}

impl Default for LocalRuntimeConfig {
    fn default() -> Self {
        Self {
            node_path: PathBuf::from("node"),
            python_path: PathBuf::from("python3"),
            work_dir: std::env::temp_dir().join("lambda-runtime"),
            generic_per_language: 2,
            max_workers: 32,
            max_workers_per_script: 4,
            pipeline_depth: 8,
            idle_timeout: Duration::from_secs(60),
            prepare_timeout: Duration::from_secs(10),
            node_max_old_space_mb: 256,
            limits: Limits::default(),
            sandbox: None,
        }
    }
}

/// Resolves `command` (e.g. `python3` behind a pyenv shim, or `node`) to the real
/// interpreter binary by asking the interpreter itself. Done once at startup: the
/// pyenv shim alone costs ~78 ms per spawn.
pub async fn resolve_interpreter(language: Language, command: &Path) -> std::io::Result<PathBuf> {
    let mut cmd = Command::new(command);
    match language {
        Language::Python => cmd.args(["-c", "import sys; print(sys.executable)"]),
        Language::Nodejs => cmd.args(["-e", "process.stdout.write(process.execPath)"]),
        other => {
            return Err(std::io::Error::other(format!("no interpreter for {other}")));
        }
    };
    let out = cmd.kill_on_drop(true).output().await?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || path.is_empty() {
        return Err(std::io::Error::other(format!(
            "{} did not report its executable ({})",
            command.display(),
            out.status
        )));
    }
    Ok(PathBuf::from(path))
}
