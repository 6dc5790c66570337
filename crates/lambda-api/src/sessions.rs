//! Live sessions: the layers in front of the store. Execute reads a session
//! from this process's memory, then from the shared cache (Redis, when
//! configured), then from the store; initialize writes it to all three. The
//! shared layer is what lets a session initialized on one controller run on
//! another, and keep running there while PostgreSQL is down.
//!
//! Counters (`execution_count`, `last_executed_at`) are kept here per
//! controller and reach the store through the log pipeline: across a fleet
//! the stored counters add up (eventually consistent), while `GET
//! /sessions/{id}` on one controller shows what that controller has seen.
//!
//! Single-use sessions (`retain_session: false`): with a shared cache, the
//! one execute is claimed with `SET NX claim:<id>`, so exactly one
//! controller of the fleet runs it. Without one (or while Redis is down) the
//! claim is per controller, and the store's `closed` status stops the others
//! once the pipeline has written it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use lambda_cache::Cache;
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
    /// The result-cache key's hash state over what every execute of this
    /// session shares (script, owner, context): per execute only the params
    /// are hashed.
    pub(crate) cache_seed: std::sync::OnceLock<sha2::Sha256>,
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
            cache_seed: std::sync::OnceLock::new(),
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

    /// Claims one execution in this process. A single-use session is claimed
    /// once: the first caller closes it, every later one is refused. Across
    /// controllers use [`SessionRegistry::claim`].
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

/// Bounded map of live sessions in front of the shared cache and the store;
/// concurrent loads of one id share one load.
pub struct SessionRegistry {
    local: moka::future::Cache<String, Arc<LiveSession>>,
    /// The fleet's cache, when there is one (Redis); `None` for the
    /// in-process cache, which would only duplicate `local`.
    shared: Option<Arc<dyn Cache>>,
}

#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn session_key(request_id: &str) -> String {
    format!("session:{request_id}")
}

fn claim_key(request_id: &str) -> String {
    format!("claim:{request_id}")
}

/// How long a cache entry about `session` may live: until it expires.
fn lifetime(session: &Session, now: DateTime<Utc>) -> Option<Duration> {
    (session.expires_at - now).to_std().ok().filter(|d| !d.is_zero())
}

impl SessionRegistry {
    pub fn new(capacity: u64) -> Self {
        Self { local: moka::future::Cache::new(capacity), shared: None }
    }

    /// Puts the fleet's cache between this process and the store, if
    /// `cache` is shared between controllers (Redis); a process-local cache
    /// is ignored.
    pub fn with_cache(mut self, cache: Arc<dyn Cache>) -> Self {
        self.shared = cache.shared().then_some(cache);
        self
    }

    /// Adds a session just created by initialize (and stored), and publishes
    /// it to the fleet.
    pub async fn insert(&self, session: Session) -> Arc<LiveSession> {
        let live = Arc::new(LiveSession::new(session));
        self.local.insert(live.session.request_id.clone(), live.clone()).await;
        self.publish(&live.session).await;
        live
    }

