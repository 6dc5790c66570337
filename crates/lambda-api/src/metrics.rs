//! Prometheus metrics of the controller, in the text exposition format.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub endpoint: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuntimeLabels {
    pub runtime: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub runtime: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StartLabels {
    pub runtime: String,
    /// `cold` or `warm`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub runtime: String,
    /// `generic`, `idle` or `busy`.
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// `active` (in hyper, with its buffers) or `parked` (idle, without).
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `hit` or `miss`.
    pub result: String,
}

fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.5, 14))
}

/// Every metric the controller exports.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    pub http_connections: Family<ConnectionLabels, Gauge>,
    pub http_connection_parks: Counter,
    pub errors: Family<CodeLabels, Counter>,
    pub cache: Family<CacheLabels, Counter>,
    pub executions: Family<OutcomeLabels, Counter>,
    pub execution_duration: Family<RuntimeLabels, Histogram, fn() -> Histogram>,
    pub starts: Family<StartLabels, Counter>,
    pub sessions_created: Family<RuntimeLabels, Counter>,
    pub sessions_active: Gauge,
    pub workers: Family<WorkerLabels, Gauge>,
    pub log_queue: Gauge,
    /// Compiled languages (rust, wasm): compiles run and their seconds,
    /// prepares that found an existing artifact, module instantiations and
    /// their seconds. Totals kept by the runtime, copied in at scrape time.
    pub compiles: Family<RuntimeLabels, Counter>,
    pub compile_seconds: Family<RuntimeLabels, Counter<f64, AtomicU64>>,
    pub compile_cache_hits: Family<RuntimeLabels, Counter>,
    pub instantiations: Family<RuntimeLabels, Counter>,
    pub instantiate_seconds: Family<RuntimeLabels, Counter<f64, AtomicU64>>,
    /// Encoding needs exclusive access to nothing, but scrapes are serialised
    /// so the gauges sampled just before stay consistent with the output.
    scrape: Mutex<()>,
}

impl Metrics {
    /// `lambda_http_connections` and `lambda_http_connection_parks`, for [`crate::serve`].
    pub fn connection_metrics(&self) -> crate::ConnectionMetrics {
        let gauge = |state: &str| {
            self.http_connections.get_or_create(&ConnectionLabels { state: state.to_owned() }).clone()
        };
        crate::ConnectionMetrics {
            active: gauge("active"),
            parked: gauge("parked"),
            parks: self.http_connection_parks.clone(),
        }
    }

    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("lambda");
        let http_requests = Family::default();
        registry.register(
            "http_requests",
            "HTTP requests by endpoint, method and status",
            http_requests.clone(),
        );
        let http_duration =
            Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(seconds_histogram);
        registry.register("http_request_duration_seconds", "HTTP response time", http_duration.clone());
        let http_connections = Family::default();
        registry.register(
            "http_connections",
            "Open HTTP connections: active (with buffers) or parked (idle, without)",
            http_connections.clone(),
        );
        let http_connection_parks = Counter::default();
        registry.register(
            "http_connection_parks",
            "Idle keep-alive connections that gave their buffers back",
            http_connection_parks.clone(),
        );
        let errors = Family::default();
        registry.register("errors", "Error responses by error code", errors.clone());
        let cache = Family::default();
        registry.register("cache_requests", "Result cache lookups by result (hit, miss)", cache.clone());
        let executions = Family::default();
        registry.register("executions", "Executions by runtime and outcome", executions.clone());
        let execution_duration =
            Family::<RuntimeLabels, Histogram, fn() -> Histogram>::new_with_constructor(seconds_histogram);
        registry.register(
            "execution_duration_seconds",
            "Execution time in the runtime",
            execution_duration.clone(),
        );
        let starts = Family::default();
        registry.register(
            "worker_starts",
            "Executions served by a warm worker or a cold start",
            starts.clone(),
        );
        let sessions_created = Family::default();
        registry.register("sessions_created", "Sessions created by runtime", sessions_created.clone());
        let sessions_active = Gauge::default();
        registry.register("sessions_active", "Active (unexpired, open) sessions", sessions_active.clone());
        let workers = Family::default();
        registry.register("workers", "Worker processes by runtime and state", workers.clone());
        let log_queue = Gauge::default();
        registry.register(
            "log_queue_entries",
            "Log entries waiting to be written to storage",
            log_queue.clone(),
        );
        let compiles = Family::default();
        registry.register(
            "compiles",
            "Compiles run by runtime (rust: rustc, wasm: native code)",
            compiles.clone(),
        );
        let compile_seconds = Family::<RuntimeLabels, Counter<f64, AtomicU64>>::default();
        registry.register("compile_seconds", "Seconds spent compiling by runtime", compile_seconds.clone());
        let compile_cache_hits = Family::default();
        registry.register(
            "compile_cache_hits",
            "Prepares that found a compiled artifact instead of compiling",
            compile_cache_hits.clone(),
        );
        let instantiations = Family::default();
        registry.register("instantiations", "wasm module instantiations by runtime", instantiations.clone());
        let instantiate_seconds = Family::<RuntimeLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "instantiate_seconds",
            "Seconds spent instantiating wasm modules",
            instantiate_seconds.clone(),
        );
        Self {
            registry,
            http_requests,
            http_duration,
            http_connections,
            http_connection_parks,
            errors,
            cache,
            executions,
            execution_duration,
            starts,
            sessions_created,
            sessions_active,
            workers,
            log_queue,
            compiles,
            compile_seconds,
            compile_cache_hits,
            instantiations,
            instantiate_seconds,
            scrape: Mutex::new(()),
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let _serialised = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            tracing::error!("metrics encoding failed");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
