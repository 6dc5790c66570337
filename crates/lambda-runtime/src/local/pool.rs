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

struct Idle {
    worker: Worker,
    since: Instant,
}

#[derive(Default)]
pub(crate) struct LangState {
    pub generic: Vec<Worker>,
    pub spawning: usize,
    pub idle: usize,
    pub busy: usize,
    /// `Some(reason)` while the interpreter cannot be spawned.
    pub unavailable: Option<String>,
}

#[derive(Default)]
pub(crate) struct State {
    pub langs: [LangState; 2],
    /// Idle workers per key, oldest first.
    idle: HashMap<Key, Vec<Idle>>,
    /// Workers bound to a key: idle, busy or being prepared.
    bound: HashMap<Key, usize>,
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
    Warm(Worker),
    Generic(Worker),
    /// A slot was reserved for a worker to spawn; `evicted` gave up its slot.
    Reserved(Option<Worker>),
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

    /// Takes a worker for `key`: an idle one (warm), a generic one, or a slot to
    /// spawn one into (cold). Waits, without a deadline of its own, while the
    /// key or the whole pool is at its bound.
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

    fn try_take(&self, key: &Key, lang: usize) -> Result<Take, LambdaError> {
        let mut st = self.lock();
        if st.closed {
            return Err(LambdaError::unavailable("runtime is shutting down"));
        }
        if let Some(list) = st.idle.get_mut(key)
            && let Some(idle) = list.pop()
        {
            if list.is_empty() {
                st.idle.remove(key);
            }
            st.langs[lang].idle = st.langs[lang].idle.saturating_sub(1);
            st.langs[lang].busy += 1;
            return Ok(Take::Warm(idle.worker));
        }
        if st.bound.get(key).copied().unwrap_or(0) >= self.config.max_workers_per_script {
            return Ok(Take::Wait);
        }
        let take = if let Some(w) = st.langs[lang].generic.pop() {
            self.refill.notify_one();
            Take::Generic(w)
        } else if st.total < self.config.max_workers {
            st.total += 1;
            Take::Reserved(None)
        } else {
            match st.evict_lru() {
                Some(w) => Take::Reserved(Some(w)),
                None => return Ok(Take::Wait),
            }
        };
        *st.bound.entry(key.clone()).or_default() += 1;
        st.langs[lang].busy += 1;
        Ok(take)
    }

    /// True when some worker is bound to `key` (so its script is known to compile).
    pub(crate) fn is_bound(&self, key: &Key) -> bool {
        self.lock().bound.contains_key(key)
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
                    st.langs[lang].generic.push(w);
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
            st.idle.retain(|key, list| {
                let stale = list.iter().take_while(|i| i.since <= cutoff).count();
                reaped.extend(list.drain(..stale).map(|i| (key.clone(), i.worker)));
                !list.is_empty()
            });
            for (key, w) in &reaped {
                st.unbind(key);
                st.total = st.total.saturating_sub(1);
                if let Some(lang) = lang_index(w.language) {
                    st.langs[lang].idle = st.langs[lang].idle.saturating_sub(1);
                }
                st.forget(w);
            }
        }
        if !reaped.is_empty() {
            drop(reaped);
            self.freed.notify_waiters();
            self.refill.notify_one();
        }
    }

    /// Closes the pool and kills every worker, busy ones included.
    pub(crate) fn close(&self) {
        let (generic, idle) = {
            let mut st = self.lock();
            st.closed = true;
            for pgid in st.pgids.values() {
                let _ = killpg(*pgid, Signal::SIGKILL);
            }
            let generic: Vec<Worker> =
                st.langs.iter_mut().flat_map(|l| std::mem::take(&mut l.generic)).collect();
            (generic, std::mem::take(&mut st.idle))
        };
        drop((generic, idle));
        self.freed.notify_waiters();
    }

    /// Ends a lease: the worker goes idle when `keep`, else it is killed and its slot freed.
    pub(crate) fn give_back(&self, key: &Key, lang: usize, worker: Option<Worker>, keep: bool) {
        let mut st = self.lock();
        st.langs[lang].busy = st.langs[lang].busy.saturating_sub(1);
        match worker {
            Some(worker) if keep && !st.closed => {
                st.langs[lang].idle += 1;
                st.idle.entry(key.clone()).or_default().push(Idle { worker, since: Instant::now() });
                drop(st);
            }
            discarded => {
                st.unbind(key);
                st.total = st.total.saturating_sub(1);
                if let Some(w) = &discarded {
                    st.forget(w);
                }
                drop(st);
                drop(discarded);
                self.refill.notify_one();
            }
        }
        self.freed.notify_waiters();
    }
}

impl State {
    /// Removes the least recently used idle bound worker, or else a generic one
    /// (of the other language: the caller's own would have been taken); its slot
    /// passes to the caller.
    fn evict_lru(&mut self) -> Option<Worker> {
        let lru = self.idle.iter().filter_map(|(k, list)| list.first().map(|i| (i.since, k))).min();
        let Some(key) = lru.map(|(_, k)| k.clone()) else {
            let worker = self.langs.iter_mut().find_map(|l| l.generic.pop())?;
            self.forget(&worker);
            return Some(worker);
        };
        let list = self.idle.get_mut(&key)?;
        let worker = list.remove(0).worker;
        if list.is_empty() {
            self.idle.remove(&key);
        }
        self.unbind(&key);
        if let Some(lang) = lang_index(worker.language) {
            self.langs[lang].idle = self.langs[lang].idle.saturating_sub(1);
        }
        self.forget(&worker);
        Some(worker)
    }

    fn unbind(&mut self, key: &Key) {
        if let Some(n) = self.bound.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.bound.remove(key);
            }
        }
    }

    fn forget(&mut self, worker: &Worker) {
        self.pgids.remove(&worker.id);
    }
}
