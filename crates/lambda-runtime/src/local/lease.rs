//! A lease on one worker for one request of one key. A worker that was
//! loading the key's script (cold) joins the key's workers on `release`; a
//! warm one just has one request less in flight. A cold lease dropped
//! without `release` (failed load, cancelled request) kills its worker.

use std::sync::Arc;

use lambda_core::LambdaError;

use super::pool::{Key, Pool};
use super::worker::Worker;

pub(crate) struct Lease {
    pool: Arc<Pool>,
    key: Key,
    lang: usize,
    worker: Option<Arc<Worker>>,
    warm: bool,
    done: bool,
}

impl Lease {
    pub(crate) fn new(
        pool: Arc<Pool>,
        key: Key,
        lang: usize,
        worker: Option<Arc<Worker>>,
        warm: bool,
    ) -> Self {
        Self { pool, key, lang, worker, warm, done: false }
    }

    /// True when the worker already holds the prepared script.
    pub(crate) fn is_warm(&self) -> bool {
        self.warm
    }

    /// The worker, spawning one into the reserved slot first if needed.
    pub(crate) async fn worker(&mut self) -> Result<Arc<Worker>, LambdaError> {
        if self.worker.is_none() {
            let worker = self.pool.spawn(self.lang).await?;
            worker.in_flight.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            self.worker = Some(Arc::new(worker));
        }
        self.worker.clone().ok_or_else(|| LambdaError::internal("worker missing from lease"))
    }

    /// Keeps the worker (if it is still alive).
    pub(crate) fn release(mut self) {
        self.finish(true);
    }

    /// Kills the worker: its state is unknown (a sandbox limit was hit).
    pub(crate) fn discard(mut self) {
        self.finish(false);
    }

    fn finish(&mut self, keep: bool) {
        if !self.done {
            self.done = true;
            self.pool.give_back(&self.key, self.lang, self.worker.take(), self.warm, keep);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // A warm worker whose request was abandoned keeps serving: its own
        // watchdog kills it if that request overruns its deadline.
        let keep = self.warm;
        self.finish(keep);
    }
}
