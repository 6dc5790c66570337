//! The HTTP API of Lambda Microservice: axum routes for the contract in
//! `spec/API.md`, the error mapping, body extraction, and Prometheus metrics.
#![forbid(unsafe_code)]

pub mod auth;
mod body;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod predefined;
pub mod ratelimit;
pub(crate) mod routes;
mod schema;
pub mod sessions;
mod state;
pub mod wire;

use std::future::Future;
use std::io;

use axum::Router;
use tokio::net::TcpListener;

pub use error::ApiError;
pub use state::{ApiConfig, AppState};

/// The whole REST API (and `/metrics` unless it is served on its own port).
pub fn router(state: AppState, with_metrics: bool) -> Router {
    routes::router(state, with_metrics)
}

/// `/metrics` alone, for `METRICS_PORT`.
pub fn metrics_router(state: AppState) -> Router {
    routes::metrics_router(state)
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains
/// in-flight requests (the caller bounds the drain with its own deadline).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}
