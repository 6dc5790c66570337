//! `lambda serve` and `lambda migrate`: wire storage, cache, runtimes and the
//! API together, serve until a signal, then shut down in order.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lambda_api::ratelimit::RedisRateLimiter;
use lambda_api::{ApiConfig, AppState, ServeConfig};
use lambda_cache::{Cache, MemoryCache, RedisCache};
use lambda_core::Language;
use lambda_runtime::{LocalRuntime, LocalRuntimeConfig, Runtime, RuntimeRouter, resolve_interpreter};
use lambda_store::{LogPipeline, PipelineConfig, PostgresStore, SqliteStore, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, ServeArgs, StorageArgs};

pub enum Failure {
    Config(String),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self::Other(e)
    }
}

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// How long the log pipeline gets to write what it holds at shutdown.
const FLUSH_DEADLINE: Duration = Duration::from_secs(5);
/// How often expired sessions are marked and old ones purged.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(60);
/// Expired and closed sessions stay readable this long before they are purged.
const PURGE_AFTER: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// Each keep-alive client holds a descriptor: lift the soft limit to the hard one.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, "could not raise the open files limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not read the open files limit"),
    }
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if format == "json" { builder.json().try_init() } else { builder.try_init() };
}

/// PostgreSQL when DATABASE_URL is set, else SQLite in the data dir; both
/// migrated on open (PostgreSQL under an advisory lock, so a fleet starting
/// together migrates once). The data dir is created either way: it holds the
/// log spill file and the runtimes' files.
async fn open_store(storage: &StorageArgs) -> Result<Arc<dyn Store>, Failure> {
    std::fs::create_dir_all(&storage.data_dir).map_err(|e| {
        Failure::Config(format!("LAMBDA_DATA_DIR: cannot create {}: {e}", storage.data_dir.display()))
    })?;
    if let Some(postgres) = storage.postgres().map_err(Failure::Config)? {
        let store =
            PostgresStore::connect(&postgres).await.context("connecting to PostgreSQL (DATABASE_URL)")?;
        tracing::info!(max_connections = postgres.max_connections, "storage: postgres");
        return Ok(Arc::new(store));
    }
    let path = storage.data_dir.join("lambda.db");
    let store = SqliteStore::open(&path).await.with_context(|| format!("opening {}", path.display()))?;
    tracing::info!(path = %path.display(), "storage: sqlite");
    Ok(Arc::new(store))
}

/// The result and session cache: Redis when REDIS_URL is set (shared by the
/// fleet; a controller starts even while Redis is down), else in-process.
fn open_cache(config: &Config) -> Result<Arc<dyn Cache>, Failure> {
    match &config.redis {
        Some(redis) => {
            let cache = RedisCache::new(redis).map_err(|e| Failure::Config(e.to_string()))?;
            tracing::info!(key_prefix = %redis.key_prefix, "cache: redis");
            Ok(Arc::new(cache))
        }
        None => Ok(Arc::new(MemoryCache::new(config.args.cache_max_bytes))),
    }
}

pub async fn migrate(storage: StorageArgs) -> Result<(), Failure> {
    init_tracing("text");
    let store = open_store(&storage).await?;
    tracing::info!(storage = store.backend(), "storage schema is up to date");
    Ok(())
}

pub async fn run(args: ServeArgs) -> Result<(), Failure> {
    let config = Config::from_args(args).map_err(Failure::Config)?;
    init_tracing(&config.args.log_format);
    raise_open_files_limit();
    let data_dir = config.args.storage.data_dir.clone();
    let store = open_store(&config.args.storage).await?;
    seed_functions(store.as_ref()).await?;

    let sandbox = start_sandbox(&config)?;
    let mut local_config = runtime_config(&config, &data_dir).await;
    local_config.sandbox = sandbox;
    let local = LocalRuntime::start(local_config).await.context("starting the runtimes")?;
    let wasm_config = config.args.wasm.config(&data_dir, &config.limits).map_err(Failure::Config)?;
    let wasm = crate::wasm::start(&config.args.wasm, wasm_config, store.clone())
        .context("starting the wasm engine")?;
    let runtime: Arc<dyn Runtime> = Arc::new(RuntimeRouter::new(vec![local, wasm]));
    let pipeline = LogPipeline::start(store.clone(), PipelineConfig::in_data_dir(&data_dir));
    let api_config = ApiConfig {
        limits: config.limits.clone(),
        languages: config.languages.clone(),
        cache_ttl: config.cache_ttl(),
        db_logging: config.args.db_logging_enabled,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        auth: config.auth.clone(),
        rate_limits: config.args.security.rate_limits(),
        cors_origins: config.cors_origins.clone(),
        max_header_bytes: config.args.security.max_header_size,
    };
    tracing::info!(auth = ?config.auth.mode, "authentication");
    let cache = open_cache(&config)?;
    let mut state = AppState::new(api_config, store.clone(), cache, runtime.clone(), pipeline.sink());
    if let Some(redis) = &config.redis {
        // Rate limits hold across the fleet when Redis is there.
        let limiter = RedisCache::new(redis).map_err(|e| Failure::Config(e.to_string()))?;
        state = state.with_rate_limiter(Arc::new(RedisRateLimiter::new(Arc::new(limiter))));
    }

    let addr = (config.args.host, config.args.port);
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {}:{}", addr.0, addr.1))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let grpc_listener = TcpListener::bind((config.args.host, config.args.grpc_port))
        .await
        .with_context(|| format!("binding GRPC_PORT {}", config.args.grpc_port))?;
    let grpc_local = grpc_listener.local_addr().context("reading the gRPC address")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let serve_config =
        ServeConfig { metrics: state.metrics().connection_metrics(), ..ServeConfig::default() };
    let metrics_task = match config.args.metrics_port {
        Some(port) => {
            let listener = TcpListener::bind((config.args.host, port))
                .await
                .with_context(|| format!("binding METRICS_PORT {port}"))?;
            tracing::info!(addr = %listener.local_addr().context("metrics address")?, "metrics listening");
            let router = lambda_api::metrics_router(state.clone());
            Some(tokio::spawn(lambda_api::serve(
                listener,
                router,
                stopped(stop_rx.clone()),
                serve_config.clone(),
            )))
        }
        None => None,
    };
    let housekeeping = tokio::spawn(housekeeping(store.clone(), stopped(stop_rx.clone())));
    // Tests and scripts read these lines to learn the ports when PORT=0 and
    // GRPC_PORT=0; the HTTP one comes last.
    println!("lambda gRPC listening on {grpc_local}");
    println!("lambda listening on http://{local}");
    tracing::info!(%local, %grpc_local, data_dir = %data_dir.display(), "serving");

    let router = lambda_api::router(state, config.args.metrics_port.is_none());
    // gRPC frames a message on top of the body: room for the envelope.
    let max_message = config.limits.max_body_bytes + 64 * 1024;
    let grpc = tokio::spawn(lambda_api::serve_grpc(
        grpc_listener,
        router.clone(),
        max_message,
        stopped(stop_rx.clone()),
    ));
    let server = tokio::spawn(lambda_api::serve(listener, router, stopped(stop_rx), serve_config));
    shutdown_signal().await;
    tracing::info!("shutting down: draining requests");
    let _ = stop_tx.send(true);
    match tokio::time::timeout(DRAIN_DEADLINE, server).await {
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "server error"),
        Err(_) => tracing::warn!("drain deadline passed with requests in flight"),
        _ => {}
    }
    match tokio::time::timeout(DRAIN_DEADLINE, grpc).await {
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "gRPC server error"),
        Err(_) => tracing::warn!("drain deadline passed with gRPC calls in flight"),
        _ => {}
    }
    if let Some(task) = metrics_task {
        task.abort();
    }
    housekeeping.abort();
    pipeline.shutdown(FLUSH_DEADLINE).await;
    runtime.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves each interpreter once (a pyenv shim costs ~78 ms per spawn). An
