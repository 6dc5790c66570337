//! Rust source → `wasm32-wasip1` module: the toolchain check, the template
//! with prebuilt dependencies, bounded compiles, and a disk cache of
//! compiled modules shared by the servers that share the cache dir.

mod compile;
mod diagnostics;
pub mod options;
mod template;
mod toolchain;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lambda_core::{LambdaError, ScriptHash};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

pub(crate) use compile::{CompileFailure, user_file};
pub use options::CompileOptions;
pub use toolchain::ADD_TARGET;

use crate::WasmConfig;
use crate::modules::write_atomic;
use compile::Compile;
use template::Template;
use toolchain::Toolchain;

/// A failed toolchain check or prebuild is retried on demand after this long.
const RETRY_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
enum Status {
    /// Not checked yet, or the template is being built: compiles wait.
    Pending,
    Ready,
    Unavailable(String, Instant),
}

/// What [`RustCompiler::compile`] produced.
pub(crate) enum Compiled {
    /// rustc ran.
    Fresh(Vec<u8>),
    /// Found in the cache dir (compiled before by this or another server).
    Cached(Vec<u8>),
}

pub(crate) struct RustCompiler {
    template: Template,
    toolchain: Toolchain,
    status: Mutex<Status>,
    /// Serialises readiness checks (and the prebuild) so they run once.
    gate: tokio::sync::Mutex<()>,
    permits: Semaphore,
    timeout: Duration,
    jobs: usize,
    install_target: bool,
}

impl RustCompiler {
    pub(crate) fn new(config: &WasmConfig) -> Self {
        Self {
            template: Template::new(&config.rust_cache_dir),
            toolchain: Toolchain::new(config.cargo.clone(), config.compile_memory_bytes),
            status: Mutex::new(Status::Pending),
            gate: tokio::sync::Mutex::new(()),
            permits: Semaphore::new(config.compile_concurrency.max(1)),
            timeout: config.compile_timeout,
            jobs: config.compile_jobs.max(1),
            install_target: config.install_target,
        }
    }

    fn set(&self, status: Status) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = status;
    }

    /// `Err(reason)` when Rust cannot be compiled here; pending counts as able.
    pub(crate) fn health(&self) -> Result<(), String> {
        match &*self.status.lock().unwrap_or_else(|e| e.into_inner()) {
            Status::Unavailable(reason, _) => Err(reason.clone()),
            _ => Ok(()),
        }
    }

    /// Checks the toolchain and builds the template's dependencies, once; a
    /// failure is remembered for [`RETRY_AFTER`], then checked again.
    pub(crate) async fn ensure_ready(&self) -> Result<(), LambdaError> {
        let _gate = self.gate.lock().await;
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match status {
            Status::Ready => return Ok(()),
            Status::Unavailable(reason, at) if at.elapsed() < RETRY_AFTER => {
                return Err(LambdaError::unavailable(format!("the rust runtime is unavailable: {reason}")));
            }
            _ => {}
        }
        self.set(Status::Pending);
        let mut checked = self.toolchain.check().await;
        if let Err(reason) = &checked
            && self.install_target
            && reason.contains("target is not installed")
        {
            tracing::info!("the wasm32-wasip1 target is missing; running `{ADD_TARGET}`");
            checked = match self.toolchain.add_target().await {
                Ok(()) => self.toolchain.check().await,
                Err(e) => Err(format!("{reason} ({e})")),
            };
        }
        let ready = match checked {
            Ok(()) => self.template.prebuild(&self.toolchain, self.jobs).await,
            Err(reason) => Err(reason),
        };
        match ready {
            Ok(()) => {
                self.set(Status::Ready);
                Ok(())
            }
            Err(reason) => {
                tracing::warn!(%reason, "rust runtime unavailable");
                self.set(Status::Unavailable(reason.clone(), Instant::now()));
                Err(LambdaError::unavailable(format!("the rust runtime is unavailable: {reason}")))
            }
        }
    }

    fn artifact_paths(&self, hash: &ScriptHash) -> (PathBuf, PathBuf) {
        let dir = self.template.artifacts_dir();
        let hex = hash.to_hex();
        (dir.join(format!("{hex}.wasm")), dir.join(format!("{hex}.wasm.sha256")))
    }

    fn cached(&self, hash: &ScriptHash) -> Option<Vec<u8>> {
        let (path, sum) = self.artifact_paths(hash);
        let expected = std::fs::read_to_string(sum).ok()?;
        let bytes = std::fs::read(path).ok()?;
        (hex::encode(Sha256::digest(&bytes)) == expected.trim()).then_some(bytes)
    }

    /// The module of `source`, from the cache dir or compiled (one compile
    /// at a time per permit).
    pub(crate) async fn compile(
        &self,
        hash: &ScriptHash,
        source: &str,
        options: &CompileOptions,
    ) -> Result<Compiled, CompileFailure> {
        self.ensure_ready().await.map_err(CompileFailure::Transient)?;
        if let Some(bytes) = self.cached(hash) {
            return Ok(Compiled::Cached(bytes));
        }
        let _permit = self.permits.acquire().await.map_err(|_| {
            CompileFailure::Transient(LambdaError::unavailable("the rust runtime is shutting down"))
        })?;
        let started = Instant::now();
        let compile = Compile {
            template: &self.template,
            toolchain: &self.toolchain,
            timeout: self.timeout,
            jobs: self.jobs,
        };
        let bytes = compile.run(hash, source, options).await?;
        tracing::info!(hash = %hash, seconds = started.elapsed().as_secs_f64(), bytes = bytes.len(), "compiled rust");
        let (path, sum) = self.artifact_paths(hash);
        let saved = write_atomic(&path, &bytes)
            .and_then(|()| write_atomic(&sum, hex::encode(Sha256::digest(&bytes)).as_bytes()));
        if let Err(e) = saved {
            tracing::warn!(error = %e, "could not cache a compiled module");
        }
        Ok(Compiled::Fresh(bytes))
    }
}
