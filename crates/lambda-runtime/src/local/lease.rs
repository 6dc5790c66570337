//! A lease on one worker for one key: returned to the idle pool on success,
//! killed (and its slot freed) when dropped otherwise.

use std::sync::Arc;

use lambda_core::LambdaError;

use super::pool::{Key, Pool};
use super::worker::Worker;

/// A worker taken for one key. `release` returns it to the key's idle pool;
/// dropping the lease instead (fault, timeout, cancelled request) kills it.
pub(crate) struct Lease {
    pool: Arc<Pool>,
    key: Key,
    lang: usize,
    worker: Option<Worker>,
    warm: bool,
    released: bool,
}

impl Lease {
    pub(crate) fn new(pool: Arc<Pool>, key: Key, lang: usize, worker: Option<Worker>, warm: bool) -> Self {
        Self { pool, key, lang, worker, warm, released: false }
    }

    /// True when the worker already holds the prepared script.
    pub(crate) fn is_warm(&self) -> bool {
        self.warm
    }

    /// The worker, spawning one into the reserved slot first if needed.
    pub(crate) async fn worker(&mut self) -> Result<&mut Worker, LambdaError> {
        if self.worker.is_none() {
            self.worker = Some(self.pool.spawn(self.lang).await?);
        }
        self.worker.as_mut().ok_or_else(|| LambdaError::internal("worker missing from lease"))
    }

    /// The worker, if one was taken or spawned.
    pub(crate) fn worker_mut(&mut self) -> Option<&mut Worker> {
        self.worker.as_mut()
    }

    pub(crate) fn release(mut self) {
        self.released = true;
        self.pool.give_back(&self.key, self.lang, self.worker.take(), true);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.released {
            self.pool.give_back(&self.key, self.lang, self.worker.take(), false);
        }
    }
}
