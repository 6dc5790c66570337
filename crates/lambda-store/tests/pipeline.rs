//! The log pipeline against a real SQLite store, wrapped to inject outages:
//! nothing is lost, order is kept, overflow spills to disk and comes back.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lambda_core::{Function, FunctionFilter, Session};
use lambda_store::testsuite::{at, execution, request_log, session};
use lambda_store::{
    ErrorLog, LogEntry, LogPipeline, PipelineConfig, RequestLog, SqliteStore, Store, StoreError,
};

/// The real store, with `write_logs` failing while `down` or for the next
/// `fail_next` calls, and rejecting as invalid any batch that holds the
/// request log number `poison`.
struct FlakyStore {
    inner: SqliteStore,
    down: AtomicBool,
    fail_next: AtomicU32,
    poison: AtomicI64,
}

impl FlakyStore {
    fn new(inner: SqliteStore) -> Arc<Self> {
        Arc::new(Self {
            inner,
            down: AtomicBool::new(false),
            fail_next: AtomicU32::new(0),
            poison: AtomicI64::new(-1),
        })
    }
}

#[async_trait]
impl Store for FlakyStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn insert_session(&self, session: &Session) -> Result<(), StoreError> {
        self.inner.insert_session(session).await
    }
    async fn get_session(&self, request_id: &str) -> Result<Option<Session>, StoreError> {
        self.inner.get_session(request_id).await
    }
    async fn count_active_sessions(&self, now: DateTime<Utc>) -> Result<i64, StoreError> {
        self.inner.count_active_sessions(now).await
    }
    async fn expire_sessions(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.expire_sessions(now).await
    }
    async fn purge_sessions(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.purge_sessions(before).await
    }
    async fn seed_function(&self, function: &Function) -> Result<bool, StoreError> {
        self.inner.seed_function(function).await
    }
    async fn register_function(&self, function: &Function) -> Result<bool, StoreError> {
        self.inner.register_function(function).await
    }
    async fn get_function(&self, language_title: &str) -> Result<Option<Function>, StoreError> {
        self.inner.get_function(language_title).await
    }
    async fn list_functions(&self, filter: &FunctionFilter) -> Result<(u64, Vec<Function>), StoreError> {
        self.inner.list_functions(filter).await
    }
    async fn write_logs(&self, batch: &[LogEntry]) -> Result<(), StoreError> {
        let injected = self.down.load(Ordering::SeqCst)
            || self.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if injected {
            return Err(StoreError::Unavailable("injected outage".into()));
        }
        let poison = self.poison.load(Ordering::SeqCst);
        let poisoned = batch
            .iter()
            .any(|e| matches!(e, LogEntry::Request(r) if r.response_payload.to_value()["n"] == poison));
        if poisoned {
            return Err(StoreError::Corrupt("injected invalid entry".into()));
        }
        self.inner.write_logs(batch).await
    }
    async fn request_logs(&self, request_id: &str) -> Result<Vec<RequestLog>, StoreError> {
        self.inner.request_logs(request_id).await
    }
    async fn error_logs(&self, request_id: &str) -> Result<Vec<ErrorLog>, StoreError> {
        self.inner.error_logs(request_id).await
    }

    async fn get_artifact(
        &self,
        hash: &lambda_core::ScriptHash,
    ) -> Result<Option<lambda_store::Artifact>, StoreError> {
        self.inner.get_artifact(hash).await
    }

    async fn put_artifact(&self, artifact: &lambda_store::Artifact) -> Result<(), StoreError> {
        self.inner.put_artifact(artifact).await
    }
}

async fn flaky_store(dir: &Path) -> Arc<FlakyStore> {
    FlakyStore::new(SqliteStore::open(&dir.join("lambda.db")).await.expect("open"))
}

fn config(dir: &Path) -> PipelineConfig {
    PipelineConfig {
        capacity: 10_000,
        batch_size: 64,
        flush_interval: Duration::from_millis(5),
        spill_path: dir.join("log-spill.jsonl"),
        retry_initial: Duration::from_millis(1),
        retry_max: Duration::from_millis(10),
    }
}

fn entry(n: i64) -> LogEntry {
    LogEntry::Request(request_log("s", n))
}

/// The `n`s of session `s`'s request logs, in write order.
async fn written(store: &dyn Store) -> Vec<i64> {
    let logs = store.request_logs("s").await.expect("read logs");
    logs.iter().map(|l| l.response_payload.to_value()["n"].as_i64().unwrap_or(-1)).collect()
}

/// Polls until `check` holds; the generous limit only guards against hangs.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(std::time::Instant::now() < give_up, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn spill_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|s| s.lines().count()).unwrap_or(0)
}

#[tokio::test]
async fn entries_arrive_in_the_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = flaky_store(dir.path()).await;
    store.insert_session(&session("x", at(3_600_000))).await.expect("insert");
    let pipeline = LogPipeline::start(store.clone(), config(dir.path()));
    let sink = pipeline.sink();
    for n in 0..10 {
        sink.submit(entry(n));
    }
    sink.submit(execution("x", 7, false));
    sink.submit(execution("x", 9, true));

    eventually("10 request logs", || async { written(&*store).await.len() == 10 }).await;
    assert_eq!(written(&*store).await, (0..10).collect::<Vec<_>>());
    eventually("the counters", || async {
        store.get_session("x").await.ok().flatten().is_some_and(|s| s.execution_count == 2)
    })
    .await;
    let x = store.get_session("x").await.expect("get").expect("x exists");
    assert_eq!((x.last_executed_at, x.status), (Some(at(9)), lambda_core::SessionStatus::Closed));

    pipeline.shutdown(Duration::from_secs(5)).await;
    assert_eq!(spill_lines(&dir.path().join("log-spill.jsonl")), 0);
}

