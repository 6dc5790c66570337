//! Shared harness of the local runtime tests: a runtime on real interpreters in a temp dir.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lambda_core::{ErrorCode, Language, ScriptHash};
use lambda_runtime::{
    Invocation, InvokeError, InvokeOutcome, LocalRuntime, LocalRuntimeConfig, PrepareRequest, Runtime,
    Script, resolve_interpreter,
};
use serde_json::{Value, json};

pub struct Harness {
    pub rt: Arc<LocalRuntime>,
    _dir: tempfile::TempDir,
}

pub async fn interpreter(language: Language) -> PathBuf {
    let cmd = match language {
        Language::Python => "python3",
        _ => "node",
    };
    resolve_interpreter(language, cmd.as_ref()).await.expect("interpreter installed")
}

/// A runtime with one generic worker per language, tuned by `tune`.
pub async fn start_with(tune: impl FnOnce(&mut LocalRuntimeConfig)) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = LocalRuntimeConfig {
        node_path: interpreter(Language::Nodejs).await,
        python_path: interpreter(Language::Python).await,
        work_dir: dir.path().to_path_buf(),
        generic_per_language: 1,
        sandbox: Some(sandbox()),
        ..LocalRuntimeConfig::default()
    };
    tune(&mut config);
    let rt = LocalRuntime::start(config).await.expect("runtime starts");
    Harness { rt, _dir: dir }
}

/// The sandbox every test runtime uses (`auto`: what this machine offers),
/// unless `LAMBDA_TEST_SANDBOX=off`.
pub fn sandbox() -> Arc<lambda_sandbox::Sandbox> {
    let config = lambda_sandbox::SandboxConfig::default();
    Arc::new(lambda_sandbox::Sandbox::new(config).expect("sandbox"))
}

pub async fn start() -> Harness {
    start_with(|_| {}).await
}

pub fn script(language: Language, source: &str) -> Arc<Script> {
    Arc::new(Script {
        hash: ScriptHash::compute(language, source, None),
        language,
        source: source.into(),
        compile_options: None,
    })
}

pub fn invocation(script: &Arc<Script>, owner: &str, params: Value) -> Invocation {
    Invocation {
        script: script.clone(),
        owner: owner.into(),
        request_id: "req-1".to_owned(),
        params,
        context: json!({"environment": "test"}),
        timeout: Duration::from_secs(20),
    }
}

impl Harness {
    /// Prepares `source` for owner "alice".
    pub async fn prepare(
        &self,
        language: Language,
        source: &str,
    ) -> Result<Arc<Script>, lambda_core::LambdaError> {
        let script = script(language, source);
        self.rt.prepare(PrepareRequest { script: script.clone(), owner: "alice".into() }).await?;
        Ok(script)
    }

    pub async fn invoke(&self, script: &Arc<Script>, params: Value) -> Result<InvokeOutcome, InvokeError> {
        self.rt.invoke(invocation(script, "alice", params)).await
    }

    /// Prepares and invokes once, expecting success.
    pub async fn run(&self, language: Language, source: &str, params: Value) -> InvokeOutcome {
        let script = self.prepare(language, source).await.expect("prepares");
        self.invoke(&script, params).await.unwrap_or_else(|e| panic!("invoke failed: {:?}", e.error))
    }

    /// Prepares and invokes once, expecting an error of `code`.
    pub async fn fail(
        &self,
        language: Language,
        source: &str,
        params: Value,
        code: ErrorCode,
    ) -> InvokeError {
        let script = self.prepare(language, source).await.expect("prepares");
        match self.invoke(&script, params).await {
            Ok(out) => panic!("expected {code}, got {:?}", out.result),
            Err(e) => {
                assert_eq!(e.error.code, code, "{:?}", e.error);
                e
            }
        }
    }

    pub async fn shutdown(self) {
        self.rt.shutdown().await;
    }
}
