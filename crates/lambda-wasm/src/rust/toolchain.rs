//! Running cargo: a clean environment (none of the controller's variables,
//! so no secret reaches a compile), an address-space bound, its own process
//! group killed at the deadline; and the check that the toolchain and the
//! `wasm32-wasip1` target are installed.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::process::Command;

use super::options::TARGET;

/// The one command that adds the missing target, quoted in errors and `/health`.
pub const ADD_TARGET: &str = "rustup target add wasm32-wasip1";

/// Only what the toolchain needs to find itself (rustup proxies, registry cache).
const PASSED_VARS: &[&str] = &["PATH", "HOME", "CARGO_HOME", "RUSTUP_HOME", "RUSTUP_TOOLCHAIN"];

#[derive(Debug, Clone)]
pub(crate) struct Toolchain {
    cargo: PathBuf,
    env: Vec<(String, String)>,
    memory_kib: u64,
}

/// Why a command did not produce its output.
#[derive(Debug)]
pub(crate) enum RunFailure {
    TimedOut,
    Spawn(String),
}

impl Toolchain {
    pub(crate) fn new(cargo: PathBuf, memory_bytes: u64) -> Self {
        let env =
            PASSED_VARS.iter().filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v))).collect();
        Self { cargo, env, memory_kib: (memory_bytes / 1024).max(1) }
    }

    /// `cargo <args>` in `dir`, under `sh -c 'ulimit -v'` so that cargo and
    /// every rustc it starts inherit the RLIMIT_AS bound.
    pub(crate) fn cargo(&self, dir: &Path, target_dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg("ulimit -v \"$0\" && exec \"$@\"")
            .arg(self.memory_kib.to_string())
            .arg(&self.cargo)
            .args(args)
            .current_dir(dir)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("CARGO_TARGET_DIR", target_dir)
            .env("CARGO_INCREMENTAL", "0")
            .env("CARGO_TERM_COLOR", "never")
            .env("CARGO_TERM_PROGRESS_WHEN", "never");
        cmd
    }

    fn plain(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args).env_clear().envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// `Ok` when cargo runs and the wasm32-wasip1 standard library is
    /// installed; else the reason, naming the command that fixes it.
    pub(crate) async fn check(&self) -> Result<(), String> {
        let cargo = self.cargo.to_string_lossy().into_owned();
        let version = run(self.plain(&cargo, &["--version"]), Duration::from_secs(30)).await;
        if !version.as_ref().is_ok_and(|o| o.status.success()) {
            return Err(format!(
                "cargo (`{cargo}`) is not runnable: install Rust (https://rustup.rs), then `{ADD_TARGET}`"
            ));
        }
        let sysroot = run(self.plain("rustc", &["--print", "sysroot"]), Duration::from_secs(30))
            .await
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        match sysroot {
            Some(root) if root.join("lib/rustlib").join(TARGET).join("lib").is_dir() => Ok(()),
            Some(_) => Err(format!("the {TARGET} target is not installed: run `{ADD_TARGET}`")),
            None => {
                Err(format!("rustc is not runnable: install Rust (https://rustup.rs), then `{ADD_TARGET}`"))
            }
        }
    }
}

impl Toolchain {
    /// `rustup target add wasm32-wasip1`, when rustup is there: what makes
    /// a fresh machine's `cargo run -- serve` able to compile Rust.
    pub(crate) async fn add_target(&self) -> Result<(), String> {
        let out = run(self.plain("rustup", &["target", "add", TARGET]), Duration::from_secs(600))
            .await
            .map_err(|e| format!("`{ADD_TARGET}` did not run: {e:?}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("`{ADD_TARGET}` failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }
}

/// Runs `cmd` in its own process group, collecting its output; at `limit`
/// the whole group (cargo and its rustc children) is killed.
pub(crate) async fn run(mut cmd: Command, limit: Duration) -> Result<Output, RunFailure> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| RunFailure::Spawn(e.to_string()))?;
    let pid = child.id();
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(e)) => Err(RunFailure::Spawn(e.to_string())),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            Err(RunFailure::TimedOut)
        }
    }
}