/// interpreter that cannot be resolved is kept as given: `/health` then says
/// why that runtime is unavailable.
async fn interpreter(language: Language, command: &Path) -> std::path::PathBuf {
    match resolve_interpreter(language, command).await {
        Ok(path) => path,
        Err(e) => {
            tracing::warn!(%language, command = %command.display(), error = %e, "interpreter not usable");
            command.to_owned()
        }
    }
}

/// Probes the worker sandbox and logs what is in force. A mechanism that is
/// required but missing stops the start (exit 64) with the list of what is missing.
fn start_sandbox(config: &Config) -> Result<Option<Arc<lambda_sandbox::Sandbox>>, Failure> {
    if config.sandbox.mode == lambda_sandbox::Mode::Off {
        tracing::warn!("LAMBDA_SANDBOX=off: workers run unsandboxed, as the controller's user");
        return Ok(None);
    }
    let sandbox = lambda_sandbox::Sandbox::new(config.sandbox.clone())
        .map_err(|e| Failure::Config(format!("LAMBDA_SANDBOX={}: {e}", config.sandbox.mode.as_str())))?;
    let missing: Vec<&str> = sandbox.missing().iter().map(|m| m.name()).collect();
    if missing.is_empty() {
        tracing::info!(report = %sandbox.report(), "worker sandbox: every mechanism in force");
    } else {
        tracing::warn!(missing = %missing.join(", "), report = %sandbox.report(), "worker sandbox degraded");
    }
    Ok(Some(Arc::new(sandbox)))
}

async fn runtime_config(config: &Config, data_dir: &Path) -> LocalRuntimeConfig {
    let args = &config.args;
    LocalRuntimeConfig {
        node_path: interpreter(Language::Nodejs, &args.node).await,
        python_path: interpreter(Language::Python, &args.python).await,
        work_dir: data_dir.join("runtime"),
        generic_per_language: args.workers_generic,
        max_workers: args.workers_max,
        max_workers_per_script: args.workers_per_script,
        pipeline_depth: args.worker_pipeline,
        idle_timeout: Duration::from_secs(args.worker_idle_seconds),
        node_max_old_space_mb: args.node_max_old_space_mb,
        limits: config.limits.clone(),
        ..LocalRuntimeConfig::default()
    }
}

async fn seed_functions(store: &dyn Store) -> Result<(), Failure> {
    for function in lambda_api::predefined::shipped() {
        if store.seed_function(&function).await.context("seeding predefined functions")? {
            tracing::info!(function = %function.language_title, "seeded predefined function");
        }
    }
    Ok(())
}

/// Marks expired sessions and purges old ones. Safe on every controller at
/// once: each sweep is one idempotent statement (`UPDATE … WHERE status =
/// 'active' AND expires_at <= now`, `DELETE … WHERE status IN (…) AND
/// expires_at < cutoff`), so two controllers sweeping together only split
/// the rows between them (tested in the PostgreSQL store tests).
async fn housekeeping(store: Arc<dyn Store>, stop: impl std::future::Future<Output = ()>) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    let work = async {
        loop {
            tick.tick().await;
            let now = chrono::Utc::now();
            match store.expire_sessions(now).await {
                Ok(n) if n > 0 => tracing::info!(sessions = n, "marked expired"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "expiring sessions failed"),
            }
            match store.purge_sessions(now - PURGE_AFTER).await {
                Ok(n) if n > 0 => tracing::info!(sessions = n, "purged"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purging sessions failed"),
            }
        }
    };
    tokio::select! { _ = work => {}, _ = stop => {} }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
