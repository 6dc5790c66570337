//! The background writer of the log pipeline: batches the queue, drains the
//! spill file, retries failed batches, and at shutdown saves what storage did
//! not take to the spill file.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};

use super::spill::SpillBatch;
use super::{PipelineConfig, Shared};
use crate::{LogEntry, Store, StoreError};

pub(super) struct Writer {
    shared: Arc<Shared>,
    store: Arc<dyn Store>,
    config: PipelineConfig,
    shutdown: oneshot::Receiver<Instant>,
    /// Set once shutdown is asked for (or the pipeline dropped): from then on
    /// the writer drains without waiting, and gives up at this instant.
    deadline: Option<Instant>,
}

enum Batch {
    Memory(Vec<LogEntry>),
    Spill(SpillBatch),
}

impl Batch {
    fn entries(&self) -> &[LogEntry] {
        match self {
            Batch::Memory(entries) => entries,
            Batch::Spill(batch) => &batch.entries,
        }
    }

    /// What is left to write after the first `done` entries. A spill batch
    /// stays whole: its cursor moves only past a whole batch, so after a
    /// shutdown in the middle of writing a rejected batch entry by entry,
    /// the next start may write its first `done` entries a second time
    /// (duplicated, never lost).
    fn without_first(self, done: usize) -> Batch {
        match self {
            Batch::Memory(mut entries) => {
                entries.drain(..done.min(entries.len()));
                Batch::Memory(entries)
            }
            spill @ Batch::Spill(_) => spill,
        }
    }
}

enum Next {
    Batch(Batch),
    Idle,
    SpillUnreadable,
}

impl Writer {
    pub(super) fn new(
        shared: Arc<Shared>,
        store: Arc<dyn Store>,
        config: PipelineConfig,
        shutdown: oneshot::Receiver<Instant>,
    ) -> Self {
        Self { shared, store, config, shutdown, deadline: None }
    }

    pub(super) async fn run(mut self) {
        loop {
            if self.deadline.is_none() {
                self.wait_for_work().await;
            }
            match self.next_batch() {
                Next::Batch(batch) => {
                    let done = self.deliver(batch.entries()).await;
                    if done < batch.entries().len() {
                        return self.save(Some(batch.without_first(done)));
                    }
                    self.commit(batch);
                }
                Next::Idle if self.deadline.is_some() => return self.save(None),
                Next::Idle => {}
                Next::SpillUnreadable => {
                    if !self.pause(self.config.retry_max).await {
                        return self.save(None);
                    }
                }
            }
        }
    }

    /// Returns when there is a batch to write, or shutdown was asked for.
    async fn wait_for_work(&mut self) {
        let shared = self.shared.clone();
        loop {
            let (queued, spilled) = {
                let state = shared.lock();
                (state.queue.len(), state.spill.pending())
            };
            if spilled > 0 || queued >= shared.batch_size {
                return;
            }
            if queued > 0 {
                // Give a partial batch `flush_interval` to fill up.
                tokio::select! {
                    () = sleep(self.config.flush_interval) => {}
                    () = shared.full.notified() => {}
                    at = &mut self.shutdown => self.deadline = Some(at.unwrap_or_else(|_| Instant::now())),
                }
                return;
            }
            tokio::select! {
                () = shared.work.notified() => {}
                at = &mut self.shutdown => {
                    self.deadline = Some(at.unwrap_or_else(|_| Instant::now()));
                    return;
                }
            }
        }
    }

    /// Memory first: while the spill file has entries, nothing newer is
    /// queued in memory, so this keeps submission order.
    fn next_batch(&self) -> Next {
        let mut state = self.shared.lock();
        if !state.queue.is_empty() {
            let n = state.queue.len().min(self.shared.batch_size);
            let entries: Vec<LogEntry> = state.queue.drain(..n).collect();
            self.shared.in_flight.store(n as u64, Ordering::Relaxed);
            return Next::Batch(Batch::Memory(entries));
        }
        if state.spill.pending() == 0 {
            return Next::Idle;
        }
        match state.spill.read_batch(self.shared.batch_size) {
            Ok(batch) => Next::Batch(Batch::Spill(batch)),
            Err(e) => {
                tracing::error!(path = %state.spill.path().display(), error = %e, "cannot read the log spill file");
                Next::SpillUnreadable
            }
        }
    }

