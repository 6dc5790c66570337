//! Live sessions: the in-process layer in front of the store. Execute reads a
//! session from here (loading it from the store once), and keeps its counters
//! here; the store receives them through the log pipeline, off the hot path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use chrono::{DateTime, TimeZone, Utc};
use lambda_core::{Session, SessionStatus};
use lambda_runtime::Script;
use lambda_store::{Store, StoreError};

/// A session held in memory, with the prepared-script handle the runtime takes.
#[derive(Debug)]
pub struct LiveSession {
    pub session: Session,
    pub script: Arc<Script>,
    pub owner: Arc<str>,
    execution_count: AtomicI64,
    /// Epoch milliseconds of the last execute; 0 = never.
    last_executed_ms: AtomicI64,
    closed: AtomicBool,
}

impl LiveSession {
    pub fn new(session: Session) -> Self {
        let script = Arc::new(Script {
            hash: session.script_hash,
            language: session.language,
            source: Arc::from(session.script_content.as_str()),
            compile_options: session.compile_options.clone(),
        });
        Self {
            owner: Arc::from(session.user_id.as_deref().unwrap_or("")),
            execution_count: AtomicI64::new(session.execution_count),
            last_executed_ms: AtomicI64::new(session.last_executed_at.map_or(0, |t| t.timestamp_millis())),
            closed: AtomicBool::new(session.status == SessionStatus::Closed),
            script,
            session,
        }
    }

    /// Status now: closed, expired (past `expires_at`), or active.
    pub fn status(&self, now: DateTime<Utc>) -> SessionStatus {
        if self.closed.load(Ordering::Acquire) { SessionStatus::Closed } else { self.session.status_at(now) }
    }

    /// Claims one execution. A single-use session is claimed once: the first
    /// caller closes it, every later one is refused.
    pub fn claim(&self, now: DateTime<Utc>) -> bool {
        if self.status(now) != SessionStatus::Active {
            return false;
        }
        self.session.retain || !self.closed.swap(true, Ordering::AcqRel)
    }

    /// Counts an execution that ran (or was answered from cache).
    pub fn record_execution(&self, at: DateTime<Utc>) {
        self.execution_count.fetch_add(1, Ordering::AcqRel);
        self.last_executed_ms.fetch_max(at.timestamp_millis(), Ordering::AcqRel);
    }

    pub fn execution_count(&self) -> i64 {
        self.execution_count.load(Ordering::Acquire)
    }

    pub fn last_executed_at(&self) -> Option<DateTime<Utc>> {
        match self.last_executed_ms.load(Ordering::Acquire) {
            0 => None,
            ms => Utc.timestamp_millis_opt(ms).single(),
        }
    }
}

/// Bounded map of live sessions; concurrent loads of one id share one load.
pub struct SessionRegistry {
    cache: moka::future::Cache<String, Arc<LiveSession>>,
}

#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SessionRegistry {
    pub fn new(capacity: u64) -> Self {
        Self { cache: moka::future::Cache::new(capacity) }
    }

    /// Adds a session just created by initialize.
    pub async fn insert(&self, session: Session) -> Arc<LiveSession> {
        let live = Arc::new(LiveSession::new(session));
        self.cache.insert(live.session.request_id.clone(), live.clone()).await;
        live
    }

    /// The live session, loading it from the store on a miss.
    pub async fn get(
        &self,
        store: &dyn Store,
        request_id: &str,
    ) -> Result<Option<Arc<LiveSession>>, StoreError> {
        let load = async {
            match store.get_session(request_id).await? {
                Some(session) => Ok(Arc::new(LiveSession::new(session))),
                None => Err(LoadError::NotFound),
            }
        };
        match self.cache.try_get_with_by_ref(request_id, load).await {
            Ok(live) => Ok(Some(live)),
            Err(e) => match Arc::try_unwrap(e) {
                Ok(LoadError::NotFound) => Ok(None),
                Ok(LoadError::Store(e)) => Err(e),
                Err(shared) => match &*shared {
                    LoadError::NotFound => Ok(None),
                    LoadError::Store(e) => Err(StoreError::Unavailable(e.to_string())),
                },
            },
        }
    }

    /// Number of sessions held in memory (not all of them active).
    pub fn len(&self) -> u64 {
        self.cache.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
