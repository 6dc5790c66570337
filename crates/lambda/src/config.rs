//! Configuration: every knob is a flag and an environment variable (env wins
//! over nothing, a flag wins over env), validated once at startup. A bad value
//! stops the start with a message naming the variable.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use lambda_core::language::MappingRule;
use lambda_core::{LanguageMap, Limits};

use crate::security::SecurityArgs;

/// Where state lives. Shared by `serve` and `migrate`.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Directory for the embedded SQLite database, the log spill file and runtime files.
    #[arg(long = "data-dir", env = "LAMBDA_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL (postgres://user:password@host:5432/db): the fleet's shared store. Unset: the embedded SQLite store in the data dir.
    #[arg(long = "database-url", env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// File holding DATABASE_URL (Docker/Kubernetes secrets).
    #[arg(long = "database-url-file", env = "DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,
    /// PostgreSQL connections of this controller at most.
    #[arg(long = "database-max-connections", env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,
    /// Milliseconds an operation waits for a PostgreSQL connection before it fails as unavailable (initialize answers 503).
    #[arg(long = "database-acquire-timeout-ms", env = "DATABASE_ACQUIRE_TIMEOUT_MS", default_value_t = 3000)]
    pub database_acquire_timeout_ms: u64,
}

impl StorageArgs {
    /// The PostgreSQL settings, when DATABASE_URL (or DATABASE_URL_FILE) is set.
    pub fn postgres(&self) -> Result<Option<lambda_store::PostgresConfig>, String> {
        let Some(url) =
            secret(self.database_url.as_deref(), self.database_url_file.as_deref(), "DATABASE_URL")?
        else {
            return Ok(None);
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("DATABASE_URL must be a postgres:// or postgresql:// URL".into());
        }
        Ok(Some(lambda_store::PostgresConfig {
            max_connections: u32::try_from(positive(
                u64::from(self.database_max_connections),
                "DATABASE_MAX_CONNECTIONS",
            )?)
            .unwrap_or(u32::MAX),
            acquire_timeout: Duration::from_millis(positive(
                self.database_acquire_timeout_ms,
                "DATABASE_ACQUIRE_TIMEOUT_MS",
            )?),
            ..lambda_store::PostgresConfig::new(url)
        }))
    }
}

