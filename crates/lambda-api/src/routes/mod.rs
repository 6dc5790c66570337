//! Route table and the layers around it: request counting, CORS, header
//! bounds, authentication and rate limits.

pub(crate) mod execute;
pub(crate) mod functions;
pub(crate) mod health;
pub(crate) mod initialize;
pub(crate) mod sessions;

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lambda_core::{ErrorCode, LambdaError};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::metrics::{CodeLabels, EndpointLabels, Exposition, HttpLabels, Label};
use crate::{ApiError, AppState, auth};

/// Every route, which is also its `endpoint` label.
const ROUTES: [&str; 8] = [
    "/api/v1/initialize",
    "/api/v1/sessions/{request_id}",
    "/api/v1/execute/{request_id}",
    "/api/v1/functions",
    "/api/v1/functions/{language_title}",
    "/health",
    "/api/v1/openapi.json",
    "/metrics",
];

/// The `method` label's values, besides `OTHER`.
const METHODS: [&str; 9] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE"];

pub fn router(state: AppState, with_metrics: bool) -> Router {
    // Authentication and the rate limits of execute and functions (`auth::gate`).
    let [to_initialize, to_session, to_execute, to_functions, to_function, to_health, to_openapi, to_metrics] =
        ROUTES;
    let api = Router::new()
        .route(to_initialize, post(initialize::initialize))
        .route(to_session, get(sessions::get_session))
        .route(to_execute, post(execute::execute))
        .route(to_functions, get(functions::list))
        .route(to_function, get(functions::get_one))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::gate));
    let mut open = Router::new().route(to_health, get(health::health)).route(to_openapi, get(openapi));
    if with_metrics {
        open = open.route(to_metrics, get(metrics));
    }
    open.merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), front))
        .layer(cors(&state.config().cors_origins))
        .with_state(state)
}

pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(state)
}

/// The contract's CORS policy; `*` in the origins allows any.
fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            CONTENT_TYPE,
            axum::http::header::AUTHORIZATION,
            HeaderName::from_static("language-title"),
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("x-cache-control"),
        ])
        .max_age(Duration::from_secs(86_400))
}

async fn not_found() -> ApiError {
    LambdaError::not_found("no such endpoint").into()
}

async fn method_not_allowed() -> ApiError {
    LambdaError::invalid_request("method not allowed on this endpoint").into()
}

async fn openapi(State(state): State<AppState>) -> Response {
    axum::Json(crate::openapi::document(&state.config().version)).into_response()
}

/// Prometheus text 0.0.4, or OpenMetrics for a scraper that asks for it.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    health::sample_gauges(&state).await;
    let accept = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok());
    let exposition = Exposition::from_accept(accept);
    ([(CONTENT_TYPE, exposition.content_type())], state.metrics().encode_as(exposition)).into_response()
}

/// Every request: refuses absurd header sets (the contract's 400) before any
/// handler runs, and counts requests by matched route and status, times them,
/// and counts error codes. One layer rather than two: each costs allocations.
async fn front(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let endpoint = request.extensions().get::<MatchedPath>().map_or(Label::Borrowed("unmatched"), |p| {
        ROUTES
            .iter()
            .find(|r| **r == p.as_str())
            .map_or_else(|| p.as_str().to_owned().into(), |r| (*r).into())
    });
    // Any token is a method to HTTP: one outside the standard set counts as
    // `OTHER`, or a client could grow the series without bound.
    let method = METHODS.iter().find(|m| **m == request.method().as_str()).copied().unwrap_or("OTHER");
    let started = Instant::now();
    let max = state.config().max_header_bytes;
    let total: usize = request.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    let response = if total > max {
        let error = LambdaError::invalid_request(format!("request headers exceed {max} bytes"))
            .with("limit_bytes", max);
        ApiError::from(error).into_response()
    } else {
        next.run(request).await
    };
    let metrics = state.metrics();
    metrics
        .http_duration
        .get_or_create(&EndpointLabels { endpoint: endpoint.clone() })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&HttpLabels {
            endpoint,
            method: Label::Borrowed(method),
            status: response.status().as_u16(),
        })
        .inc();
    if let Some(code) = response.extensions().get::<ErrorCode>() {
        metrics.errors.get_or_create(&CodeLabels { code: code.as_str().into() }).inc();
    }
    response
}
