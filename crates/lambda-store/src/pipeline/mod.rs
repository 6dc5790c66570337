//! The log pipeline: keeps request logs, error logs and execution counters off
//! the execute hot path. [`LogSink::submit`] never waits for storage; a
//! background writer batches entries into [`Store::write_logs`], retries a
//! failed batch with exponential backoff, and when the in-memory bound is
//! reached, entries go to a spill file on disk instead of being dropped.
//!
//! Order: entries reach the store in submission order. Once anything is in
//! the spill file, new entries are appended there too until the writer has
//! drained it, so that memory never overtakes disk.

mod spill;
mod writer;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use crate::{LogEntry, Store};
use spill::SpillFile;

/// Tuning of the pipeline. `Default` gives the documented defaults with the
/// spill file at `./data/log-spill.jsonl`; [`PipelineConfig::in_data_dir`]
/// puts it in the configured data dir.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Entries held in memory before spilling to disk.
    pub capacity: usize,
    /// Entries per `write_logs` call at most.
    pub batch_size: usize,
    /// How long a partial batch waits for company before it is written.
    pub flush_interval: Duration,
    /// JSON-lines file for entries beyond `capacity` or left at shutdown.
    pub spill_path: PathBuf,
    /// First delay after a failed write; doubles up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            batch_size: 1024,
            flush_interval: Duration::from_millis(50),
            spill_path: PathBuf::from("data/log-spill.jsonl"),
            retry_initial: Duration::from_millis(100),
            // Short enough that logs flow again within seconds of storage
            // coming back; one attempt per 5 s against a down server is cheap.
            retry_max: Duration::from_secs(5),
        }
    }
}

impl PipelineConfig {
    /// The defaults, spilling to `<data_dir>/log-spill.jsonl`.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self { spill_path: data_dir.join("log-spill.jsonl"), ..Self::default() }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Entries in memory, the batch being written included (gauge).
    pub queued: u64,
    /// Entries in the spill file not yet written (gauge).
    pub spill_pending: u64,
    /// Entries written to the store.
    pub written_total: u64,
    /// Failed `write_logs` attempts that were retried.
    pub retries_total: u64,
    /// Entries that went to the spill file.
    pub spilled_total: u64,
    /// Entries lost: rejected by the store as invalid, or unspillable (disk error).
    pub dropped_total: u64,
}

/// The running pipeline. Dropping it without [`LogPipeline::shutdown`]
/// makes the writer save what is in memory to the spill file and stop.
#[derive(Debug)]
pub struct LogPipeline {
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<tokio::time::Instant>>,
    writer: Option<JoinHandle<()>>,
}

/// The submitting side, cloned into every request handler.
#[derive(Debug, Clone)]
pub struct LogSink {
    shared: Arc<Shared>,
}

struct Shared {
    /// A std mutex: held only for queue operations and single-line file I/O,
    /// never across an await (the mini-redis `db.rs` reasoning).
    state: Mutex<State>,
    /// Something was submitted.
    work: Notify,
    /// A full batch is waiting.
    full: Notify,
    capacity: usize,
    batch_size: usize,
    in_flight: AtomicU64,
    written_total: AtomicU64,
    retries_total: AtomicU64,
    spilled_total: AtomicU64,
    dropped_total: AtomicU64,
}

struct State {
    queue: VecDeque<LogEntry>,
    spill: SpillFile,
    /// The writer has stopped: everything goes to the spill file for the next run.
    closed: bool,
}

impl std::fmt::Debug for Shared {
    // The queue can hold thousands of payloads: show the numbers only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("capacity", &self.capacity)
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the queue usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl LogPipeline {
    /// Starts the writer on the current tokio runtime. A spill file left by a
    /// previous run is replayed first.
    pub fn start(store: Arc<dyn Store>, config: PipelineConfig) -> LogPipeline {
        let spill = SpillFile::open(&config.spill_path).unwrap_or_else(|e| {
            tracing::error!(path = %config.spill_path.display(), error = %e, "cannot read the log spill file; starting without it");
            SpillFile::empty(&config.spill_path)
        });
        if spill.pending() > 0 {
            tracing::info!(entries = spill.pending(), path = %spill.path().display(), "replaying spilled log entries");
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State { queue: VecDeque::new(), spill, closed: false }),
            work: Notify::new(),
            full: Notify::new(),
            capacity: config.capacity.max(1),
            batch_size: config.batch_size.max(1),
            in_flight: AtomicU64::new(0),
            written_total: AtomicU64::new(0),
            retries_total: AtomicU64::new(0),
            spilled_total: AtomicU64::new(0),
            dropped_total: AtomicU64::new(0),
        });
        let (tx, rx) = oneshot::channel();
        let writer = tokio::spawn(writer::Writer::new(shared.clone(), store, config, rx).run());
        LogPipeline { shared, shutdown: Some(tx), writer: Some(writer) }
    }

    pub fn sink(&self) -> LogSink {
        LogSink { shared: self.shared.clone() }
    }

    pub fn stats(&self) -> PipelineStats {
        self.sink().stats()
    }

    /// Writes what it can within `deadline`; whatever storage did not take
    /// by then is left in the spill file for the next start.
    pub async fn shutdown(mut self, deadline: Duration) {
        let at = tokio::time::Instant::now() + deadline;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(at);
        }
        if let Some(writer) = self.writer.take()
            && let Err(e) = writer.await
        {
            tracing::error!(error = %e, "the log writer task failed");
        }
    }
}

impl LogSink {
    /// Queues one entry; never blocks on storage.
    pub fn submit(&self, entry: LogEntry) {
        let shared = &*self.shared;
        let mut state = shared.lock();
        let to_memory = !state.closed && state.spill.pending() == 0 && state.queue.len() < shared.capacity;
        if !to_memory {
            match state.spill.append(&entry) {
                Ok(()) => {
                    drop(state);
                    Shared::count(&shared.spilled_total, 1);
                    shared.work.notify_one();
                    return;
                }
                Err(e) if state.closed || state.queue.len() >= shared.capacity => {
                    drop(state);
                    Shared::count(&shared.dropped_total, 1);
                    tracing::error!(error = %e, "log spill file unwritable; dropping a log entry");
                    return;
                }
                // Out of order beats lost.
                Err(e) => {
                    tracing::warn!(error = %e, "log spill file unwritable; keeping the entry in memory")
                }
            }
        }
        state.queue.push_back(entry);
        let len = state.queue.len();
        drop(state);
        // Only transitions wake the writer: it looks at the queue itself
        // whenever it wakes, and a `Notify` keeps one wake-up for a writer
        // that is not waiting yet.
        if len == 1 {
            shared.work.notify_one();
        }
        if len == shared.batch_size {
            shared.full.notify_one();
        }
    }

    pub fn stats(&self) -> PipelineStats {
        let shared = &*self.shared;
        let (queued, spill_pending) = {
            let state = shared.lock();
            (state.queue.len() as u64, state.spill.pending())
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PipelineStats {
            queued: queued + get(&shared.in_flight),
            spill_pending,
            written_total: get(&shared.written_total),
            retries_total: get(&shared.retries_total),
            spilled_total: get(&shared.spilled_total),
            dropped_total: get(&shared.dropped_total),
        }
    }
}