    /// Writes the entries, retrying while storage is unavailable. A batch
    /// the store rejects as invalid (`Corrupt`, `Conflict`: retrying cannot
    /// help) is written again entry by entry, so that only the entries the
    /// store rejects on their own are dropped, not their neighbours.
    /// Returns how many entries from the front are done (written or
    /// dropped): all of them, or fewer when the shutdown deadline came first.
    async fn deliver(&mut self, entries: &[LogEntry]) -> usize {
        if entries.is_empty() {
            return 0;
        }
        match self.write_retrying(entries).await {
            None => 0,
            Some(Ok(())) => entries.len(),
            Some(Err(e)) if entries.len() == 1 => {
                self.reject(&e, 1);
                1
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, entries = entries.len(), "log batch rejected by the store; writing its entries one by one");
                for (i, entry) in entries.iter().enumerate() {
                    match self.write_retrying(std::slice::from_ref(entry)).await {
                        None => return i,
                        Some(Ok(())) => {}
                        Some(Err(e)) => self.reject(&e, 1),
                    }
                }
                entries.len()
            }
        }
    }

    fn reject(&self, error: &StoreError, n: usize) {
        tracing::error!(%error, entries = n, "log entry rejected by the store as invalid; dropping it");
        Shared::count(&self.shared.dropped_total, n);
    }

    /// One batch, retried with backoff while storage is unavailable. `None`
    /// when the shutdown deadline came first; `Some(Err)` only for errors
    /// that retrying cannot fix.
    async fn write_retrying(&mut self, entries: &[LogEntry]) -> Option<Result<(), StoreError>> {
        let mut delay = self.config.retry_initial;
        loop {
            match self.attempt(entries).await? {
                Ok(()) => {
                    Shared::count(&self.shared.written_total, entries.len());
                    return Some(Ok(()));
                }
                Err(StoreError::Unavailable(e)) => {
                    tracing::warn!(error = %e, entries = entries.len(), retry_in = ?delay, "log batch not written; retrying");
                }
                Err(e) => return Some(Err(e)),
            }
            Shared::count(&self.shared.retries_total, 1);
            if !self.pause(delay).await {
                return None;
            }
            delay = (delay * 2).min(self.config.retry_max.max(self.config.retry_initial));
        }
    }

    /// One `write_logs`; `None` when the shutdown deadline cut it short.
    async fn attempt(&mut self, entries: &[LogEntry]) -> Option<Result<(), StoreError>> {
        let store = self.store.clone();
        let mut write = store.write_logs(entries);
        if self.deadline.is_none() {
            tokio::select! {
                result = &mut write => return Some(result),
                at = &mut self.shutdown => self.deadline = Some(at.unwrap_or_else(|_| Instant::now())),
            }
        }
        timeout_at(self.deadline?, write).await.ok()
    }

    /// Sleeps `delay` unless that would overrun the shutdown deadline (false).
    async fn pause(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        if self.deadline.is_none() {
            tokio::select! {
                () = sleep_until(until) => return true,
                at = &mut self.shutdown => self.deadline = Some(at.unwrap_or_else(|_| Instant::now())),
            }
        }
        match self.deadline {
            Some(deadline) if until < deadline => {
                sleep_until(until).await;
                true
            }
            _ => false,
        }
    }

    fn commit(&self, batch: Batch) {
        match batch {
            Batch::Memory(_) => self.shared.in_flight.store(0, Ordering::Relaxed),
            Batch::Spill(batch) => {
                if let Err(e) = self.shared.lock().spill.commit(&batch) {
                    tracing::error!(error = %e, "cannot record progress in the log spill file; a restart may write some entries twice");
                }
            }
        }
    }

    /// Stops the pipeline: what is still in memory goes to the front of the
    /// spill file, and later submits go to its end, for the next start.
    fn save(&self, in_flight: Option<Batch>) {
        let mut state = self.shared.lock();
        state.closed = true;
        let mut older = match in_flight {
            Some(Batch::Memory(entries)) => entries,
            // A spill batch is still in the file: the cursor did not move.
            Some(Batch::Spill(_)) | None => Vec::new(),
        };
        older.extend(state.queue.drain(..));
        self.shared.in_flight.store(0, Ordering::Relaxed);
        if !older.is_empty() {
            match state.spill.prepend(&older) {
                Ok(()) => Shared::count(&self.shared.spilled_total, older.len()),
                Err(e) => {
                    Shared::count(&self.shared.dropped_total, older.len());
                    tracing::error!(error = %e, entries = older.len(), "cannot save log entries to the spill file; they are lost");
                }
            }
        }
        if state.spill.pending() > 0 {
            tracing::warn!(
                entries = state.spill.pending(),
                path = %state.spill.path().display(),
                "log entries left in the spill file for the next start"
            );
        }
    }
}
