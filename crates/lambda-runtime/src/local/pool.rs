//! Worker pools: pre-started generic workers per language, idle workers bound to
//! one (script, owner), the capacity bounds with LRU eviction, and the idle reaper.
//!
//! The state sits behind a `std::sync::Mutex` that is never held across an
//! await: every critical section is a few map operations (mini-redis `db.rs`).

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use lambda_core::{LambdaError, Language, ScriptHash};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::Notify;

use super::config::LocalRuntimeConfig;
use super::lease::Lease;
use super::worker::{Worker, WorkerCommand};

/// Workers are never shared between owners, so the owner is part of the key.
pub(crate) type Key = (ScriptHash, Arc<str>);

/// Languages served by the local pools, as indexes into per-language arrays.
pub(crate) const LANGUAGES: [Language; 2] = [Language::Nodejs, Language::Python];

pub(crate) fn lang_index(language: Language) -> Option<usize> {
    LANGUAGES.iter().position(|&l| l == language)
}

/// A worker bound to one key: it holds that key's prepared script.
pub(crate) struct Bound {
    pub worker: Arc<Worker>,
    /// When its last request finished (for the reaper and LRU eviction).
    pub last_used: Instant,
}

#[derive(Default)]
pub(crate) struct LangState {
    pub generic: Vec<Arc<Worker>>,
    pub spawning: usize,
    /// Workers taken for a key and still loading its script.
    pub preparing: usize,
    /// `Some(reason)` while the interpreter cannot be spawned.
    pub unavailable: Option<String>,
}

#[derive(Default)]
pub(crate) struct State {
    pub langs: [LangState; 2],
    /// Workers holding each key's script, idle or busy.
    pub bound: HashMap<Key, Vec<Bound>>,
    /// Workers loading each key's script.
    preparing: HashMap<Key, usize>,
    /// Every live or reserved worker, generic ones included.
    pub total: usize,
    /// Process groups of live workers, so that shutdown reaches busy ones too.
    pgids: HashMap<u64, Pid>,
    pub closed: bool,
}

pub(crate) struct Pool {
    state: Mutex<State>,
    /// A worker became idle or capacity was released.
    freed: Notify,
    /// A generic pool dropped below its target.
    pub refill: Notify,
    pub commands: [WorkerCommand; 2],
    pub config: LocalRuntimeConfig,
    next_id: AtomicU64,
    pub cold_starts: [AtomicU64; 2],
    pub warm_starts: [AtomicU64; 2],
}

/// What `try_take` found for a key.
enum Take {
    /// A worker holding the key's script (possibly already busy: the request queues behind).
    Warm(Arc<Worker>),
    Generic(Arc<Worker>),
    /// A slot was reserved for a worker to spawn; `evicted` gave up its slot.
    Reserved(Option<Arc<Worker>>),
    Wait,
}

