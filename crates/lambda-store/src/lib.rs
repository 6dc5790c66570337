//! Persistence of Lambda Microservice: the [`Store`] trait (sessions,
//! functions, request and error logs), its embedded SQLite and its PostgreSQL
//! backends, and the log pipeline that keeps log writes off the execute hot
//! path.
#![forbid(unsafe_code)]

mod batch;
pub mod pipeline;
pub mod postgres;
pub mod sqlite;
#[cfg(feature = "testsuite")]
pub mod testsuite;

pub use pipeline::{LogPipeline, LogSink, PipelineConfig, PipelineStats};
pub use postgres::{PostgresConfig, PostgresStore};
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lambda_core::{Function, FunctionFilter, Language, ScriptHash, Session};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// What a store operation can fail with. The policy: `Conflict` is the
/// caller's (a key is taken), `Unavailable` is transient (the pipeline retries
/// it, the API answers 503), `Corrupt` is permanent for that data (retrying
/// the same write or read will not help). Backends map their driver errors
/// here and nowhere else.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A row with that key exists already (e.g. a session `request_id`).
    #[error("already exists: {0}")]
    Conflict(String),
    /// The backend cannot be reached or failed; retrying may help.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded, or data to store was rejected by a
    /// constraint of the schema: retrying the same operation will not help.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// The mapping shared by the sqlx backends: unique violation → `Conflict`,
/// decode problems and constraint rejections → `Corrupt`, the rest (I/O,
/// pool timeout, busy database, a PostgreSQL shutting down…) →
/// `Unavailable`. PostgreSQL errors go by SQLSTATE class: 22 (data
/// exception) and 23 (integrity constraint) are permanent for that data,
/// every other class may pass (connection, resources, operator
/// intervention, serialization failure), so the log pipeline retries it.
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::error::ErrorKind;
        match &e {
            sqlx::Error::Database(db)
                if db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() =>
            {
                match db.code().as_deref() {
                    Some("23505") => Self::Conflict(db.message().to_owned()),
                    Some(code) if code.starts_with("22") || code.starts_with("23") => {
                        Self::Corrupt(format!("{} (SQLSTATE {code})", db.message()))
                    }
                    _ => Self::Unavailable(e.to_string()),
                }
            }
            sqlx::Error::Database(db) => match db.kind() {
                ErrorKind::UniqueViolation => Self::Conflict(db.message().to_owned()),
                ErrorKind::ForeignKeyViolation | ErrorKind::NotNullViolation | ErrorKind::CheckViolation => {
                    Self::Corrupt(db.message().to_owned())
                }
                _ => Self::Unavailable(e.to_string()),
            },
            sqlx::Error::Decode(_)
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::TypeNotFound { .. } => Self::Corrupt(e.to_string()),
            _ => Self::Unavailable(e.to_string()),
        }
    }
}

/// One execute, as written to `request_logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestLog {
    /// The session's `request_id`.
    pub request_id: String,
    pub language_title: String,
    pub user_id: Option<String>,
    pub status_code: u16,
    pub duration_ms: i64,
    pub cached: bool,
    pub request_payload: JsonText,
    pub response_payload: JsonText,
    pub runtime_metrics: JsonText,
    pub error_code: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A JSON document kept as its text: the execute path serializes a log's
/// payloads once, where it has them, and the backends bind that text as is
/// instead of walking a `Value` tree again in the writer.
#[derive(Debug, Clone)]
pub struct JsonText(Box<RawValue>);

impl JsonText {
    /// `value` serialized. A value serde cannot encode as JSON (a map with
    /// non-string keys) is stored as `null`.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Self {
        Self(serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned()))
    }

    /// Text that must already be JSON (a column the store wrote).
    pub fn from_json(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(Self)
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    pub fn raw(&self) -> &RawValue {
        &self.0
    }

    /// The document parsed, for readers.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }
}

