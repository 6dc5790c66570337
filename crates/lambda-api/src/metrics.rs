//! Prometheus metrics of the controller, in the text exposition format.

use std::borrow::Cow;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A label value: borrowed when it is one of a fixed set (a runtime, a
/// route, an outcome), so counting a request allocates nothing.
pub type Label = Cow<'static, str>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub endpoint: Label,
    pub method: Label,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuntimeLabels {
    pub runtime: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub runtime: Label,
    pub outcome: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StartLabels {
    pub runtime: Label,
    /// `cold` or `warm`.
    pub kind: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub runtime: Label,
    /// `generic`, `idle` or `busy`.
    pub state: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// `active` (in hyper, with its buffers) or `parked` (idle, without).
    pub state: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `hit` or `miss`.
    pub result: Label,
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
        let gauge = |state: &'static str| {
            self.http_connections.get_or_create(&ConnectionLabels { state: Cow::Borrowed(state) }).clone()
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

/// The two text formats a scraper may ask for (`Accept`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Exposition {
    /// The Prometheus text format 0.0.4: what the contract names, and what a
    /// scraper that asks for nothing in particular gets.
    Prometheus,
    /// OpenMetrics 1.0, for a scraper that asks for it (Prometheus does).
    OpenMetrics,
}

impl Exposition {
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

impl Metrics {
    /// Every metric in the format `exposition` names.
    pub fn encode_as(&self, exposition: Exposition) -> String {
        let open = self.encode();
        match exposition {
            Exposition::OpenMetrics => open,
            Exposition::Prometheus => prometheus_text(&open),
        }
    }
}

/// The Prometheus 0.0.4 text of an OpenMetrics exposition. The samples are
/// the same; the metadata differs: a counter's `HELP`/`TYPE` name the
/// family by its samples' `_total` name, `unknown` is `untyped`, and there is
/// no `UNIT` line and no `# EOF`.
fn prometheus_text(open: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        open.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(open.len() + 16 * counters.len());
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find(|p| line.starts_with(p));
        match meta.map(|p| (p, line[p.len()..].split_once(' ').unwrap_or((&line[p.len()..], "")))) {
            Some((prefix, (name, rest))) if counters.contains(name) => {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total ");
                out.push_str(rest);
            }
            Some(("# TYPE ", (name, "unknown"))) => {
                out.push_str("# TYPE ");
                out.push_str(name);
                out.push_str(" untyped");
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prometheus_text_names_counter_families_by_their_samples() {
        let m = Metrics::new();
        m.http_connection_parks.inc();
        m.sessions_active.set(2);
        m.execution_duration.get_or_create(&RuntimeLabels { runtime: "nodejs".into() }).observe(0.01);
        let open = m.encode_as(Exposition::OpenMetrics);
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(open.contains("# TYPE lambda_http_connection_parks counter\n"), "{open}");

        let text = m.encode_as(Exposition::Prometheus);
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
        assert!(text.contains("# TYPE lambda_http_connection_parks_total counter\n"), "{text}");
        assert!(text.contains("# HELP lambda_http_connection_parks_total "), "{text}");
        assert!(text.contains("\nlambda_http_connection_parks_total 1\n"), "{text}");
        assert!(text.contains("# TYPE lambda_sessions_active gauge\nlambda_sessions_active 2\n"), "{text}");
        assert!(text.contains("# TYPE lambda_execution_duration_seconds histogram\n"), "{text}");
        assert!(text.contains("lambda_execution_duration_seconds_count{runtime=\"nodejs\"} 1\n"), "{text}");
        // Every sample line is preceded by the TYPE of the family it belongs to.
        let mut family = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap_or_default();
            } else if !line.starts_with('#') {
                assert!(line.starts_with(family), "{line} outside {family}");
            }
        }
    }
}