impl Pool {
    pub(crate) fn new(config: LocalRuntimeConfig, commands: [WorkerCommand; 2]) -> Self {
        Self {
            state: Mutex::new(State::default()),
            freed: Notify::new(),
            refill: Notify::new(),
            commands,
            config,
            next_id: AtomicU64::new(1),
            cold_starts: Default::default(),
            warm_starts: Default::default(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere never leaves the maps half-updated; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a worker for `key`: an idle one (warm), a busy one with room in
    /// its pipeline (warm, queued), a generic one, or a slot to spawn one into
    /// (cold). Waits, without a deadline of its own, while the key or the
    /// whole pool is at its bound.
    pub(crate) async fn acquire(self: &Arc<Self>, key: &Key, lang: usize) -> Result<Lease, LambdaError> {
        loop {
            let mut freed = pin!(self.freed.notified());
            freed.as_mut().enable();
            let take = self.try_take(key, lang)?;
            let (worker, warm) = match take {
                Take::Warm(w) => (Some(w), true),
                Take::Generic(w) => (Some(w), false),
                Take::Reserved(evicted) => {
                    drop(evicted);
                    (None, false)
                }
                Take::Wait => {
                    freed.await;
                    continue;
                }
            };
            return Ok(Lease::new(self.clone(), key.clone(), lang, worker, warm));
        }
    }

    /// Counts an invocation's start for `worker_counts`.
    pub(crate) fn count_start(&self, lang: usize, warm: bool) {
        let starts = if warm { &self.warm_starts } else { &self.cold_starts };
        starts[lang].fetch_add(1, Ordering::Relaxed);
    }

    /// The policy: an idle worker of the key; else a new worker from the
    /// generic pool while the key is under its bound; else a place in the
    /// shortest pipeline; else a freshly spawned worker (never paid while a
    /// warm one can take the request soon); else wait.
    fn try_take(&self, key: &Key, lang: usize) -> Result<Take, LambdaError> {
        let mut st = self.lock();
        if st.closed {
            return Err(LambdaError::unavailable("runtime is shutting down"));
        }
        let depth = self.config.pipeline_depth.max(1);
        let (idle, least, alive) = match st.bound.get(key) {
            Some(list) => {
                let live = || list.iter().filter(|b| !b.worker.is_dead());
                let idle = live().find(|b| b.worker.in_flight() == 0).map(|b| b.worker.clone());
                let least = live().min_by_key(|b| b.worker.in_flight()).map(|b| b.worker.clone());
                (idle, least, live().count())
            }
            None => (None, None, 0),
        };
        if let Some(w) = idle {
            w.in_flight.fetch_add(1, Ordering::AcqRel);
            return Ok(Take::Warm(w));
        }
        let preparing = st.preparing.get(key).copied().unwrap_or(0);
        if alive == 0 && preparing > 0 {
            return Ok(Take::Wait); // a worker is loading this script right now: it comes first
        }
        let room = alive + preparing < self.config.max_workers_per_script;
        if room && let Some(w) = st.langs[lang].generic.pop() {
            self.refill.notify_one();
            st.start_preparing(key, lang);
            w.in_flight.fetch_add(1, Ordering::AcqRel);
            return Ok(Take::Generic(w));
        }
        if let Some(w) = least.filter(|w| w.in_flight() < depth) {
            w.in_flight.fetch_add(1, Ordering::AcqRel);
            return Ok(Take::Warm(w));
        }
        if !room {
            return Ok(Take::Wait);
        }
        let take = if st.total < self.config.max_workers {
            st.total += 1;
            Take::Reserved(None)
        } else {
            match st.evict_lru() {
                Some(w) => Take::Reserved(Some(w)),
                None => return Ok(Take::Wait),
            }
        };
        st.start_preparing(key, lang);
        Ok(take)
    }

    /// A generic worker for `key`, if one is ready and the key has no worker
    /// yet (none loading either): for loading a script ahead of its first request.
    pub(crate) fn take_generic(self: &Arc<Self>, key: &Key, lang: usize) -> Option<Lease> {
        let mut st = self.lock();
        if st.closed || st.bound.contains_key(key) || st.preparing.contains_key(key) {
            return None;
        }
        let w = st.langs[lang].generic.pop()?;
        self.refill.notify_one();
        st.start_preparing(key, lang);
        w.in_flight.fetch_add(1, Ordering::AcqRel);
        drop(st);
        Some(Lease::new(self.clone(), key.clone(), lang, Some(w), false))
    }

    /// True when some worker holds `key`'s script (so it is known to compile).
    pub(crate) fn is_bound(&self, key: &Key) -> bool {
        self.lock().bound.get(key).is_some_and(|list| list.iter().any(|b| !b.worker.is_dead()))
    }

    pub(crate) async fn spawn(&self, lang: usize) -> Result<Worker, LambdaError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cmd = &self.commands[lang];
        let spawned = tokio::time::timeout(self.config.prepare_timeout, Worker::spawn(cmd, id))
            .await
            .map_err(|_| std::io::Error::other("worker host did not start in time"))
            .and_then(|r| r);
        let mut st = self.lock();
        let worker = match spawned {
            Ok(worker) => {
                st.langs[lang].unavailable = None;
                worker
            }
            Err(e) => {
                let reason = format!("runtime {} is not available: {e}", cmd.language);
                st.langs[lang].unavailable = Some(reason.clone());
                return Err(LambdaError::unavailable(reason));
            }
        };
        if let Some(pgid) = worker.pgid() {
            st.pgids.insert(id, pgid);
        }
        Ok(worker)
    }

    /// Fills the generic pool of `lang` up to its target. Returns the spawn error, if any.
    pub(crate) async fn refill_generic(&self, lang: usize) -> Result<(), LambdaError> {
        loop {
            {
                let mut st = self.lock();
                let ls = &st.langs[lang];
                if st.closed
                    || ls.generic.len() + ls.spawning >= self.config.generic_per_language
                    || st.total >= self.config.max_workers
                {
                    return Ok(());
                }
                st.total += 1;
                st.langs[lang].spawning += 1;
            }
            let spawned = self.spawn(lang).await;
            let mut st = self.lock();
            st.langs[lang].spawning -= 1;
            match spawned {
                Ok(w) if !st.closed => {
                    st.langs[lang].generic.push(Arc::new(w));
                    drop(st);
                    self.freed.notify_waiters();
                }
                Ok(w) => {
                    st.total -= 1;
                    st.forget(&w);
                    return Ok(());
                }
                Err(e) => {
                    st.total -= 1;
                    return Err(e);
                }
            }
        }
    }

    /// Checks once that the interpreter of `lang` starts, for a pool without generic workers.
    pub(crate) async fn verify(&self, lang: usize) -> Result<(), LambdaError> {
        let worker = self.spawn(lang).await?;
        self.lock().forget(&worker);
        Ok(())
    }

    /// Kills idle bound workers unused since `cutoff`.
    pub(crate) fn reap_idle(&self, cutoff: Instant) {
        let mut reaped = Vec::new();
        {
            let mut st = self.lock();
            let st = &mut *st;
            st.bound.retain(|_, list| {
                list.retain(|b| {
                    let stale = b.worker.in_flight() == 0 && b.last_used <= cutoff;
                    if stale {
                        reaped.push(b.worker.clone());
                    }
                    !stale
                });
                !list.is_empty()
            });
            for w in &reaped {
                st.total = st.total.saturating_sub(1);
                st.forget(w);
            }
        }
        if !reaped.is_empty() {
            for w in &reaped {
                w.kill();
            }
            drop(reaped);
            self.freed.notify_waiters();
            self.refill.notify_one();
        }
    }

    /// Closes the pool and kills every worker, busy ones included.
    pub(crate) fn close(&self) {
        let (generic, bound) = {
            let mut st = self.lock();
            st.closed = true;
            for pgid in st.pgids.values() {
                let _ = killpg(*pgid, Signal::SIGKILL);
            }
            let generic: Vec<Arc<Worker>> =
                st.langs.iter_mut().flat_map(|l| std::mem::take(&mut l.generic)).collect();
            (generic, std::mem::take(&mut st.bound))
        };
        drop((generic, bound));
        self.freed.notify_waiters();
    }

    /// Ends a lease. A worker that loaded its key's script (`warm` false)
    /// joins the key's workers when `keep`; a warm one just has one request
    /// less in flight. A worker not kept, or found dead, is killed and its
    /// slot freed.
    pub(crate) fn give_back(
        &self,
        key: &Key,
        lang: usize,
        worker: Option<Arc<Worker>>,
        warm: bool,
        keep: bool,
    ) {
        let mut st = self.lock();
        if !warm {
            st.stop_preparing(key, lang);
        }
        let mut freed_slot = false;
        match worker {
            Some(w) => {
                let left = w.in_flight.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
                let alive = keep && !w.is_dead() && !st.closed;
                match (alive, warm) {
                    (true, false) => {
                        st.bound
                            .entry(key.clone())
                            .or_default()
                            .push(Bound { worker: w, last_used: Instant::now() });
                    }
                    (true, true) => {
                        if left == 0
                            && let Some(b) =
                                st.bound.get_mut(key).and_then(|l| l.iter_mut().find(|b| b.worker.id == w.id))
                        {
                            b.last_used = Instant::now();
                        }
                    }
                    (false, _) => {
                        w.kill();
                        let removed = !warm || st.unbind(key, w.id);
                        if removed {
                            st.total = st.total.saturating_sub(1);
                            st.forget(&w);
                            freed_slot = true;
                        }
                    }
                }
            }
            None => {
                st.total = st.total.saturating_sub(1);
                freed_slot = true;
            }
        }
        drop(st);
        if freed_slot {
            self.refill.notify_one();
        }
        self.freed.notify_waiters();
    }
}

impl State {
    fn start_preparing(&mut self, key: &Key, lang: usize) {
        *self.preparing.entry(key.clone()).or_default() += 1;
        self.langs[lang].preparing += 1;
    }

    fn stop_preparing(&mut self, key: &Key, lang: usize) {
        self.langs[lang].preparing = self.langs[lang].preparing.saturating_sub(1);
        if let Some(n) = self.preparing.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.preparing.remove(key);
            }
        }
    }

