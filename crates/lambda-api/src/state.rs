//! Shared state of the API: configuration and the handles to store, cache,
//! runtime, log pipeline, live sessions and metrics.

use std::sync::Arc;
use std::time::Duration;

use lambda_cache::Cache;
use lambda_core::{LanguageMap, Limits};
use lambda_runtime::Runtime;
use lambda_store::Store;
use lambda_store::pipeline::LogSink;

use crate::metrics::Metrics;
use crate::schema::SchemaCache;
use crate::sessions::SessionRegistry;

/// What the API needs to know of the configuration.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub limits: Limits,
    pub languages: LanguageMap,
    /// Default result-cache TTL (`CACHE_TTL`).
    pub cache_ttl: Duration,
    /// `DB_LOGGING_ENABLED`: write request/error logs.
    pub db_logging: bool,
    pub version: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            languages: LanguageMap::default(),
            cache_ttl: Duration::from_secs(3600),
            db_logging: true,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// Cheap to clone; every handler gets one.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: ApiConfig,
    store: Arc<dyn Store>,
    cache: Arc<dyn Cache>,
    runtime: Arc<dyn Runtime>,
    logs: LogSink,
    sessions: SessionRegistry,
    schemas: SchemaCache,
    metrics: Metrics,
}

impl AppState {
    pub fn new(
        config: ApiConfig,
        store: Arc<dyn Store>,
        cache: Arc<dyn Cache>,
        runtime: Arc<dyn Runtime>,
        logs: LogSink,
    ) -> Self {
        let inner = Inner {
            config,
            store,
            cache,
            runtime,
            logs,
            sessions: SessionRegistry::new(100_000),
            schemas: SchemaCache::new(),
            metrics: Metrics::new(),
        };
        Self { inner: Arc::new(inner) }
    }

    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }
    pub fn cache(&self) -> &Arc<dyn Cache> {
        &self.inner.cache
    }
    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.inner.runtime
    }
    pub fn logs(&self) -> &LogSink {
        &self.inner.logs
    }
    pub fn sessions(&self) -> &SessionRegistry {
        &self.inner.sessions
    }
    pub(crate) fn schemas(&self) -> &SchemaCache {
        &self.inner.schemas
    }
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}
