//! The local runtime: warm worker processes of the real Node.js and Python
//! interpreters, supervised from tokio (DESIGN.md, "Runtimes").
//!
//! The warm path is: take an idle worker bound to (script, owner), write one
//! request line, read one response line, parse it, put the worker back.

mod config;
mod lease;
mod pool;
mod protocol;
mod worker;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lambda_core::{ErrorCode, LambdaError, Language};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};

pub use config::{LocalRuntimeConfig, resolve_interpreter};
use lease::Lease;
use pool::{Key, LANGUAGES, Pool, lang_index};
use protocol::Response;
use worker::{Usage, Worker, WorkerFault, worker_command};

use crate::{
    Invocation, InvokeError, InvokeOutcome, PrepareRequest, Runtime, RuntimeHealth, RuntimeMetrics,
    WorkerCounts,
};

const NODE_HOST: &str = include_str!("../../../../runtimes/nodejs/host.js");
const PYTHON_HOST: &str = include_str!("../../../../runtimes/python/host.py");
/// Pause before retrying to spawn an interpreter that failed to start.
const RESPAWN_BACKOFF: Duration = Duration::from_secs(5);

/// Why the local runtime could not start (the work dir is unusable).
#[derive(Debug, thiserror::Error)]
#[error("cannot prepare the runtime work dir {path}: {source}")]
pub struct StartError {
    path: String,
    source: std::io::Error,
}

/// Node.js and Python worker pools behind the [`Runtime`] trait.
pub struct LocalRuntime {
    pool: Arc<Pool>,
    /// Per language, a worker that compiles scripts for initialize and never runs one.
    checkers: [tokio::sync::Mutex<Option<Arc<Worker>>>; 2],
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl LocalRuntime {
    /// Writes the host programs into `config.work_dir`, starts each language's
    /// generic workers (a language whose interpreter fails to start is reported
    /// by [`Runtime::health`], not here) and the refill and reaper tasks.
    pub async fn start(config: LocalRuntimeConfig) -> Result<Arc<Self>, StartError> {
        let home = config.work_dir.join("home");
        let err = |source| StartError { path: config.work_dir.display().to_string(), source };
        tokio::fs::create_dir_all(&home).await.map_err(err)?;
        // The host programs sit in a directory of their own: a sandbox binds it read-only.
        let hosts = config.work_dir.join("hosts");
        tokio::fs::create_dir_all(&hosts).await.map_err(err)?;
        let node_host = hosts.join("host.js");
        let python_host = hosts.join("host.py");
        tokio::fs::write(&node_host, NODE_HOST).await.map_err(err)?;
        tokio::fs::write(&python_host, PYTHON_HOST).await.map_err(err)?;
        let mut commands = [
            worker_command(Language::Nodejs, &config.node_path, &node_host, &config),
            worker_command(Language::Python, &config.python_path, &python_host, &config),
        ];
        if let Some(sandbox) = &config.sandbox {
            for cmd in &mut commands {
                *cmd = cmd.clone().sandboxed(sandbox.clone()).map_err(err)?;
            }
        }
        let idle_timeout = config.idle_timeout;
        let pool = Arc::new(Pool::new(config, commands));
        for (lang, language) in LANGUAGES.iter().enumerate() {
            let started = match pool.config.generic_per_language {
                0 => pool.verify(lang).await,
                _ => pool.refill_generic(lang).await,
            };
            if let Err(e) = started {
                tracing::warn!(%language, error = %e.message, "runtime unavailable");
            }
        }
        let tasks = vec![
            tokio::spawn(refill_loop(pool.clone())),
            tokio::spawn(reap_loop(pool.clone(), idle_timeout)),
        ];
        let rt = Arc::new(Self { pool, checkers: Default::default(), tasks: Mutex::new(tasks) });
        for (lang, language) in LANGUAGES.iter().enumerate() {
            if let Err(e) = rt.checker(lang).await {
                tracing::warn!(%language, error = %e.message, "checker did not start");
            }
        }
        Ok(rt)
    }

    fn served(language: Language) -> Result<usize, LambdaError> {
        lang_index(language)
            .ok_or_else(|| LambdaError::unavailable(format!("runtime {language} is not available")))
    }

    fn stop(&self) {
        self.pool.close();
        for task in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            task.abort();
        }
    }
}

