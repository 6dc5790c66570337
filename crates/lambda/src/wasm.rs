//! Settings of the `rust` and `wasm` runtimes, and their start-up: the
//! engine, the background build of the Rust template, and the precompile of
//! the shipped Rust functions.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use lambda_core::{Language, Limits, ScriptHash};
use lambda_runtime::Script;
use lambda_store::Store;
use lambda_wasm::{WasmConfig, WasmRuntime};

#[derive(Debug, Clone, Args)]
pub struct WasmArgs {
    /// Linear memory of one wasm instance, MiB (an execution over it is 462 RESOURCE_LIMIT).
    #[arg(long = "wasm-memory-mb", env = "LAMBDA_WASM_MEMORY_MB", default_value_t = 128)]
    pub wasm_memory_mb: u64,
    /// wasm instances running at once; more executions wait for a slot until their deadline.
    #[arg(long = "wasm-max-instances", env = "LAMBDA_WASM_MAX_INSTANCES", default_value_t = 64)]
    pub wasm_max_instances: u32,
    /// The Rust template, its prebuilt dependencies and compiled modules (default `<data dir>/rust`); may be shared by servers.
    #[arg(long = "rust-cache-dir", env = "LAMBDA_RUST_CACHE_DIR")]
    pub rust_cache_dir: Option<PathBuf>,
    /// Wall-clock bound of one Rust compile, seconds.
    #[arg(
        long = "rust-compile-timeout-seconds",
        env = "LAMBDA_RUST_COMPILE_TIMEOUT_SECONDS",
        default_value_t = 120
    )]
    pub rust_compile_timeout_seconds: u64,
    /// Memory bound of a compile, MiB: address space (RLIMIT_AS) of cargo and each rustc, data memory (RLIMIT_DATA) of a module's native compile.
    #[arg(long = "rust-compile-memory-mb", env = "LAMBDA_RUST_COMPILE_MEMORY_MB", default_value_t = 4096)]
    pub rust_compile_memory_mb: u64,
    /// Rust compiles running at once.
    #[arg(long = "rust-compile-concurrency", env = "LAMBDA_RUST_COMPILE_CONCURRENCY", default_value_t = 1)]
    pub rust_compile_concurrency: usize,
    /// Build the Rust template's dependencies at start, in the background (else at the first Rust compile).
    #[arg(long = "rust-prebuild", env = "LAMBDA_RUST_PREBUILD", default_value = "true", action = clap::ArgAction::Set)]
    pub rust_prebuild: bool,
    /// Compile the shipped Rust functions (rust-validator) at start, in the background.
    #[arg(long = "rust-precompile", env = "LAMBDA_RUST_PRECOMPILE", default_value = "true", action = clap::ArgAction::Set)]
    pub rust_precompile: bool,
    /// Run `rustup target add wasm32-wasip1` when the target is missing (at the first readiness check).
    #[arg(long = "rust-install-target", env = "LAMBDA_RUST_INSTALL_TARGET", default_value = "true", action = clap::ArgAction::Set)]
    pub rust_install_target: bool,
    /// The `cargo` used to compile Rust (run with a cleared environment).
    #[arg(long = "cargo", env = "LAMBDA_CARGO", default_value = "cargo")]
    pub cargo: PathBuf,
}

