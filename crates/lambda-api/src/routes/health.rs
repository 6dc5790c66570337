//! `GET /health` and the gauges sampled for `/metrics`.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use lambda_core::Language;
use lambda_runtime::RuntimeHealth;
use serde_json::{Map, json};

use crate::AppState;
use crate::metrics::{RuntimeLabels, WorkerLabels};
use crate::wire::HealthResponse;

/// How long `/health` waits for the store's answer.
const STORE_PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Liveness and the state of each component. No auth.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, description = "Serving (`ok` or `degraded`)", body = HealthResponse),
        (status = 503, description = "Cannot serve (`unavailable`)", body = HealthResponse),
    ),
)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthResponse>) {
    let store = state.store();
    // Bounded: a PostgreSQL that does not answer must not hold the probe.
    let store_ok = matches!(tokio::time::timeout(STORE_PING_TIMEOUT, store.ping()).await, Ok(Ok(())));
    let cache_ok = state.cache().ping().await.is_ok();
    let served = state.runtime().languages();
    let mut runtimes = Map::new();
    let mut runtimes_ok = true;
    for language in Language::ALL {
        let status = if !served.contains(&language) {
            json!("disabled")
        } else {
            match state.runtime().health(language) {
                RuntimeHealth::Ok => json!("ok"),
                RuntimeHealth::Unavailable(reason) => {
                    runtimes_ok = false;
                    json!({ "status": "unavailable", "reason": reason })
                }
            }
        };
        runtimes.insert(language.to_string(), status);
    }
    let ok = |up: bool| if up { "ok" } else { "unavailable" };
    // PostgreSQL down: initialize answers 503, but live sessions keep
    // executing (from memory and Redis) and their logs wait in the pipeline,
    // so the controller still serves: degraded, and a load balancer keeps
    // routing to it. A failing embedded SQLite file is this instance's own
    // fault: unavailable.
    let store_essential = store.backend() != "postgres";
    let (status_code, status) = match (store_ok, cache_ok && runtimes_ok) {
        (false, _) if store_essential => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (false, _) | (true, false) => (StatusCode::OK, "degraded"),
        (true, true) => (StatusCode::OK, "ok"),
    };
    let mut components = json!({
        "controller": "ok",
        "storage": store.backend(),
        "cache": state.cache().backend(),
        "postgres": "disabled",
        "redis": "disabled",
        "runtimes": runtimes,
    });
    components[if store.backend() == "postgres" { "postgres" } else { "sqlite" }] = json!(ok(store_ok));
    if let Some(sandbox) = state.runtime().sandbox_report() {
        components["sandbox"] = sandbox;
    }
    if state.cache().backend() == "redis" {
        components["redis"] = json!(ok(cache_ok));
    }
    let body =
        HealthResponse { status: status.to_owned(), version: state.config().version.clone(), components };
    (status_code, Json(body))
}

/// Updates the gauges that are read from other parts at scrape time.
pub async fn sample_gauges(state: &AppState) {
    let metrics = state.metrics();
    if let Ok(active) = state.store().count_active_sessions(Utc::now()).await {
        metrics.sessions_active.set(active);
    }
    for language in state.runtime().languages() {
        let counts = state.runtime().worker_counts(language);
        for (label, value) in [("generic", counts.generic), ("idle", counts.idle), ("busy", counts.busy)] {
            let labels = WorkerLabels { runtime: language.as_str().into(), state: label.into() };
            metrics.workers.get_or_create(&labels).set(i64::try_from(value).unwrap_or(i64::MAX));
        }
        if language.is_compiled() || language == Language::Wasm {
            // The runtime keeps monotonic totals; a counter shows them as they are.
            let labels = RuntimeLabels { runtime: language.as_str().into() };
            let set = |c: &prometheus_client::metrics::counter::Counter, v: u64| c.inner().store(v, Relaxed);
            let set_f = |c: &prometheus_client::metrics::counter::Counter<f64, AtomicU64>, v: f64| {
                c.inner().store(v.to_bits(), Relaxed)
            };
            set(&metrics.compiles.get_or_create(&labels), counts.compiles);
            set_f(&metrics.compile_seconds.get_or_create(&labels), counts.compile_seconds);
            set(&metrics.compile_cache_hits.get_or_create(&labels), counts.compile_cache_hits);
            set(&metrics.instantiations.get_or_create(&labels), counts.instantiations);
            set_f(&metrics.instantiate_seconds.get_or_create(&labels), counts.instantiate_seconds);
        }
    }
    let logs = state.logs().stats();
    metrics.log_queue.set(i64::try_from(logs.queued + logs.spill_pending).unwrap_or(i64::MAX));
}
