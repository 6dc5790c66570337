//! Configuration of the wasm engine and the Rust compiler, with the defaults
//! documented in the README.

use std::path::PathBuf;
use std::time::Duration;

use lambda_core::Limits;

/// How the `rust` and `wasm` runtimes run.
#[derive(Debug, Clone)]
pub struct WasmConfig {
    /// Precompiled native modules live in `<data_dir>/wasm-cache`.
    pub data_dir: PathBuf,
    /// The Rust template, its prebuilt dependencies and compiled artifacts
    /// (`LAMBDA_RUST_CACHE_DIR`, default `<data_dir>/rust`). May be shared by
    /// several servers of one machine.
    pub rust_cache_dir: PathBuf,
    /// Linear memory of one instance, bytes (`LAMBDA_WASM_MEMORY_MB`).
    pub memory_limit_bytes: usize,
    /// Instances running at once; more executions wait for a slot until their
    /// deadline (`LAMBDA_WASM_MAX_INSTANCES`).
    pub max_instances: u32,
    /// Modules kept loaded in memory, least recently used evicted.
    pub max_loaded_modules: u64,
    /// Wall-clock bound of one Rust compile (`LAMBDA_RUST_COMPILE_TIMEOUT_SECONDS`).
    pub compile_timeout: Duration,
    /// Address-space bound (RLIMIT_AS) of cargo and rustc, and data-memory
    /// bound (RLIMIT_DATA) of the native compile of a module
    /// (`LAMBDA_RUST_COMPILE_MEMORY_MB`).
    pub compile_memory_bytes: u64,
    /// Rust compiles running at once (`LAMBDA_RUST_COMPILE_CONCURRENCY`).
    pub compile_concurrency: usize,
    /// Jobs of one cargo build (`-j`).
    pub compile_jobs: usize,
    /// The `cargo` command.
    pub cargo: PathBuf,
    /// Build the template's dependencies at start, in the background.
    pub prebuild: bool,
    /// Run `rustup target add wasm32-wasip1` when the target is missing.
    pub install_target: bool,
    /// Output and result bounds.
    pub limits: Limits,
    /// An executable with the `wasm-compile` subcommand (the `lambda`
    /// binary) that compiles modules to native code in a process of its own;
    /// `None` compiles in this process.
    pub compiler: Option<PathBuf>,
}

impl WasmConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            rust_cache_dir: data_dir.join("rust"),
            data_dir,
            memory_limit_bytes: 128 * 1024 * 1024,
            max_instances: 64,
            max_loaded_modules: 256,
            compile_timeout: Duration::from_secs(120),
            compile_memory_bytes: 4096 * 1024 * 1024,
            compile_concurrency: 1,
            compile_jobs: 2,
            cargo: PathBuf::from("cargo"),
            prebuild: true,
            install_target: true,
            limits: Limits::default(),
            compiler: None,
        }
    }
}
