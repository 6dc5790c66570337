//! Route table and the middleware that counts every request.

mod execute;
mod functions;
mod health;
mod initialize;
mod sessions;

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lambda_core::{ErrorCode, LambdaError};

use crate::metrics::{CodeLabels, EndpointLabels, HttpLabels};
use crate::{ApiError, AppState};

pub fn router(state: AppState, with_metrics: bool) -> Router {
    let mut api = Router::new()
        .route("/api/v1/initialize", post(initialize::initialize))
        .route("/api/v1/execute/{request_id}", post(execute::execute))
        .route("/api/v1/sessions/{request_id}", get(sessions::get_session))
        .route("/api/v1/functions", get(functions::list))
        .route("/api/v1/functions/{language_title}", get(functions::get_one))
        .route("/health", get(health::health));
    if with_metrics {
        api = api.route("/metrics", get(metrics));
    }
    api.fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(state)
}

async fn not_found() -> ApiError {
    LambdaError::not_found("no such endpoint").into()
}

async fn metrics(State(state): State<AppState>) -> Response {
    health::sample_gauges(&state).await;
    ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics().encode())
        .into_response()
}

/// Counts requests by matched route and status, times them, and counts error codes.
async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let metrics = state.metrics();
    metrics
        .http_duration
        .get_or_create(&EndpointLabels { endpoint: endpoint.clone() })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&HttpLabels { endpoint, method, status: response.status().as_u16() })
        .inc();
    if let Some(code) = response.extensions().get::<ErrorCode>() {
        metrics.errors.get_or_create(&CodeLabels { code: code.as_str().to_owned() }).inc();
    }
    response
}