/// Equal as JSON values: PostgreSQL's `jsonb` hands back the same document
/// with other spacing and key order.
impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str() || self.to_value() == other.to_value()
    }
}

impl From<Value> for JsonText {
    fn from(value: Value) -> Self {
        Self::of(&value)
    }
}

impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// Through `Value`: a raw value cannot be read back from inside the
/// internally tagged [`LogEntry`] (the spill file's lines).
impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(|v| Self::of(&v))
    }
}

/// A failed execute, as written to `error_logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorLog {
    pub request_id: String,
    pub language_title: String,
    pub error_code: String,
    pub message: String,
    pub details: Value,
    pub created_at: DateTime<Utc>,
}

/// The counter side of an execute: bumps `execution_count`, sets
/// `last_executed_at`, and closes a single-use session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionExecution {
    pub request_id: String,
    pub executed_at: DateTime<Utc>,
    pub close: bool,
}

/// What the log pipeline carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogEntry {
    Request(RequestLog),
    Error(ErrorLog),
    Execution(SessionExecution),
}

/// Outcome of compiling a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompileStatus {
    Succeeded,
    Failed,
}

impl CompileStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// A compiled script (e.g. Rust → `.wasm`), kept by script hash so that a
/// second initialize, another controller or a restart does not recompile.
/// A failed compile is kept too (with its diagnostics), so a broken script is
/// not recompiled either.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    pub script_hash: ScriptHash,
    pub language: Language,
    pub compile_status: CompileStatus,
    /// The compiled module; empty when the compile failed.
    pub bytes: Vec<u8>,
    /// The compiler's diagnostics when it failed (the `COMPILE_ERROR` details).
    pub compile_error: Option<Value>,
    pub created_at: DateTime<Utc>,
}

/// Storage of sessions, functions and logs. Backends: SQLite (embedded
/// default) and PostgreSQL (`DATABASE_URL`). Held as `Arc<dyn Store>`.
#[async_trait]
pub trait Store: Send + Sync {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Cheap liveness check for `/health`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// `Conflict` when the `request_id` is taken.
    async fn insert_session(&self, session: &Session) -> Result<(), StoreError>;
    async fn get_session(&self, request_id: &str) -> Result<Option<Session>, StoreError>;
    /// Sessions with status `active` and `expires_at > now`.
    async fn count_active_sessions(&self, now: DateTime<Utc>) -> Result<i64, StoreError>;
    /// Marks active sessions past `expires_at` as expired; returns how many.
    async fn expire_sessions(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Deletes expired/closed sessions whose `expires_at` is before `before`.
    async fn purge_sessions(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Inserts a predefined function unless its title exists (seeding is idempotent).
    async fn seed_function(&self, function: &Function) -> Result<bool, StoreError>;
    /// Registers a dynamic function only where the title is free; true if inserted.
    async fn register_function(&self, function: &Function) -> Result<bool, StoreError>;
    async fn get_function(&self, language_title: &str) -> Result<Option<Function>, StoreError>;
    /// One page (filter.page is 1-based) and the total count matching the filter.
    async fn list_functions(&self, filter: &FunctionFilter) -> Result<(u64, Vec<Function>), StoreError>;

    /// Writes a batch of log entries in one transaction: all or nothing.
    async fn write_logs(&self, batch: &[LogEntry]) -> Result<(), StoreError>;
    /// The request logs of one session in the order they were written
    /// (operators, tests).
    async fn request_logs(&self, request_id: &str) -> Result<Vec<RequestLog>, StoreError>;
    /// The error logs of one session in the order they were written.
    async fn error_logs(&self, request_id: &str) -> Result<Vec<ErrorLog>, StoreError>;

    /// The compiled artifact of a script, if it was compiled before.
    async fn get_artifact(&self, hash: &ScriptHash) -> Result<Option<Artifact>, StoreError>;
    /// Inserts or replaces the artifact of `artifact.script_hash`.
    async fn put_artifact(&self, artifact: &Artifact) -> Result<(), StoreError>;
}
