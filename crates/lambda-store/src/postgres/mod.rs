//! The PostgreSQL backend (`DATABASE_URL`): the reference schema (`meta.*`,
//! `public.*`) from the versioned migrations in `migrations/postgres`,
//! applied at connect under sqlx's advisory lock, so that a fleet of
//! controllers starting together on an empty database migrate it once.
//!
//! The pool fails fast: while PostgreSQL is down, an operation waits at most
//! `acquire_timeout` and then answers `Unavailable` (the API's 503, the log
//! pipeline's retry) rather than holding requests.

mod artifacts;
mod codec;
mod functions;
mod logs;
mod sessions;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lambda_core::{Function, FunctionFilter, ScriptHash, Session};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::{Artifact, ErrorLog, LogEntry, RequestLog, Store, StoreError};

/// Connection settings of the PostgreSQL store.
#[derive(Clone)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database?sslmode=…`
    pub url: String,
    /// Connections of this controller at most (`DATABASE_MAX_CONNECTIONS`).
    pub max_connections: u32,
    /// How long an operation waits for a connection (connecting included)
    /// before it fails as unavailable.
    pub acquire_timeout: Duration,
    /// Server-side bound on one statement, so that a stuck query frees its
    /// connection.
    pub statement_timeout: Duration,
}

impl PostgresConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for PostgresConfig {
    // The URL may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish_non_exhaustive()
    }
}

/// Shared storage of a fleet. Cheap to clone (a connection pool).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects and applies pending migrations. Fails when the server cannot
    /// be reached within `acquire_timeout` or the schema cannot be migrated.
    pub async fn connect(config: &PostgresConfig) -> Result<Self, StoreError> {
        let statement_timeout = format!("{}ms", config.statement_timeout.as_millis());
        let options = PgConnectOptions::from_str(&config.url)
            .map_err(|e| StoreError::Unavailable(format!("DATABASE_URL is not a PostgreSQL URL: {e}")))?
            .application_name("lambda")
            .options([("statement_timeout", statement_timeout.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(config.acquire_timeout)
            .test_before_acquire(true)
            .connect_with(options)
            .await?;
        Self::migrate(&pool).await?;
        Ok(Self { pool })
    }

    async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/postgres")
            .run(pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrating the PostgreSQL store: {e}")))
    }

    /// The pool, for operators' tools and tests that read the schema directly.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool, waiting for connections in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn insert_session(&self, session: &Session) -> Result<(), StoreError> {
        sessions::insert(&self.pool, session).await
    }

    async fn get_session(&self, request_id: &str) -> Result<Option<Session>, StoreError> {
        sessions::get(&self.pool, request_id).await
    }

    async fn count_active_sessions(&self, now: DateTime<Utc>) -> Result<i64, StoreError> {
        sessions::count_active(&self.pool, now).await
    }

    async fn expire_sessions(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        sessions::expire(&self.pool, now).await
    }

    async fn purge_sessions(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        sessions::purge(&self.pool, before).await
    }

    async fn seed_function(&self, function: &Function) -> Result<bool, StoreError> {
        functions::insert_if_free(&self.pool, function).await
    }

    async fn register_function(&self, function: &Function) -> Result<bool, StoreError> {
        functions::insert_if_free(&self.pool, function).await
    }

    async fn get_function(&self, language_title: &str) -> Result<Option<Function>, StoreError> {
        functions::get(&self.pool, language_title).await
    }

    async fn list_functions(&self, filter: &FunctionFilter) -> Result<(u64, Vec<Function>), StoreError> {
        functions::list(&self.pool, filter).await
    }

    async fn write_logs(&self, batch: &[LogEntry]) -> Result<(), StoreError> {
        logs::write(&self.pool, batch).await
    }

    async fn request_logs(&self, request_id: &str) -> Result<Vec<RequestLog>, StoreError> {
        logs::request_logs(&self.pool, request_id).await
    }

    async fn error_logs(&self, request_id: &str) -> Result<Vec<ErrorLog>, StoreError> {
        logs::error_logs(&self.pool, request_id).await
    }

    async fn get_artifact(&self, hash: &ScriptHash) -> Result<Option<Artifact>, StoreError> {
        artifacts::get(&self.pool, hash).await
    }

    async fn put_artifact(&self, artifact: &Artifact) -> Result<(), StoreError> {
        artifacts::put(&self.pool, artifact).await
    }
}
