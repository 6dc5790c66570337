//! Measures warm-invoke latency of the local runtime: `cargo run --release -p lambda-runtime --example warm_invoke`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lambda_core::{Language, ScriptHash};
use lambda_runtime::{
    Invocation, LocalRuntime, LocalRuntimeConfig, PrepareRequest, Runtime, Script, resolve_interpreter,
};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("lambda-warm-bench-{}", std::process::id()));
    let config = LocalRuntimeConfig {
        node_path: resolve_interpreter(Language::Nodejs, "node".as_ref()).await?,
        python_path: resolve_interpreter(Language::Python, "python3".as_ref()).await?,
        work_dir: dir.clone(),
        ..LocalRuntimeConfig::default()
    };
    let rt = LocalRuntime::start(config).await?;
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5000);
    for (language, source) in [
        (Language::Nodejs, "return event.params.a + event.params.b;"),
        (Language::Python, "result = params['a'] + params['b']"),
    ] {
        let script = Arc::new(Script {
            hash: ScriptHash::compute(language, source, None),
            language,
            source: source.into(),
            compile_options: None,
        });
        let started = Instant::now();
        rt.prepare(PrepareRequest { script: script.clone(), owner: "bench".into() }).await?;
        let prepare = started.elapsed();
        let mut samples = Vec::with_capacity(n);
        for i in 0..n {
            let inv = Invocation {
                script: script.clone(),
                owner: "bench".into(),
                request_id: "bench".to_owned(),
                params: json!({"a": i, "b": 1}),
                context: json!({}),
                timeout: Duration::from_secs(5),
            };
            let t = Instant::now();
            rt.invoke(inv).await.map_err(|e| e.error)?;
            samples.push(t.elapsed());
        }
        samples.sort();
        let pct = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
        println!(
            "{language}: prepare {prepare:?}, warm invoke p50 {:?} p90 {:?} p99 {:?} ({n} sequential)",
            pct(0.5),
            pct(0.9),
            pct(0.99)
        );
    }
    rt.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
