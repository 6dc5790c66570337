//! Routes each language to the runtime that serves it (local worker pools,
//! the wasm engine, later remote hosts), behind the same [`Runtime`] trait.

use std::sync::Arc;

use async_trait::async_trait;
use lambda_core::{LambdaError, Language};

use crate::{
    Invocation, InvokeError, InvokeOutcome, PrepareRequest, Runtime, RuntimeHealth, RuntimeMetrics,
    WorkerCounts,
};

/// The first runtime that lists a language serves it.
pub struct RuntimeRouter {
    runtimes: Vec<Arc<dyn Runtime>>,
}

impl RuntimeRouter {
    pub fn new(runtimes: Vec<Arc<dyn Runtime>>) -> Self {
        Self { runtimes }
    }

    fn route(&self, language: Language) -> Result<&Arc<dyn Runtime>, LambdaError> {
        self.runtimes.iter().find(|r| r.languages().contains(&language)).ok_or_else(|| {
            LambdaError::unavailable(format!("runtime {language} is not available in this service"))
        })
    }
}

#[async_trait]
impl Runtime for RuntimeRouter {
    fn languages(&self) -> Vec<Language> {
        let mut all: Vec<Language> = self.runtimes.iter().flat_map(|r| r.languages()).collect();
        all.sort();
        all.dedup();
        all
    }

    async fn prepare(&self, request: PrepareRequest) -> Result<(), LambdaError> {
        self.route(request.script.language)?.prepare(request).await
    }

    async fn invoke(&self, invocation: Invocation) -> Result<InvokeOutcome, InvokeError> {
        match self.route(invocation.script.language) {
            Ok(runtime) => runtime.invoke(invocation).await,
            Err(error) => Err(InvokeError { error, logs: Vec::new(), metrics: RuntimeMetrics::default() }),
        }
    }

    fn health(&self, language: Language) -> RuntimeHealth {
        match self.route(language) {
            Ok(runtime) => runtime.health(language),
            Err(e) => RuntimeHealth::Unavailable(e.message),
        }
    }

    fn worker_counts(&self, language: Language) -> WorkerCounts {
        self.route(language).map(|r| r.worker_counts(language)).unwrap_or_default()
    }

    fn sandbox_report(&self) -> Option<serde_json::Value> {
        self.runtimes.iter().find_map(|r| r.sandbox_report())
    }

    async fn shutdown(&self) {
        for runtime in &self.runtimes {
            runtime.shutdown().await;
        }
    }
}
