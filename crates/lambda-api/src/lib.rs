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
///
/// HTTP/1.1 only, through hyper's `http1` connection directly rather than
/// `axum::serve`: no protocol sniffing per connection, so that an idle
/// keep-alive connection costs little more than hyper's read buffer
/// (measured with `bench/run`, the held-connections case). Headers must
/// arrive within 30 s (a slow-headers client cannot hold a connection).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    use axum::extract::ConnectInfo;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = router.clone().map_request(move |mut request: axum::extract::Request<_>| {
            request.extensions_mut().insert(ConnectInfo(addr));
            request
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(std::time::Duration::from_secs(30))
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
