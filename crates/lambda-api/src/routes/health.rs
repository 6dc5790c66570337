//! `GET /health` and the gauges sampled for `/metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use lambda_core::Language;
use lambda_runtime::RuntimeHealth;
use serde_json::{Map, json};

use crate::AppState;
use crate::metrics::WorkerLabels;
use crate::wire::HealthResponse;

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
    let store_ok = store.ping().await.is_ok();
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
    let (status_code, status) = match (store_ok, cache_ok && runtimes_ok) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (true, false) => (StatusCode::OK, "degraded"),
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
            let labels = WorkerLabels { runtime: language.to_string(), state: label.to_owned() };
            metrics.workers.get_or_create(&labels).set(i64::try_from(value).unwrap_or(i64::MAX));
        }
    }
    let logs = state.logs().stats();
    metrics.log_queue.set(i64::try_from(logs.queued + logs.spill_pending).unwrap_or(i64::MAX));
}
