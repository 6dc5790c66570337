//! The `rust` and `wasm` runtimes of Lambda Microservice: Rust source is
//! compiled once to `wasm32-wasip1` (artifact kept by script hash in the
//! store), WebAssembly modules are taken as they are, and both run in one
//! wasmtime engine, a fresh instance per execution (DESIGN.md, "Runtimes").
//!
//! Prepare: options → loaded module (memory ▸ `.cwasm` on disk ▸ artifact in
//! the store ▸ compile), one load per hash at a time. Invoke: loaded module →
//! new store + WASI pipes → `_start` → stdout is the result.
#![deny(unsafe_code)]

mod compute;
mod config;
mod engine;
mod modules;
mod native;
mod output;
pub mod rust;
mod source;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lambda_core::{ErrorCode, LambdaError, Language, ScriptHash};
use lambda_runtime::{
    Invocation, InvokeError, InvokeOutcome, PrepareRequest, Runtime, RuntimeHealth, RuntimeMetrics, Script,
    WorkerCounts,
};
use lambda_store::{Artifact, CompileStatus, Store};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use compute::Compute;
pub use config::WasmConfig;
use engine::{Bounds, Executor};
use modules::{Loaded, ModuleCache};
pub use native::{CompileNativeError, compile_native};
use output::SourceInfo;
use rust::{CompileFailure, CompileOptions, Compiled, RustCompiler};

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Engine(String),
    #[error("cannot create {path}: {source}")]
    Dir { path: String, source: std::io::Error },
}

/// Counters of one language, read by `/metrics`.
#[derive(Default)]
struct Counters {
    compiles: AtomicU64,
    compile_us: AtomicU64,
    cache_hits: AtomicU64,
    instantiations: AtomicU64,
    instantiate_ns: AtomicU64,
    cold: AtomicU64,
    warm: AtomicU64,
    busy: AtomicU64,
}

/// How a load found its module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// Already loaded, native code on disk, or an artifact stored before.
    Cached,
    /// Compiled now (rustc for rust, cranelift from source for wasm).
    Compiled,
}

pub struct WasmRuntime {
    config: WasmConfig,
    executor: Arc<Executor>,
    /// Where executions run (see `compute.rs`).
    compute: Compute,
    modules: ModuleCache,
    store: Arc<dyn Store>,
    rust: RustCompiler,
    /// One load per script hash at a time: concurrent prepares share it.
    loading: Mutex<HashMap<ScriptHash, Arc<tokio::sync::Mutex<()>>>>,
    counters: [Counters; 2],
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Counts an execution as busy until it ends, or its request is dropped.
struct Busy<'a>(&'a AtomicU64);

