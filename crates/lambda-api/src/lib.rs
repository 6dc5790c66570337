//! The HTTP API of Lambda Microservice: axum routes for the contract in
//! `spec/API.md`, the error mapping, body extraction, and Prometheus metrics.
#![forbid(unsafe_code)]

pub mod auth;
mod body;
mod connection;
pub mod error;
pub mod grpc;
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

pub use connection::{ConnectionMetrics, ServeConfig};
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
/// `axum::serve`: no protocol sniffing per connection. An idle keep-alive
/// connection gives its buffers back after `config.park_after` (see
/// [`connection`]), and any connection closes after `config.idle_timeout`
/// without a complete request head.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    config: ServeConfig,
) -> io::Result<()> {
    use axum::extract::ConnectInfo;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    let config = std::sync::Arc::new(config);
    let (stop, stopping) = tokio::sync::watch::channel(());
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
        tokio::spawn(connection::serve_connection(
            stream,
            TowerToHyperService::new(service),
            config.clone(),
            stopping.clone(),
        ));
    }
    drop(listener);
    drop(stopping);
    // Every connection ends its request in flight, then its receiver.
    let _ = stop.send(());
    stop.closed().await;
    Ok(())
}

/// Serves the gRPC API (`lambda.v1.Lambda` over `router`), the standard
/// health service and server reflection on `listener` until `shutdown`
/// resolves. `max_message` bounds a request message (the REST body limit
/// applies behind it as well).
pub async fn serve_grpc(
    listener: TcpListener,
    router: Router,
    max_message: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    use grpc::{GrpcApi, LambdaServer};

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<LambdaServer<GrpcApi>>().await;
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(grpc::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // v1 and the v1alpha that older clients (grpcurl before 1.9) ask for.
    let reflection = builder().build_v1().map_err(|e| tracing::error!(error = %e, "gRPC reflection")).ok();
    let reflection_alpha =
        builder().build_v1alpha().map_err(|e| tracing::error!(error = %e, "gRPC reflection")).ok();
    let api = LambdaServer::new(GrpcApi::new(router)).max_decoding_message_size(max_message);
    tonic::transport::Server::builder()
        .add_service(health)
        .add_optional_service(reflection)
        .add_optional_service(reflection_alpha)
        .add_service(api)
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown)
        .await
}