impl WasmArgs {
    /// The runtime's configuration; a zero bound is an error naming its variable.
    pub fn config(&self, data_dir: &Path, limits: &Limits) -> Result<WasmConfig, String> {
        for (value, var) in [
            (self.wasm_memory_mb, "LAMBDA_WASM_MEMORY_MB"),
            (u64::from(self.wasm_max_instances), "LAMBDA_WASM_MAX_INSTANCES"),
            (self.rust_compile_timeout_seconds, "LAMBDA_RUST_COMPILE_TIMEOUT_SECONDS"),
            (self.rust_compile_memory_mb, "LAMBDA_RUST_COMPILE_MEMORY_MB"),
            (self.rust_compile_concurrency as u64, "LAMBDA_RUST_COMPILE_CONCURRENCY"),
        ] {
            if value == 0 {
                return Err(format!("{var} must be greater than 0"));
            }
        }
        let memory = usize::try_from(self.wasm_memory_mb.saturating_mul(1024 * 1024))
            .map_err(|_| "LAMBDA_WASM_MEMORY_MB is too large".to_owned())?;
        let mut config = WasmConfig::new(data_dir);
        if let Some(dir) = &self.rust_cache_dir {
            config.rust_cache_dir = dir.clone();
        }
        config.memory_limit_bytes = memory;
        config.max_instances = self.wasm_max_instances;
        config.compile_timeout = Duration::from_secs(self.rust_compile_timeout_seconds);
        config.compile_memory_bytes = self.rust_compile_memory_mb.saturating_mul(1024 * 1024);
        config.compile_concurrency = self.rust_compile_concurrency;
        config.prebuild = self.rust_prebuild;
        config.install_target = self.rust_install_target;
        config.cargo = self.cargo.clone();
        config.limits = limits.clone();
        // Modules compile in a child of this executable (`wasm-compile`).
        config.compiler = std::env::current_exe().ok();
        Ok(config)
    }
}

/// Starts the engine and, when asked, precompiles the shipped Rust functions
/// (their sessions then initialize without compiling).
pub fn start(
    args: &WasmArgs,
    config: WasmConfig,
    store: Arc<dyn Store>,
) -> Result<Arc<WasmRuntime>, lambda_wasm::StartError> {
    let runtime = WasmRuntime::start(config, store)?;
    if args.rust_precompile {
        let scripts = lambda_api::predefined::shipped()
            .into_iter()
            .filter(|f| f.language == Language::Rust)
            .map(|f| {
                let options = f.compile_options.clone();
                Arc::new(Script {
                    hash: ScriptHash::compute(Language::Rust, &f.script_content, options.as_ref()),
                    language: Language::Rust,
                    source: Arc::from(f.script_content.as_str()),
                    compile_options: options,
                })
            })
            .collect();
        runtime.precompile(scripts);
    }
    Ok(runtime)
}

/// `lambda wasm-compile`: the wasm module on stdin, its native code on stdout.
/// Exit status 1 means wasmtime refused the module (its message on stderr);
/// 2, that the engine could not be built or the pipes failed. Once its engine
/// stands, the process bounds the data memory the compile may add
/// (RLIMIT_DATA, not RLIMIT_AS: the engine reserves address space it never
/// touches), so a module that makes the compiler allocate without end fails
/// its own compile; Rust's "memory allocation of … failed" and an abort say so.
pub fn compile_stdin(
    memory_limit_bytes: usize,
    max_instances: u32,
    compile_memory_bytes: u64,
) -> std::process::ExitCode {
    use std::io::{Read, Write};
    let mut wasm = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut wasm) {
        eprintln!("reading the module: {e}");
        return std::process::ExitCode::from(2);
    }
    let bound = || bound_data_memory(compile_memory_bytes);
    match lambda_wasm::compile_native(memory_limit_bytes, max_instances, &wasm, bound) {
        Ok(native) => match std::io::stdout().write_all(&native) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("writing the native code: {e}");
                std::process::ExitCode::from(2)
            }
        },
        Err(lambda_wasm::CompileNativeError::Module(message)) => {
            eprintln!("{message}");
            std::process::ExitCode::from(1)
        }
        // Not the module's fault: any status but 1 is answered as ours.
        Err(lambda_wasm::CompileNativeError::Engine(message)) => {
            eprintln!("{message}");
            std::process::ExitCode::from(2)
        }
    }
}

/// RLIMIT_DATA at what the process holds now plus `more` bytes.
fn bound_data_memory(more: u64) -> Result<(), String> {
    use nix::sys::resource::{Resource, setrlimit};
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(|e| format!("/proc/self/status: {e}"))?;
    let held_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmData:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .ok_or("no VmData in /proc/self/status")?;
    let limit = held_kib.saturating_mul(1024).saturating_add(more);
    setrlimit(Resource::RLIMIT_DATA, limit, limit).map_err(|e| format!("bounding the compiler's memory: {e}"))
}