impl<'a> Busy<'a> {
    fn enter(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn slot(language: Language) -> usize {
    usize::from(language == Language::Wasm)
}

impl WasmRuntime {
    /// Creates the engine and, when `config.prebuild`, starts building the
    /// Rust template in the background (serving does not wait for it).
    pub fn start(config: WasmConfig, store: Arc<dyn Store>) -> Result<Arc<Self>, StartError> {
        let executor =
            Executor::new(config.memory_limit_bytes, config.max_instances).map_err(StartError::Engine)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let compute =
            Compute::start(threads).map_err(|e| StartError::Engine(format!("wasm threads: {e}")))?;
        let cache_dir = config.data_dir.join("wasm-cache");
        let modules = ModuleCache::new(cache_dir.clone(), config.max_loaded_modules)
            .map_err(|source| StartError::Dir { path: cache_dir.display().to_string(), source })?;
        let runtime = Arc::new(Self {
            rust: RustCompiler::new(&config),
            config,
            executor: Arc::new(executor),
            compute,
            modules,
            store,
            loading: Mutex::new(HashMap::new()),
            counters: Default::default(),
            tasks: Mutex::new(Vec::new()),
        });
        if runtime.config.prebuild {
            let rt = runtime.clone();
            runtime.spawn(async move {
                let _ = rt.rust.ensure_ready().await;
            });
        }
        Ok(runtime)
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(tokio::spawn(task));
    }

    /// Prepares these scripts in the background (e.g. the shipped Rust
    /// functions, so their first initialize does not compile).
    pub fn precompile(self: &Arc<Self>, scripts: Vec<Arc<Script>>) {
        let rt = self.clone();
        self.spawn(async move {
            for script in scripts {
                let request = PrepareRequest { script: script.clone(), owner: Arc::from("") };
                if let Err(e) = rt.prepare(request).await {
                    tracing::warn!(hash = %script.hash, error = %e, "precompiling a shipped function failed");
                }
            }
        });
    }

    fn lock_for(&self, hash: ScriptHash) -> Arc<tokio::sync::Mutex<()>> {
        self.loading.lock().unwrap_or_else(|e| e.into_inner()).entry(hash).or_default().clone()
    }

    /// The loaded module of `script`, loading (or compiling) it if needed.
    async fn load(&self, script: &Script) -> Result<(Arc<Loaded>, Found), LambdaError> {
        if let Some(loaded) = self.modules.get(&script.hash) {
            return Ok((loaded, Found::Cached));
        }
        let lock = self.lock_for(script.hash);
        let result = {
            let _one_at_a_time = lock.lock().await;
            self.load_locked(script).await
        };
        self.loading.lock().unwrap_or_else(|e| e.into_inner()).remove(&script.hash);
        result
    }

    async fn load_locked(&self, script: &Script) -> Result<(Arc<Loaded>, Found), LambdaError> {
        if let Some(loaded) = self.modules.get(&script.hash) {
            return Ok((loaded, Found::Cached));
        }
        let engine = self.executor.engine().clone();
        let hash = script.hash;
        let (module, found) = match self.modules.load_native(&engine, &hash) {
            Some(module) => (module, Found::Cached),
            None => {
                let (bytes, found) = match script.language {
                    Language::Rust => self.rust_module_bytes(script).await?,
                    _ => (source::module_bytes(&script.source), Found::Compiled),
                };
                let started = Instant::now();
                let native = self.native_code(script.language, engine.clone(), bytes).await?;
                if script.language == Language::Wasm {
                    self.count_compile(Language::Wasm, started.elapsed());
                }
                // wasmtime checks a module against the instance pool's limits
                // here: a module that declares more memory than a run may have.
                let module = modules::deserialize(&engine, &native)
                    .map_err(|e| self.module_error(script.language, &format!("{e:#}")))?;
                self.modules.save_native(&hash, &native);
                (module, found)
            }
        };
        let pre = self.executor.pre(&module).map_err(|e| self.module_error(script.language, &e))?;
        let loaded = Arc::new(Loaded { pre });
        self.modules.insert(hash, loaded.clone());
        Ok((loaded, found))
    }

    /// `wasm` compiled to native code: by the compiler process when one is
    /// configured, else here on a blocking thread.
    async fn native_code(
        &self,
        language: Language,
        engine: wasmtime::Engine,
        wasm: Vec<u8>,
    ) -> Result<Vec<u8>, LambdaError> {
        let Some(compiler) = &self.config.compiler else {
            return tokio::task::spawn_blocking(move || engine.precompile_module(&wasm))
                .await
                .map_err(|e| LambdaError::internal(format!("module compile task failed: {e}")))?
                .map_err(|e| self.module_error(language, &format!("{e:#}")));
        };
        let (memory, instances) = (self.config.memory_limit_bytes, self.config.max_instances);
        let bound = self.config.compile_memory_bytes;
        native::compile_in_child(compiler, memory, instances, bound, wasm, self.config.compile_timeout)
            .await
            .map_err(|failure| match failure {
                native::NativeFailure::Invalid(message) => self.module_error(language, &message),
                // Like a rustc run past its time: the script is too costly to compile.
                native::NativeFailure::TimedOut(limit) => {
                    compile_time_exceeded("compiling to native code", limit)
                }
                native::NativeFailure::OutOfMemory(bytes) => compile_memory_exceeded(bytes),
                native::NativeFailure::Failed(message) => LambdaError::internal(message),
            })
    }

    /// A module wasmtime refuses: the user's fault for `wasm`, ours for
    /// `rust` (rustc produced it), except a module that asks for more than a
    /// run may have (a Rust program can too, with a large static): that is
    /// the resource limit of either.
    fn module_error(&self, language: Language, message: &str) -> LambdaError {
        if let Some(what) = over_pool_limit(message) {
            let limit = self.config.memory_limit_bytes;
            let message = match what {
                "memory" => {
                    format!("the module declares more memory than its limit of {} MiB", limit / (1024 * 1024))
                }
                _ => format!("the module declares a {what} larger than a run may have"),
            };
            let e = LambdaError::new(ErrorCode::ResourceLimit, message).with("limit", what);
            return if what == "memory" { e.with("limit_bytes", limit) } else { e };
        }
        if language == Language::Rust {
            return LambdaError::internal(format!("the compiled module does not load: {message}"));
        }
        let mut e = LambdaError::new(ErrorCode::CompileError, format!("invalid wasm module: {message}"))
            .with("message", message);
        if let Some((line, column)) = source::wat_position(message) {
            e = e.with("line", line).with("column", column);
        }
        e
    }

    fn count_compile(&self, language: Language, took: Duration) {
        let c = &self.counters[slot(language)];
        c.compiles.fetch_add(1, Ordering::Relaxed);
        c.compile_us.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// The wasm of a Rust script: the stored artifact, or a compile whose
    /// outcome (module or diagnostics) is stored for every later prepare.
    async fn rust_module_bytes(&self, script: &Script) -> Result<(Vec<u8>, Found), LambdaError> {
        let options = CompileOptions::parse(script.compile_options.as_ref())?;
        match self.store.get_artifact(&script.hash).await {
            Ok(Some(a)) if a.compile_status == CompileStatus::Succeeded && !a.bytes.is_empty() => {
                return Ok((a.bytes, Found::Cached));
            }
            Ok(Some(a)) if a.compile_status == CompileStatus::Failed => {
                return Err(stored_compile_error(a.compile_error.as_ref()));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reading a compiled artifact failed; compiling"),
        }
        let started = Instant::now();
        let (status, bytes, error, found) =
            match self.rust.compile(&script.hash, &script.source, &options).await {
                Ok(Compiled::Fresh(bytes)) => {
                    self.count_compile(Language::Rust, started.elapsed());
                    (CompileStatus::Succeeded, bytes, None, Found::Compiled)
                }
                Ok(Compiled::Cached(bytes)) => (CompileStatus::Succeeded, bytes, None, Found::Cached),
                Err(CompileFailure::Rejected(e)) => {
                    self.count_compile(Language::Rust, started.elapsed());
                    (CompileStatus::Failed, Vec::new(), Some(e), Found::Compiled)
                }
                Err(CompileFailure::Transient(e)) => return Err(e),
            };
        let artifact = Artifact {
            script_hash: script.hash,
            language: Language::Rust,
            compile_status: status,
            bytes,
            compile_error: error.as_ref().map(|e| json!({ "message": e.message, "details": e.details })),
            created_at: chrono::Utc::now(),
        };
        if let Err(e) = self.store.put_artifact(&artifact).await {
            tracing::warn!(error = %e, "storing a compiled artifact failed");
        }
        match error {
            Some(e) => Err(e),
            None => Ok((artifact.bytes, found)),
        }
    }

    fn source_info(script: &Script) -> SourceInfo {
        SourceInfo { user_file: (script.language == Language::Rust).then(|| rust::user_file(&script.source)) }
    }
}

/// The `COMPILE_ERROR` of a failed compile, as stored with its artifact.
/// A compile (`what`) that ran past `limit`: the script's, a 461, and never
/// stored, so the next initialize tries again.
/// What a module asks for beyond the instance pool's limits, from
/// wasmtime's refusal ("… does not fit in pooling allocator requirements …").
fn over_pool_limit(message: &str) -> Option<&'static str> {
    let at = message.find("pooling allocator")?;
    let rest = &message[at..];
    if rest.contains("table") {
        Some("table")
    } else if rest.contains("memor") {
        Some("memory")
    } else {
        Some("module")
    }
}

fn compile_time_exceeded(what: &str, limit: Duration) -> LambdaError {
    let secs = limit.as_secs();
    LambdaError::new(ErrorCode::CompileError, format!("{what} took longer than {secs} s"))
        .with("limit", "compile_time")
        .with("timeout_seconds", secs)
}

/// A compiler process that died of its memory bound says so on stderr:
/// Rust's "memory allocation of N bytes failed" (then an abort), or LLVM's
/// "out of memory". Shared by the Rust compile and the native compile.
pub(crate) fn ran_out_of_memory(stderr: &str) -> bool {
    stderr.contains("memory allocation of") || stderr.contains("out of memory")
}

/// Like [`compile_time_exceeded`]: the module is too costly to compile.
fn compile_memory_exceeded(bytes: u64) -> LambdaError {
    let mib = bytes / (1024 * 1024);
    LambdaError::new(ErrorCode::CompileError, format!("compiling to native code needed more than {mib} MiB"))
        .with("limit", "compile_memory")
        .with("limit_mb", mib)
}

fn stored_compile_error(stored: Option<&Value>) -> LambdaError {
    let message = stored.and_then(|v| v["message"].as_str()).unwrap_or("the Rust code does not compile");
    let mut e = LambdaError::new(ErrorCode::CompileError, message);
    if let Some(Value::Object(details)) = stored.map(|v| &v["details"]) {
        e.details = details.clone();
    }
    e
}

#[async_trait]
impl Runtime for WasmRuntime {
    fn languages(&self) -> Vec<Language> {
        vec![Language::Rust, Language::Wasm]
    }

    async fn prepare(&self, request: PrepareRequest) -> Result<(), LambdaError> {
        let script = &request.script;
        if script.language == Language::Rust {
            CompileOptions::parse(script.compile_options.as_ref())?;
        }
        let (_, found) = self.load(script).await?;
        if found == Found::Cached {
            self.counters[slot(script.language)].cache_hits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn invoke(&self, inv: Invocation) -> Result<InvokeOutcome, InvokeError> {
        let started = Instant::now();
        let counters = &self.counters[slot(inv.script.language)];
        let metrics = |cold_start, peak: Option<usize>| RuntimeMetrics {
            wall_us: started.elapsed().as_micros() as u64,
            cold_start,
            peak_memory_bytes: peak.map(|p| p as u64),
            ..RuntimeMetrics::default()
        };
        let (loaded, cold) = match self.modules.get(&inv.script.hash) {
            Some(loaded) => (loaded, false),
            None => match self.load(&inv.script).await {
                Ok((loaded, _)) => (loaded, true),
                Err(error) => {
                    return Err(InvokeError { error, logs: Vec::new(), metrics: metrics(true, None) });
                }
            },
        };
        (if cold { &counters.cold } else { &counters.warm }).fetch_add(1, Ordering::Relaxed);
        let stdin = serde_json::to_vec(&inv.params).unwrap_or_else(|_| b"{}".to_vec());
        let limits = &self.config.limits;
        let bounds = Bounds { stdout_bytes: limits.max_result_bytes + 2, stderr_bytes: limits.max_log_bytes };
        let busy = Busy::enter(&counters.busy);
        let executor = self.executor.clone();
        let module = loaded.clone();
        let deadline = started + inv.timeout;
        let report =
            self.compute.run(async move { executor.run(&module.pre, stdin, deadline, bounds).await }).await;
        drop(busy);
        let Some(report) = report else {
            let error = LambdaError::internal("the wasm execution failed unexpectedly");
            return Err(InvokeError { error, logs: Vec::new(), metrics: metrics(cold, None) });
        };
        counters.instantiations.fetch_add(1, Ordering::Relaxed);
        counters.instantiate_ns.fetch_add(report.instantiate.as_nanos() as u64, Ordering::Relaxed);
        let peak = Some(report.peak_memory);
        let memory_limit = self.executor.memory_limit();
        match output::interpret(&report, limits, memory_limit, inv.timeout, Self::source_info(&inv.script)) {
            Ok((result, logs)) => Ok(InvokeOutcome { result, logs, metrics: metrics(cold, peak) }),
            Err((error, logs)) => Err(InvokeError { error, logs, metrics: metrics(cold, peak) }),
        }
    }

    fn health(&self, language: Language) -> RuntimeHealth {
        match language {
            Language::Rust => match self.rust.health() {
                Ok(()) => RuntimeHealth::Ok,
                Err(reason) => RuntimeHealth::Unavailable(reason),
            },
            Language::Wasm => RuntimeHealth::Ok,
            other => RuntimeHealth::Unavailable(format!("runtime {other} is not served by the wasm engine")),
        }
    }

    fn worker_counts(&self, language: Language) -> WorkerCounts {
        if !matches!(language, Language::Rust | Language::Wasm) {
            return WorkerCounts::default();
        }
        let c = &self.counters[slot(language)];
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WorkerCounts {
            busy: load(&c.busy),
            cold_starts: load(&c.cold),
            warm_starts: load(&c.warm),
            compiles: load(&c.compiles),
            compile_seconds: load(&c.compile_us) as f64 / 1e6,
            compile_cache_hits: load(&c.cache_hits),
            instantiations: load(&c.instantiations),
            instantiate_seconds: load(&c.instantiate_ns) as f64 / 1e9,
            ..WorkerCounts::default()
        }
    }

    async fn shutdown(&self) {
        for task in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compile_past_its_time_is_the_scripts_461_with_the_limit() {
        let e = compile_time_exceeded("compiling to native code", Duration::from_secs(120));
        assert_eq!(e.code, ErrorCode::CompileError);
        assert_eq!(e.code.http_status(), 461);
        assert_eq!(e.message, "compiling to native code took longer than 120 s");
        assert_eq!(e.details["limit"], "compile_time");
        assert_eq!(e.details["timeout_seconds"], 120);
    }
}