    /// Removes the least recently used idle bound worker, or else a generic one
    /// (of the other language: the caller's own would have been taken); its slot
    /// passes to the caller.
    fn evict_lru(&mut self) -> Option<Arc<Worker>> {
        let lru = self
            .bound
            .iter()
            .flat_map(|(k, list)| list.iter().map(move |b| (k, b)))
            .filter(|(_, b)| b.worker.in_flight() == 0)
            .min_by_key(|(_, b)| b.last_used)
            .map(|(k, b)| (k.clone(), b.worker.id));
        let Some((key, id)) = lru else {
            let worker = self.langs.iter_mut().find_map(|l| l.generic.pop())?;
            self.forget(&worker);
            return Some(worker);
        };
        let list = self.bound.get_mut(&key)?;
        let at = list.iter().position(|b| b.worker.id == id)?;
        let worker = list.remove(at).worker;
        if list.is_empty() {
            self.bound.remove(&key);
        }
        self.forget(&worker);
        worker.kill();
        Some(worker)
    }

    /// Takes worker `id` out of `key`'s workers; false when it was not there.
    fn unbind(&mut self, key: &Key, id: u64) -> bool {
        let Some(list) = self.bound.get_mut(key) else { return false };
        let Some(at) = list.iter().position(|b| b.worker.id == id) else { return false };
        list.remove(at);
        if list.is_empty() {
            self.bound.remove(key);
        }
        true
    }

    pub(crate) fn forget(&mut self, worker: &Worker) {
        self.pgids.remove(&worker.id);
    }
}
