//! The embedded SQLite backend: one file in the data dir, WAL journal,
//! versioned migrations from `migrations/sqlite` applied at open.

mod artifacts;
mod codec;
mod functions;
mod logs;
mod sessions;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lambda_core::{Function, FunctionFilter, ScriptHash, Session};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::{Artifact, ErrorLog, LogEntry, RequestLog, Store, StoreError};

/// How long a statement waits for another connection's write lock before
/// failing with `Unavailable` (WAL allows one writer at a time).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Readers run in parallel under WAL; writes serialise on the file lock anyway.
const MAX_CONNECTIONS: u32 = 4;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Embedded storage. Cheap to clone (a connection pool).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating the file and its directory if missing) and migrates.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("creating {}: {e}", dir.display())))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        Self::migrated(pool).await
    }

    /// A private in-memory database (tests, throwaway runs).
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        // Every connection to `:memory:` is a database of its own: keep
        // exactly one, forever.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        Self::migrated(pool).await
    }

    async fn migrated(pool: SqlitePool) -> Result<Self, StoreError> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrating the SQLite store: {e}")))?;
        Ok(Self { pool })
    }

    /// Closes the pool: waits for connections in use, checkpoints the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
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

    async fn get_artifact(&self, hash: &ScriptHash) -> Result<Option<Artifact>, StoreError> {
        artifacts::get(&self.pool, hash).await
    }

    async fn put_artifact(&self, artifact: &Artifact) -> Result<(), StoreError> {
        artifacts::put(&self.pool, artifact).await
    }

    async fn error_logs(&self, request_id: &str) -> Result<Vec<ErrorLog>, StoreError> {
        logs::error_logs(&self.pool, request_id).await
    }
}
