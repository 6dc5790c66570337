//! Shared state of the API: configuration and the handles to store, cache,
//! runtime, log pipeline, live sessions and metrics.

use std::sync::Arc;
use std::time::Duration;

use lambda_cache::Cache;
use lambda_core::{LanguageMap, Limits};
use lambda_runtime::Runtime;
use lambda_store::Store;
use lambda_store::pipeline::LogSink;

use crate::auth::AuthConfig;
use crate::metrics::Metrics;
use crate::ratelimit::{MemoryRateLimiter, RateLimiter, RateLimits};
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
    pub auth: AuthConfig,
    pub rate_limits: RateLimits,
    /// `CORS_ALLOWED_ORIGINS`; `*` allows any origin.
    pub cors_origins: Vec<String>,
    /// Total bytes of request headers accepted (larger is 400).
    pub max_header_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            languages: LanguageMap::default(),
            cache_ttl: Duration::from_secs(3600),
            db_logging: true,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            auth: AuthConfig::off(),
            rate_limits: RateLimits::default(),
            cors_origins: vec!["*".to_owned()],
            max_header_bytes: 16 * 1024,
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
    rate_limiter: Arc<dyn RateLimiter>,
}

impl AppState {
    pub fn new(
        config: ApiConfig,
        store: Arc<dyn Store>,
        cache: Arc<dyn Cache>,
        runtime: Arc<dyn Runtime>,
        logs: LogSink,
    ) -> Self {
        // A shared cache (Redis) also carries sessions between controllers.
        let sessions = SessionRegistry::new(100_000).with_cache(cache.clone());
        let inner = Inner {
            config,
            store,
            cache,
            runtime,
            logs,
            sessions,
            schemas: SchemaCache::new(),
            metrics: Metrics::new(),
            rate_limiter: Arc::new(MemoryRateLimiter::default()),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Replaces the in-process rate limiter (e.g. with a Redis one shared by
    /// every controller). Call before the state is cloned.
    pub fn with_rate_limiter(mut self, limiter: Arc<dyn RateLimiter>) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.rate_limiter = limiter,
            None => {
                tracing::error!("with_rate_limiter called on a shared state; keeping the in-process limiter")
            }
        }
        self
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
    pub fn auth(&self) -> &AuthConfig {
        &self.inner.config.auth
    }
    pub fn rate_limiter(&self) -> &Arc<dyn RateLimiter> {
        &self.inner.rate_limiter
    }
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}