    /// The live session: from memory, else the shared cache, else the store.
    pub async fn get(
        &self,
        store: &dyn Store,
        request_id: &str,
    ) -> Result<Option<Arc<LiveSession>>, StoreError> {
        let load = async {
            if let Some(session) = self.read_shared(request_id).await {
                return Ok(Arc::new(LiveSession::new(session)));
            }
            match store.get_session(request_id).await? {
                Some(session) => {
                    if session.status == SessionStatus::Active {
                        self.publish(&session).await;
                    }
                    Ok(Arc::new(LiveSession::new(session)))
                }
                None => Err(LoadError::NotFound),
            }
        };
        match self.local.try_get_with_by_ref(request_id, load).await {
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

    /// Claims one execution of `live`: in this process, and for a single-use
    /// session also across the fleet (the first controller to set
    /// `claim:<id>` wins). While the shared cache is down the local claim
    /// stands alone: executes go on, at the cost of the fleet-wide
    /// guarantee (see the module doc).
    pub async fn claim(&self, live: &LiveSession, now: DateTime<Utc>) -> bool {
        if !live.claim(now) {
            return false;
        }
        let (Some(cache), false) = (&self.shared, live.session.retain) else { return true };
        let ttl = lifetime(&live.session, now).unwrap_or(Duration::from_secs(1));
        match cache.set_if_absent(&claim_key(&live.session.request_id), Arc::from(&b"1"[..]), ttl).await {
            Ok(true) => {
                // The shared copy says closed from now on: a controller that
                // loads the session later (or this one after a restart)
                // reads its status from there before the store has it.
                let mut closed = live.session.clone();
                closed.status = SessionStatus::Closed;
                closed.execution_count += 1;
                closed.last_executed_at = Some(now);
                self.publish(&closed).await;
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim a single-use session fleet-wide; claiming it locally");
                true
            }
        }
    }

    async fn read_shared(&self, request_id: &str) -> Option<Session> {
        let cache = self.shared.as_ref()?;
        match cache.get(&session_key(request_id)).await {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(session) => Some(session),
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable session in the cache; reading the store");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(error = %e, "session cache unavailable; reading the store");
                None
            }
        }
    }

    /// Writes the session to the shared cache until it expires. A failure
    /// only costs the other controllers a store read.
    async fn publish(&self, session: &Session) {
        let Some(cache) = &self.shared else { return };
        let Some(ttl) = lifetime(session, Utc::now()) else { return };
        let Ok(bytes) = serde_json::to_vec(session) else { return };
        if let Err(e) = cache.set(&session_key(&session.request_id), Arc::from(bytes), ttl).await {
            tracing::debug!(error = %e, "could not publish a session to the cache");
        }
    }

    /// Number of sessions held in memory (not all of them active).
    pub fn len(&self) -> u64 {
        self.local.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use lambda_cache::{CacheError, MemoryCache};
    use lambda_core::{Language, ScriptHash};
    use lambda_store::SqliteStore;
    use serde_json::json;

    use super::*;

    /// A process-local cache that claims to be shared: two registries on it
    /// behave like two controllers on one Redis. `down` plays an outage.
    struct FleetCache {
        inner: MemoryCache,
        down: Mutex<bool>,
    }

    impl FleetCache {
        fn new() -> Arc<Self> {
            Arc::new(Self { inner: MemoryCache::new(1 << 20), down: Mutex::new(false) })
        }
        fn set_down(&self, down: bool) {
            *self.down.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = down;
        }
        fn check(&self) -> Result<(), CacheError> {
            if *self.down.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
                Err(CacheError::Unavailable("down".into()))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl Cache for FleetCache {
        fn backend(&self) -> &'static str {
            "redis"
        }
        async fn get(&self, key: &str) -> Result<Option<Arc<[u8]>>, CacheError> {
            self.check()?;
            self.inner.get(key).await
        }
        async fn set(&self, key: &str, value: Arc<[u8]>, ttl: Duration) -> Result<(), CacheError> {
            self.check()?;
            self.inner.set(key, value, ttl).await
        }
        async fn set_if_absent(
            &self,
            key: &str,
            value: Arc<[u8]>,
            ttl: Duration,
        ) -> Result<bool, CacheError> {
            self.check()?;
            self.inner.set_if_absent(key, value, ttl).await
        }
        async fn ping(&self) -> Result<(), CacheError> {
            self.check()
        }
        fn shared(&self) -> bool {
            true
        }
    }

    fn session(id: &str, retain: bool) -> Session {
        let script = "return 1;";
        let now = Utc::now();
        Session {
            request_id: id.into(),
            language_title: "nodejs-one".into(),
            language: Language::Nodejs,
            user_id: Some("alice".into()),
            script_content: script.into(),
            script_hash: ScriptHash::compute(Language::Nodejs, script, None),
            context: json!({"k": "v"}),
            compile_options: None,
            function_language_title: None,
            timeout_ms: 1_000,
            retain,
            status: SessionStatus::Active,
            created_at: now,
            expires_at: now + chrono::Duration::hours(1),
            execution_count: 0,
            last_executed_at: None,
        }
    }

    #[tokio::test]
    async fn a_session_made_on_one_controller_is_found_on_another_without_the_store() {
        let cache = FleetCache::new();
        let a = SessionRegistry::new(100).with_cache(cache.clone());
        let b = SessionRegistry::new(100).with_cache(cache.clone());
        // B's store does not have it: only the shared cache can answer.
        let empty = SqliteStore::open_in_memory().await.expect("store");
        a.insert(session("s1", true)).await;
        let found = b.get(&empty, "s1").await.expect("get").expect("found via the cache");
        assert_eq!(found.session, session_with_times(&found.session, session("s1", true)));
        assert!(b.get(&empty, "nope").await.expect("get").is_none());
    }

    fn session_with_times(like: &Session, mut s: Session) -> Session {
        s.created_at = like.created_at;
        s.expires_at = like.expires_at;
        s
    }

    #[tokio::test]
    async fn a_store_hit_is_published_and_a_cache_outage_falls_back_to_the_store() {
        let cache = FleetCache::new();
        let store = SqliteStore::open_in_memory().await.expect("store");
        store.insert_session(&session("s2", true)).await.expect("insert");
        cache.set_down(true);
        let a = SessionRegistry::new(100).with_cache(cache.clone());
        assert!(a.get(&store, "s2").await.expect("get").is_some(), "store answers while the cache is down");
        cache.set_down(false);
        let b = SessionRegistry::new(100).with_cache(cache.clone());
        assert!(b.get(&store, "s2").await.expect("get").is_some());
        let c = SessionRegistry::new(100).with_cache(cache.clone());
        let empty = SqliteStore::open_in_memory().await.expect("store");
        assert!(c.get(&empty, "s2").await.expect("get").is_some(), "b published it");
    }

    #[tokio::test]
    async fn a_single_use_session_runs_once_across_the_fleet() {
        let cache = FleetCache::new();
        let a = SessionRegistry::new(100).with_cache(cache.clone());
        let b = SessionRegistry::new(100).with_cache(cache.clone());
        let store = SqliteStore::open_in_memory().await.expect("store");
        let on_a = a.insert(session("once", false)).await;
        let on_b = b.get(&store, "once").await.expect("get").expect("found");
        let now = Utc::now();
        assert!(b.claim(&on_b, now).await);
        assert!(!a.claim(&on_a, now).await, "the other controller has it");
        assert!(!b.claim(&on_b, now).await);

        // Retained sessions are not claimed in the cache at all.
        let kept = a.insert(session("kept", true)).await;
        assert!(a.claim(&kept, now).await && a.claim(&kept, now).await);
        // A cache outage degrades to the local claim.
        cache.set_down(true);
        let alone = a.insert(session("alone", false)).await;
        assert!(a.claim(&alone, now).await);
        assert!(!a.claim(&alone, now).await);
    }

    #[tokio::test]
    async fn a_local_cache_is_not_used_for_sessions() {
        let registry = SessionRegistry::new(10).with_cache(Arc::new(MemoryCache::new(1 << 20)));
        assert!(registry.shared.is_none());
    }
}