/// A secret given as `X` or as `X_FILE` (a path whose content is the value,
/// trailing newline trimmed). Both at once is a configuration error.
pub fn secret(value: Option<&str>, file: Option<&Path>, var: &str) -> Result<Option<String>, String> {
    match (value, file) {
        (Some(_), Some(_)) => Err(format!("set {var} or {var}_FILE, not both")),
        (Some(v), None) => Ok(Some(v.to_owned())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{var}_FILE: cannot read {}: {e}", path.display()))?;
            let text = text.trim_end_matches(['\n', '\r']).to_owned();
            if text.is_empty() {
                Err(format!("{var}_FILE: {} is empty", path.display()))
            } else {
                Ok(Some(text))
            }
        }
        (None, None) => Ok(None),
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// HTTP port (0 picks a free port; the bound address is printed at startup).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Serve /metrics on this port instead of the main one.
    #[arg(long = "metrics-port", env = "METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// gRPC port (0 picks a free port; the bound address is printed at startup).
    #[arg(long = "grpc-port", env = "GRPC_PORT", default_value_t = 50051)]
    pub grpc_port: u16,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Redis URL (redis://[:password@]host:6379[/db]) for the result cache and hot session lookups, shared by the fleet. Unset: an in-process cache.
    #[arg(long = "redis-url", env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// File holding REDIS_URL.
    #[arg(long = "redis-url-file", env = "REDIS_URL_FILE")]
    pub redis_url_file: Option<PathBuf>,
    /// Prefix of every Redis key of this deployment.
    #[arg(long = "redis-key-prefix", env = "REDIS_KEY_PREFIX", default_value = "lambda:")]
    pub redis_key_prefix: String,
    /// Milliseconds a Redis operation may take before the request goes on without the cache.
    #[arg(long = "redis-timeout-ms", env = "REDIS_TIMEOUT_MS", default_value_t = 250)]
    pub redis_timeout_ms: u64,
    /// Seconds a session lives after initialize.
    #[arg(long = "session-expiry-seconds", env = "SESSION_EXPIRY_SECONDS", default_value_t = 3600)]
    pub session_expiry_seconds: u64,
    /// Upper bound on any execution's `timeout_ms`, in seconds (the default timeout is 30 s, capped by this).
    #[arg(long = "runtime-timeout-seconds", env = "RUNTIME_TIMEOUT_SECONDS", default_value_t = 30)]
    pub runtime_timeout_seconds: u64,
    /// Largest accepted `script_content`, bytes (413 above).
    #[arg(long = "max-script-size", env = "MAX_SCRIPT_SIZE", default_value_t = 1_048_576)]
    pub max_script_size: usize,
    /// Largest accepted execute request body, bytes (413 above).
    #[arg(long = "max-body-size", env = "MAX_BODY_SIZE", default_value_t = 10_485_760)]
    pub max_body_size: usize,
    /// Largest result an execution may return, bytes (462 above).
    #[arg(long = "max-result-size", env = "MAX_RESULT_SIZE", default_value_t = 8_388_608)]
    pub max_result_size: usize,
    /// Console lines returned per execution (the rest is cut with a marker).
    #[arg(long = "max-log-lines", env = "MAX_LOG_LINES", default_value_t = 1000)]
    pub max_log_lines: usize,
    /// Seconds a result stays cached unless `X-Cache-Control: max-age` says otherwise.
    #[arg(long = "cache-ttl", env = "CACHE_TTL", default_value_t = 3600)]
    pub cache_ttl: u64,
    /// Memory bound of the in-process result cache, bytes.
    #[arg(long = "cache-max-bytes", env = "CACHE_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub cache_max_bytes: u64,
    /// Write request and error logs to storage (true/false).
    #[arg(long = "db-logging-enabled", env = "DB_LOGGING_ENABLED", default_value = "true", action = clap::ArgAction::Set)]
    pub db_logging_enabled: bool,
    /// JSON file with the Language-Title → runtime table, e.g. [{"prefix":"nodejs-","runtime":"nodejs"},{"regex":"^js-","runtime":"nodejs"}].
    #[arg(long = "runtime-mappings", env = "RUNTIME_MAPPINGS")]
    pub runtime_mappings: Option<PathBuf>,
    /// Node.js interpreter.
    #[arg(long = "node", env = "LAMBDA_NODE", default_value = "node")]
    pub node: PathBuf,
    /// Python 3 interpreter (a pyenv shim is resolved to the real binary once).
    #[arg(long = "python", env = "LAMBDA_PYTHON", default_value = "python3")]
    pub python: PathBuf,
    /// Upper bound on worker processes, all languages together.
    #[arg(long = "workers-max", env = "LAMBDA_WORKERS_MAX", default_value_t = 32)]
    pub workers_max: usize,
    /// Upper bound on workers serving one script of one owner (its parallelism;
    /// more requests queue in their pipelines). Default: the number of CPUs,
    /// at least 2: more workers than cores only add context switches.
    #[arg(long = "workers-per-script", env = "LAMBDA_WORKERS_PER_SCRIPT", default_value_t = default_workers_per_script())]
    pub workers_per_script: usize,
    /// Requests queued on one busy worker of a script at most (1 = strictly one at a time).
    #[arg(long = "worker-pipeline", env = "LAMBDA_WORKER_PIPELINE", default_value_t = 8)]
    pub worker_pipeline: usize,
    /// Pre-started generic workers kept ready per language (fast initialize).
    #[arg(long = "workers-generic", env = "LAMBDA_WORKERS_GENERIC", default_value_t = 2)]
    pub workers_generic: usize,
    /// Seconds an idle worker bound to a script is kept before it is reaped.
    #[arg(long = "worker-idle-seconds", env = "LAMBDA_WORKER_IDLE_SECONDS", default_value_t = 60)]
    pub worker_idle_seconds: u64,
    /// V8 heap bound of each Node.js worker, MiB.
    #[arg(long = "node-max-old-space-mb", env = "LAMBDA_NODE_MAX_OLD_SPACE_MB", default_value_t = 256)]
    pub node_max_old_space_mb: u64,
    /// Threads of the async runtime, which serves HTTP and gRPC (wasm runs on
    /// threads of its own).
    /// Default: half the CPUs, at least one. The script workers are processes
    /// that need cores too, and with fewer threads a request's wake-ups stay on
    /// the thread that runs it: on 2 CPUs one thread took nodejs warm execute
    /// from 28 to 20 µs of controller CPU per request (`bench/run`).
    #[arg(long = "async-threads", env = "LAMBDA_ASYNC_THREADS", default_value_t = default_async_threads(), value_parser = parse_threads)]
    pub async_threads: usize,
    /// Log format: `text` or `json`. Verbosity comes from RUST_LOG (default `info`).
    #[arg(long = "log-format", env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    #[command(flatten)]
    pub security: SecurityArgs,
    #[command(flatten)]
    pub wasm: crate::wasm::WasmArgs,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// Isolation of the worker processes (README, "Security model").
#[derive(Debug, Clone, Args)]
pub struct SandboxArgs {
    /// `auto`: use every mechanism this machine offers and report the rest; `required`: refuse to start without all of them; `off`: no sandbox (development only).
    #[arg(long = "sandbox", env = "LAMBDA_SANDBOX", default_value = "auto", value_parser = ["off", "auto", "required"])]
    pub mode: String,
    /// Comma list of mechanisms that must be present even in `auto` mode (user, pid, mount, network, ipc, uts, pivot_root, no_new_privs, seccomp, landlock, memory, pids, cpu; or `namespaces`, `cgroups`).
    #[arg(long = "sandbox-require", env = "LAMBDA_SANDBOX_REQUIRE", default_value = "")]
    pub require: String,
    /// Memory limit of each worker (its cgroup, all its processes, its /tmp included), MiB.
    #[arg(long = "worker-memory-mb", env = "LAMBDA_WORKER_MEMORY_MB", default_value_t = 256)]
    pub memory_mb: u64,
    /// Processes and threads of each worker (cgroup pids.max; RLIMIT_NPROC inside its user namespace).
    #[arg(long = "worker-pids", env = "LAMBDA_WORKER_PIDS", default_value_t = 64)]
    pub pids: u64,
    /// CPU quota of each worker in percent of one core (cgroup cpu quota); 0 = no quota.
    #[arg(long = "worker-cpu-percent", env = "LAMBDA_WORKER_CPU_PERCENT", default_value_t = 100)]
    pub cpu_percent: u32,
    /// Size of each worker's private /tmp, MiB.
    #[arg(long = "worker-tmp-mb", env = "LAMBDA_WORKER_TMP_MB", default_value_t = 16)]
    pub tmp_mb: u64,
    /// Open files of each worker process (RLIMIT_NOFILE; Node needs at least 20).
    #[arg(long = "worker-nofile", env = "LAMBDA_WORKER_NOFILE", default_value_t = 256)]
    pub nofile: u64,
    /// Largest file a worker may write, MiB (RLIMIT_FSIZE).
    #[arg(long = "worker-fsize-mb", env = "LAMBDA_WORKER_FSIZE_MB", default_value_t = 16)]
    pub fsize_mb: u64,
    /// CPU seconds over a worker process's whole life (RLIMIT_CPU backstop; the wall-clock timeout ends executions).
    #[arg(long = "worker-cpu-seconds", env = "LAMBDA_WORKER_CPU_SECONDS", default_value_t = 3600)]
    pub cpu_seconds: u64,
}

impl SandboxArgs {
    pub fn sandbox_config(&self) -> Result<lambda_sandbox::SandboxConfig, String> {
        let mode = lambda_sandbox::Mode::parse(&self.mode).map_err(|e| format!("LAMBDA_SANDBOX: {e}"))?;
        let require = lambda_sandbox::Mechanism::parse_list(&self.require)
            .map_err(|e| format!("LAMBDA_SANDBOX_REQUIRE: {e}"))?;
        if self.nofile < 20 {
            return Err("LAMBDA_WORKER_NOFILE must be at least 20 (Node.js needs them)".into());
        }
        let limits = lambda_sandbox::SandboxLimits {
            memory_bytes: positive(self.memory_mb, "LAMBDA_WORKER_MEMORY_MB")? << 20,
            pids_max: positive(self.pids, "LAMBDA_WORKER_PIDS")?,
            cpu_percent: (self.cpu_percent > 0).then_some(self.cpu_percent),
            nofile: self.nofile,
            fsize_bytes: positive(self.fsize_mb, "LAMBDA_WORKER_FSIZE_MB")? << 20,
            cpu_seconds: positive(self.cpu_seconds, "LAMBDA_WORKER_CPU_SECONDS")?,
            tmp_bytes: positive(self.tmp_mb, "LAMBDA_WORKER_TMP_MB")? << 20,
        };
        Ok(lambda_sandbox::SandboxConfig { mode, require, limits })
    }
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub args: ServeArgs,
    pub limits: Limits,
    pub languages: LanguageMap,
    pub auth: lambda_api::auth::AuthConfig,
    pub cors_origins: Vec<String>,
    pub sandbox: lambda_sandbox::SandboxConfig,
    /// The shared cache, when REDIS_URL is set (else in-process).
    pub redis: Option<lambda_cache::RedisConfig>,
}

impl ServeArgs {
    /// The Redis settings, when REDIS_URL (or REDIS_URL_FILE) is set.
    pub fn redis(&self) -> Result<Option<lambda_cache::RedisConfig>, String> {
        let Some(url) = secret(self.redis_url.as_deref(), self.redis_url_file.as_deref(), "REDIS_URL")?
        else {
            return Ok(None);
        };
        if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://")) {
            return Err("REDIS_URL must be a redis://, rediss:// or unix:// URL".into());
        }
        let op_timeout = Duration::from_millis(positive(self.redis_timeout_ms, "REDIS_TIMEOUT_MS")?);
        Ok(Some(lambda_cache::RedisConfig {
            key_prefix: self.redis_key_prefix.clone(),
            op_timeout,
            break_for: (op_timeout * 2).max(Duration::from_millis(500)),
            ..lambda_cache::RedisConfig::new(url)
        }))
    }
}

fn absolute(path: &Path, var: &str) -> Result<PathBuf, String> {
    std::path::absolute(path).map_err(|e| format!("{var}: cannot resolve {}: {e}", path.display()))
}

fn positive(value: u64, var: &str) -> Result<u64, String> {
    if value == 0 { Err(format!("{var} must be greater than 0")) } else { Ok(value) }
}

impl Config {
    pub fn from_args(mut args: ServeArgs) -> Result<Self, String> {
        // Workers run in a root of their own and builds in directories of
        // their own: a directory handed to them must not depend on this
        // process's working directory (the default `./data` is relative).
        args.storage.data_dir = absolute(&args.storage.data_dir, "LAMBDA_DATA_DIR")?;
        if let Some(dir) = &args.wasm.rust_cache_dir {
            args.wasm.rust_cache_dir = Some(absolute(dir, "LAMBDA_RUST_CACHE_DIR")?);
        }
        // Validated here (exit 64 naming the variable); opened in serve.rs.
        args.storage.postgres()?;
        let redis = args.redis()?;
        if args.metrics_port.is_some_and(|p| p == args.port && p != 0) {
            return Err(
                "METRICS_PORT must differ from PORT (leave it unset to serve /metrics on PORT)".into()
            );
        }
        for (value, var) in [
            (args.max_script_size, "MAX_SCRIPT_SIZE"),
            (args.max_body_size, "MAX_BODY_SIZE"),
            (args.max_result_size, "MAX_RESULT_SIZE"),
            (args.max_log_lines, "MAX_LOG_LINES"),
            (args.workers_max, "LAMBDA_WORKERS_MAX"),
            (args.workers_per_script, "LAMBDA_WORKERS_PER_SCRIPT"),
            (args.worker_pipeline, "LAMBDA_WORKER_PIPELINE"),
        ] {
            positive(value as u64, var)?;
        }
        let max_timeout =
            Duration::from_secs(positive(args.runtime_timeout_seconds, "RUNTIME_TIMEOUT_SECONDS")?);
        let limits = Limits {
            max_script_bytes: args.max_script_size,
            max_body_bytes: args.max_body_size,
            max_timeout,
            session_expiry: Duration::from_secs(positive(
                args.session_expiry_seconds,
                "SESSION_EXPIRY_SECONDS",
            )?),
            max_log_lines: args.max_log_lines,
            max_result_bytes: args.max_result_size,
            ..Limits::default()
        };
        let languages = match &args.runtime_mappings {
            None => LanguageMap::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("RUNTIME_MAPPINGS: cannot read {}: {e}", path.display()))?;
                let rules: Vec<MappingRule> = serde_json::from_str(&text).map_err(|e| {
                    format!("RUNTIME_MAPPINGS: {} is not a valid mapping table: {e}", path.display())
                })?;
                LanguageMap::from_rules(&rules).map_err(|e| format!("RUNTIME_MAPPINGS: {e}"))?
            }
        };
        let auth = args.security.auth_config()?;
        let cors_origins = args.security.cors_origins()?;
        positive(args.security.max_header_size as u64, "MAX_HEADER_SIZE")?;
        let sandbox = args.sandbox.sandbox_config()?;
        Ok(Self { args, limits, languages, auth, cors_origins, sandbox, redis })
    }

    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.args.cache_ttl)
    }
}

fn default_async_threads() -> usize {
    (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1)
}

fn parse_threads(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err(format!("`{value}` is not a thread count from 1 to 1024 (LAMBDA_ASYNC_THREADS)")),
    }
}

fn default_workers_per_script() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).max(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn async_threads_are_a_bounded_count() {
        assert_eq!(parse_threads("1"), Ok(1));
        assert_eq!(parse_threads(" 4 "), Ok(4));
        for bad in ["0", "-1", "two", "100000", ""] {
            assert!(parse_threads(bad).is_err(), "{bad}");
        }
        assert!(default_async_threads() >= 1);
    }

    #[test]
    fn secrets_come_from_value_or_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("s");
        std::fs::write(&file, "hunter2\n").expect("write");
        assert_eq!(secret(Some("v"), None, "X"), Ok(Some("v".into())));
        assert_eq!(secret(None, Some(&file), "X"), Ok(Some("hunter2".into())));
        assert_eq!(secret(None, None, "X"), Ok(None));
        assert!(secret(Some("v"), Some(&file), "X").is_err_and(|e| e.contains("X_FILE")));
        let missing = dir.path().join("missing");
        assert!(secret(None, Some(&missing), "X").is_err_and(|e| e.starts_with("X_FILE")));
    }
}