impl Drop for LocalRuntime {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Keeps every language's generic pool at its target, woken when a worker is taken or lost.
async fn refill_loop(pool: Arc<Pool>) {
    loop {
        let mut failed = false;
        for lang in 0..LANGUAGES.len() {
            failed |= pool.refill_generic(lang).await.is_err();
        }
        if failed {
            tokio::time::sleep(RESPAWN_BACKOFF).await;
        } else {
            pool.refill.notified().await;
        }
    }
}

/// Kills bound workers idle for longer than `idle_timeout`.
async fn reap_loop(pool: Arc<Pool>, idle_timeout: Duration) {
    let mut tick =
        tokio::time::interval((idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(15)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(cutoff) = std::time::Instant::now().checked_sub(idle_timeout) {
            pool.reap_idle(cutoff);
        }
    }
}

/// What one attempt on a leased worker gave.
enum Ran {
    Answer(Response, Usage),
    /// A cold worker failed to load the script: the frame says why.
    LoadFailed(Response),
    /// No worker could be spawned into the reserved slot.
    NoWorker(LambdaError),
}

/// Runs one invocation on a leased worker, preparing it first when it is cold.
async fn run(lease: &mut Lease, inv: &Invocation, deadline: Instant) -> Result<Ran, WorkerFault> {
    let worker = match lease.worker().await {
        Ok(worker) => worker,
        Err(e) => return Ok(Ran::NoWorker(e)),
    };
    if !lease.is_warm() {
        let (prepared, _) = worker.prepare(&inv.script.source, deadline).await?;
        if !prepared.ok {
            return Ok(Ran::LoadFailed(prepared));
        }
    }
    let (response, usage) = worker.invoke(&inv.params, &inv.context, &inv.request_id, deadline).await?;
    Ok(Ran::Answer(response, usage))
}

/// What the checker found in a script that compiles.
enum Checked {
    /// Nothing runs when it loads: any worker can load it later.
    Ready,
    /// It runs code when it loads: load it in a worker of its own now.
    Load,
}

impl LocalRuntime {
    /// The language's checker, started again if it died.
    async fn checker(&self, lang: usize) -> Result<Arc<Worker>, LambdaError> {
        let mut slot = self.checkers[lang].lock().await;
        if let Some(w) = slot.as_ref().filter(|w| !w.is_dead()) {
            return Ok(w.clone());
        }
        let worker = Arc::new(self.pool.spawn(lang).await?);
        if let Some(old) = slot.replace(worker.clone()) {
            self.pool.lock().forget(&old);
        }
        Ok(worker)
    }

    async fn check(&self, lang: usize, source: &str, deadline: Instant) -> Result<Checked, LambdaError> {
        for _ in 0..2 {
            let checker = timeout_at(deadline, self.checker(lang))
                .await
                .map_err(|_| LambdaError::unavailable("no checker available"))??;
            return match checker.check(source, deadline).await {
                Ok((answer, _)) if answer.ok => Ok(if answer.load { Checked::Load } else { Checked::Ready }),
                Ok((answer, _)) => Err(answer.error.unwrap_or_default().into_error()),
                Err(WorkerFault::NotStarted) => continue, // lost with another script: once more
                Err(WorkerFault::Deadline) => {
                    checker.kill();
                    Err(timeout_error(self.pool.config.prepare_timeout, "compiling the script"))
                }
                Err(fault) => Err(LambdaError::new(
                    ErrorCode::CompileError,
                    format!("script failed to compile: {}", fault.into_error().message),
                )),
            };
        }
        Err(LambdaError::unavailable("the checker was lost twice"))
    }

    /// Loads a checked script into a generic worker in the background, when
    /// one is ready, so that the first execute finds it warm.
    fn load_ahead(&self, key: Key, lang: usize, script: Arc<crate::Script>) {
        let Some(mut lease) = self.pool.take_generic(&key, lang) else { return };
        let limit = self.pool.config.prepare_timeout;
        tokio::spawn(async move {
            let deadline = Instant::now() + limit;
            let Ok(worker) = lease.worker().await else { return };
            match worker.prepare(&script.source, deadline).await {
                Ok((prepared, _)) if prepared.ok => lease.release(),
                _ => lease.discard(),
            }
        });
    }
}

fn timeout_error(limit: Duration, what: &str) -> LambdaError {
    let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
    LambdaError::new(ErrorCode::Timeout, format!("{what} exceeded the timeout of {ms} ms"))
        .with("timeout_ms", ms)
}

#[async_trait]
impl Runtime for LocalRuntime {
    fn languages(&self) -> Vec<Language> {
        LANGUAGES.to_vec()
    }

    /// Compiles the script in the language's checker, a worker that never
    /// runs user code. A script that runs nothing when it loads (the body and
    /// script forms) is then ready: a generic worker loads it in the
    /// background, ahead of its first execute. One that does run code when it
    /// loads (module and handler forms) loads now, in a worker of its own, so
    /// that its load errors are answered here.
    async fn prepare(&self, request: PrepareRequest) -> Result<(), LambdaError> {
        let lang = Self::served(request.script.language)?;
        let key: Key = (request.script.hash, request.owner.clone());
        if self.pool.is_bound(&key) {
            return Ok(()); // the same script (by hash) already compiled for this owner
        }
        let limit = self.pool.config.prepare_timeout;
        let deadline = Instant::now() + limit;
        match self.check(lang, &request.script.source, deadline).await? {
            Checked::Ready => {
                self.load_ahead(key, lang, request.script.clone());
                return Ok(());
            }
            Checked::Load => {}
        }
        let mut lease = timeout_at(deadline, self.pool.acquire(&key, lang))
            .await
            .map_err(|_| LambdaError::unavailable("no worker available"))??;
        if lease.is_warm() {
            lease.release();
            return Ok(());
        }
        let worker = timeout_at(deadline, lease.worker())
            .await
            .map_err(|_| LambdaError::unavailable("no worker available"))??;
        let prepared = match worker.prepare(&request.script.source, deadline).await {
            Ok((prepared, _)) => prepared,
            Err(WorkerFault::Deadline) => return Err(timeout_error(limit, "loading the script")),
            Err(fault) => {
                let e = fault.into_error();
                return Err(match e.code {
                    ErrorCode::RuntimeError => LambdaError::new(
                        ErrorCode::CompileError,
                        format!("script failed to load: {}", e.message),
                    ),
                    _ => e,
                });
            }
        };
        if prepared.ok {
            lease.release();
            Ok(())
        } else {
            Err(prepared.error.unwrap_or_default().into_error())
        }
    }

    async fn invoke(&self, inv: Invocation) -> Result<InvokeOutcome, InvokeError> {
        let started = std::time::Instant::now();
        let measured = |cold_start, usage: Usage| RuntimeMetrics {
            wall_us: started.elapsed().as_micros() as u64,
            cold_start,
            cpu_us: usage.cpu_us,
            peak_memory_bytes: usage.peak_memory_bytes,
        };
        let fail =
            |error, cold| InvokeError { error, logs: Vec::new(), metrics: measured(cold, Usage::default()) };
        let lang = Self::served(inv.script.language).map_err(|e| fail(e, false))?;
        let start = Instant::from_std(started);
        let deadline =
            start.checked_add(inv.timeout).unwrap_or_else(|| start + Duration::from_secs(86_400 * 365));
        let key: Key = (inv.script.hash, inv.owner.clone());
        loop {
            let mut lease = match timeout_at(deadline, self.pool.acquire(&key, lang)).await {
                Ok(Ok(lease)) => lease,
                Ok(Err(e)) => return Err(fail(e, false)),
                Err(_) => {
                    let e = LambdaError::unavailable("no worker available before the deadline");
                    return Err(fail(e, false));
                }
            };
            let cold = !lease.is_warm();
            let (response, usage) = match run(&mut lease, &inv, deadline).await {
                Ok(Ran::Answer(response, usage)) => (response, usage),
                Ok(Ran::LoadFailed(response)) => {
                    lease.discard();
                    let error = response.error.unwrap_or_default().into_error();
                    return Err(InvokeError {
                        error,
                        logs: response.logs,
                        metrics: measured(cold, Usage::default()),
                    });
                }
                Ok(Ran::NoWorker(e)) => return Err(fail(e, cold)),
                // The worker died while this request waited behind another: run it elsewhere.
                Err(WorkerFault::NotStarted) if Instant::now() < deadline => continue,
                Err(WorkerFault::Deadline | WorkerFault::NotStarted) => {
                    return Err(fail(timeout_error(inv.timeout, "execution"), cold));
                }
                Err(fault) => {
                    lease.discard();
                    return Err(fail(fault.into_error(), cold));
                }
            };
            self.pool.count_start(lang, !cold);
            let metrics = measured(cold, usage);
            return match response.error {
                None if response.ok => {
                    lease.release();
                    Ok(InvokeOutcome { result: response.result, logs: response.logs, metrics })
                }
                error => {
                    let mut error = error.unwrap_or_default().into_error();
                    // A script that failed because it hit a sandbox limit (a refused
                    // fork) leaves its sandbox in an unknown state: report the limit, discard the worker.
                    let limit = lease.worker().await.ok().and_then(|w| w.limit_hit());
                    match limit {
                        Some(fault) => {
                            error = fault.into_error();
                            lease.discard();
                        }
                        None if error.code != ErrorCode::InternalError => lease.release(), // the worker is fine
                        None => lease.discard(),
                    }
                    Err(InvokeError { error, logs: response.logs, metrics })
                }
            };
        }
    }

    fn health(&self, language: Language) -> RuntimeHealth {
        let Some(lang) = lang_index(language) else {
            return RuntimeHealth::Unavailable(format!(
                "runtime {language} is not served by the local runtime"
            ));
        };
        match &self.pool.lock().langs[lang].unavailable {
            Some(reason) => RuntimeHealth::Unavailable(reason.clone()),
            None => RuntimeHealth::Ok,
        }
    }

    fn sandbox_report(&self) -> Option<serde_json::Value> {
        Some(match &self.pool.config.sandbox {
            Some(sandbox) => sandbox.report(),
            None => serde_json::json!({ "mode": "off", "status": "disabled" }),
        })
    }

    fn worker_counts(&self, language: Language) -> WorkerCounts {
        let Some(lang) = lang_index(language) else { return WorkerCounts::default() };
        let st = self.pool.lock();
        let ls = &st.langs[lang];
        let (mut idle, mut busy) = (0u64, ls.preparing as u64);
        for b in st.bound.values().flatten().filter(|b| b.worker.language == language) {
            match b.worker.in_flight() {
                0 => idle += 1,
                _ => busy += 1,
            }
        }
        WorkerCounts {
            generic: ls.generic.len() as u64,
            idle,
            busy,
            cold_starts: self.pool.cold_starts[lang].load(Ordering::Relaxed),
            warm_starts: self.pool.warm_starts[lang].load(Ordering::Relaxed),
            ..WorkerCounts::default()
        }
    }

    async fn shutdown(&self) {
        self.stop();
    }
}