#[tokio::test]
async fn failed_writes_are_retried_without_loss_or_reordering() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = flaky_store(dir.path()).await;
    store.fail_next.store(7, Ordering::SeqCst);
    let pipeline = LogPipeline::start(store.clone(), config(dir.path()));
    let sink = pipeline.sink();
    for n in 0..300 {
        sink.submit(entry(n));
        if n % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    eventually("300 request logs", || async { written(&*store).await.len() >= 300 }).await;
    assert_eq!(written(&*store).await, (0..300).collect::<Vec<_>>());
    let stats = pipeline.stats();
    assert!(stats.retries_total >= 7, "{stats:?}");
    assert_eq!((stats.written_total, stats.dropped_total, stats.spilled_total), (300, 0, 0));
    pipeline.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_full_queue_spills_to_disk_and_every_entry_arrives_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = flaky_store(dir.path()).await;
    store.down.store(true, Ordering::SeqCst);
    let mut config = config(dir.path());
    config.capacity = 4;
    config.batch_size = 16;
    let spill_path = config.spill_path.clone();
    let pipeline = LogPipeline::start(store.clone(), config);
    let sink = pipeline.sink();
    for n in 0..1000 {
        sink.submit(entry(n));
    }
    let stats = pipeline.stats();
    assert!(stats.spilled_total >= 1000 - 4 - 16, "{stats:?}");
    assert_eq!(spill_lines(&spill_path) as u64, stats.spilled_total);
    assert_eq!(stats.queued + stats.spill_pending, 1000, "{stats:?}");

    store.down.store(false, Ordering::SeqCst);
    eventually("1000 request logs", || async { pipeline.stats().written_total >= 1000 }).await;
    assert_eq!(written(&*store).await, (0..1000).collect::<Vec<_>>());
    let stats = pipeline.stats();
    assert_eq!((stats.queued, stats.spill_pending, stats.dropped_total), (0, 0, 0), "{stats:?}");
    assert_eq!(spill_lines(&spill_path), 0);

    // Back to memory once the spill file is drained.
    sink.submit(entry(1000));
    eventually("one more", || async { written(&*store).await.len() == 1001 }).await;
    assert_eq!(pipeline.stats().spilled_total, stats.spilled_total);
    pipeline.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn shutdown_during_an_outage_leaves_a_spill_file_the_next_start_replays() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = flaky_store(dir.path()).await;
    store.down.store(true, Ordering::SeqCst);
    let config = config(dir.path());
    let spill_path = config.spill_path.clone();

    let pipeline = LogPipeline::start(store.clone(), config.clone());
    let sink = pipeline.sink();
    for n in 0..50 {
        sink.submit(entry(n));
    }
    pipeline.shutdown(Duration::from_millis(100)).await;
    assert_eq!(spill_lines(&spill_path), 50);
    // A handler still holding a sink after shutdown: its entry waits on disk too.
    sink.submit(entry(50));
    assert_eq!(spill_lines(&spill_path), 51);
    assert!(written(&*store).await.is_empty());

    store.down.store(false, Ordering::SeqCst);
    let pipeline = LogPipeline::start(store.clone(), config);
    assert_eq!(pipeline.stats().spill_pending, 51);
    // New entries queue behind the replay.
    pipeline.sink().submit(entry(51));
    eventually("52 request logs", || async { written(&*store).await.len() >= 52 }).await;
    assert_eq!(written(&*store).await, (0..52).collect::<Vec<_>>());
    pipeline.shutdown(Duration::from_secs(5)).await;
    assert_eq!(spill_lines(&spill_path), 0);
}

#[tokio::test]
async fn an_endless_outage_ends_at_the_shutdown_deadline() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = flaky_store(dir.path()).await;
    store.down.store(true, Ordering::SeqCst);
    // From here on nothing touches SQLite, so virtual time is safe.
    tokio::time::pause();
    let mut config = config(dir.path());
    config.retry_initial = Duration::from_secs(1);
    config.retry_max = Duration::from_secs(60);
    let spill_path = config.spill_path.clone();
    let pipeline = LogPipeline::start(store.clone(), config);
    for n in 0..10 {
        pipeline.sink().submit(entry(n));
    }
    tokio::time::sleep(Duration::from_secs(300)).await;
    let stats = pipeline.stats();
    assert!(stats.retries_total >= 5, "{stats:?}");
    assert_eq!((stats.queued, stats.written_total), (10, 0));
    pipeline.shutdown(Duration::from_secs(30)).await;
    assert_eq!(spill_lines(&spill_path), 10);
}

#[tokio::test]
async fn an_invalid_entry_is_dropped_alone_not_with_its_batch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = flaky_store(dir.path()).await;
    store.poison.store(17, Ordering::SeqCst);
    let mut config = config(dir.path());
    config.flush_interval = Duration::from_millis(50);
    let pipeline = LogPipeline::start(store.clone(), config);
    let sink = pipeline.sink();
    for n in 0..40 {
        sink.submit(entry(n));
    }
    eventually("39 request logs", || async {
        pipeline.stats().written_total + pipeline.stats().dropped_total >= 40
    })
    .await;
    let expected: Vec<i64> = (0..40).filter(|n| *n != 17).collect();
    assert_eq!(written(&*store).await, expected);
    let stats = pipeline.stats();
    assert_eq!((stats.written_total, stats.dropped_total), (39, 1), "{stats:?}");
    pipeline.shutdown(Duration::from_secs(5)).await;
}
