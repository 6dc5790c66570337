//! The runtime side of Lambda Microservice: one [`Runtime`] abstraction
//! (prepare a script by hash, then invoke it) and its local implementation,
//! warm worker processes of the real Node.js and Python interpreters.
//!
//! A remote runtime host (DESIGN.md, "Scale-out") implements the same trait
//! over gRPC later; the controller only ever sees `Arc<dyn Runtime>`.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lambda_core::{LambdaError, Language, ScriptHash};
use serde::Serialize;
use serde_json::Value;

mod local;
mod router;

pub use local::{LocalRuntime, LocalRuntimeConfig, StartError, resolve_interpreter};
pub use router::RuntimeRouter;

/// A script as the runtime receives it. `hash` is its content address.
#[derive(Debug)]
pub struct Script {
    pub hash: ScriptHash,
    pub language: Language,
    pub source: Arc<str>,
    pub compile_options: Option<Value>,
}

/// Prepare (parse/compile/load) `script` for `owner`. Workers are never
/// shared between owners, so the owner is part of the key.
#[derive(Debug, Clone)]
pub struct PrepareRequest {
    pub script: Arc<Script>,
    /// Owner key: the user id, or `""` for anonymous callers.
    pub owner: Arc<str>,
}

/// One execution. Carries the script so that a host that has not seen its hash
/// (after a restart, or another host) can prepare it first.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub script: Arc<Script>,
    pub owner: Arc<str>,
    pub request_id: String,
    pub params: Value,
    pub context: Value,
    /// Wall-clock limit; past it the execution is killed and answered TIMEOUT.
    pub timeout: Duration,
}

/// Per-execution figures, reported in the request log and the response.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RuntimeMetrics {
    /// Wall time inside the runtime, microseconds.
    pub wall_us: u64,
    /// True when no warm worker held the script and one had to be prepared.
    pub cold_start: bool,
    /// CPU time (user + system) the execution used, microseconds, where measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_us: Option<u64>,
    /// Peak memory of the execution's worker or instance, bytes, where measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InvokeOutcome {
    pub result: Value,
    /// Console/stdout lines, bounded by the limits.
    pub logs: Vec<String>,
    pub metrics: RuntimeMetrics,
}

/// A failed execution: the client-facing error plus what the script printed before it.
#[derive(Debug, Clone, PartialEq)]
pub struct InvokeError {
    pub error: LambdaError,
    pub logs: Vec<String>,
    pub metrics: RuntimeMetrics,
}

/// Health of one language's runtime, for `/health`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeHealth {
    Ok,
    /// Configured but cannot serve (interpreter missing, …), with the reason.
    Unavailable(String),
}

/// Worker counts of one language, sampled at scrape time for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WorkerCounts {
    /// Pre-started workers not yet bound to a script.
    pub generic: u64,
    /// Bound to a script, waiting for work.
    pub idle: u64,
    /// Executing or preparing.
    pub busy: u64,
    pub cold_starts: u64,
    pub warm_starts: u64,
    /// Compiles run (compiled languages), their total seconds, and how many
    /// prepares found an existing artifact instead.
    pub compiles: u64,
    pub compile_seconds: f64,
    pub compile_cache_hits: u64,
    /// Module instantiations (wasm) and their total seconds.
    pub instantiations: u64,
    pub instantiate_seconds: f64,
}

/// Prepare once, invoke many. Implemented by the local worker pools now and by
/// a remote runtime host over gRPC later.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Languages this runtime serves.
    fn languages(&self) -> Vec<Language>;

    /// Validates and prepares the script; a syntax error is `COMPILE_ERROR`
    /// with `details.line` / `details.column` / `details.message`.
    async fn prepare(&self, request: PrepareRequest) -> Result<(), LambdaError>;

    /// Runs one execution. Script faults are `RUNTIME_ERROR` (message, stack,
    /// line), deadline is `TIMEOUT`, limits are `RESOURCE_LIMIT`, no capacity is
    /// `UNAVAILABLE`; only a platform fault is `INTERNAL_ERROR`.
    async fn invoke(&self, invocation: Invocation) -> Result<InvokeOutcome, InvokeError>;

    fn health(&self, language: Language) -> RuntimeHealth;

    fn worker_counts(&self, language: Language) -> WorkerCounts;

    /// What isolation this runtime applies (namespaces, seccomp, cgroups, …),
    /// for `/health` (`components.sandbox`). `None` when it has nothing to report.
    fn sandbox_report(&self) -> Option<serde_json::Value> {
        None
    }

    /// Kills every worker. Called last in an orderly shutdown.
    async fn shutdown(&self);
}
