//! The one wasmtime [`Engine`] and how a module runs in it: pooling
//! allocator, epoch deadlines from a ticker thread, a memory limiter that
//! remembers its denials, and WASI p1 with in-memory pipes only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, ResourceLimiter, Store, Trap, UpdateDeadline,
};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

/// How often the epoch advances while something runs: the deadline
/// granularity, and how often a long execution yields to tokio.
const TICK: Duration = Duration::from_millis(1);
/// Table elements one instance may grow to.
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// After the deadline, how long a guest blocked in a host call (e.g. a sleep)
/// is given before its future is dropped.
const HOST_CALL_GRACE: Duration = Duration::from_millis(50);

/// The host state of one execution.
pub(crate) struct Ctx {
    wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
}

/// Enforces the memory limit and records that it denied something, because a
/// denied `memory.grow` surfaces as an ordinary guest abort.
struct MemoryLimiter {
    limit: usize,
    denied: bool,
    peak: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.denied = true;
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// How a run ended, before it is turned into a result or an error.
#[derive(Debug)]
pub(crate) enum Exit {
    /// `_start` returned (or `proc_exit(0)`).
    Success,
    /// `proc_exit(code)` with a non-zero code.
    Status(i32),
    /// A trap or a host error: its cause, and the whole text with the wasm backtrace.
    Trap { cause: String, full: String },
    /// No free instance slot before the deadline.
    NoSlot,
}

/// Everything one run produced.
#[derive(Debug)]
pub(crate) struct RunReport {
    pub exit: Exit,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The stdout bound was reached (the result is too large).
    pub stdout_full: bool,
    pub stderr_full: bool,
    pub timed_out: bool,
    pub memory_denied: bool,
    pub peak_memory: usize,
    pub instantiate: Duration,
}

/// Advances the engine's epoch every [`TICK`] while executions are active, and
/// sleeps otherwise (an idle server costs no wake-ups).
struct Ticker {
    active: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine) -> std::io::Result<Self> {
        let active = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (active.clone(), stop.clone());
        let thread = std::thread::Builder::new().name("wasm-epoch".into()).spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if a.load(Ordering::Acquire) == 0 {
                    std::thread::park_timeout(Duration::from_millis(250));
                } else {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            }
        })?;
        Ok(Self { active, stop, thread: Some(thread) })
    }

    fn enter(&self) -> TickGuard<'_> {
        if self.active.fetch_add(1, Ordering::AcqRel) == 0
            && let Some(t) = &self.thread
        {
            t.thread().unpark();
        }
        TickGuard(&self.active)
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

struct TickGuard<'a>(&'a AtomicUsize);

impl Drop for TickGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Output bounds of one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub stdout_bytes: usize,
    pub stderr_bytes: usize,
}

/// The engine, the WASI linker, the ticker and the instance slots.
pub(crate) struct Executor {
    engine: Engine,
    linker: Linker<Ctx>,
    ticker: Ticker,
    slots: Arc<Semaphore>,
    memory_limit: usize,
}

/// The engine's configuration. The compiler process builds its engine from
/// the same function, so that the native code it writes loads here.
pub(crate) fn engine_config(memory_limit: usize, max_instances: u32) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_core_instances(max_instances)
        .total_memories(max_instances)
        .total_tables(max_instances)
        .total_stacks(max_instances)
        .max_memory_size(memory_limit)
        // Keep the first pages of a reused slot resident: most runs touch
        // little memory, and re-faulting it costs more than clearing it.
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(1 << 16)
        // Clear only the pages a run wrote (found with the PAGEMAP_SCAN
        // ioctl, Linux 6.7+), not the whole resident megabyte: that
        // `memset` was 15 % of the controller's CPU on rust warm execute.
        // Older kernels keep the `memset`.
        .pagemap_scan(Enabled::Auto);
    let mut config = Config::new();
    config.epoch_interruption(true).allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

impl Executor {
    pub(crate) fn new(memory_limit: usize, max_instances: u32) -> Result<Self, String> {
        let config = engine_config(memory_limit, max_instances);
        let engine = Engine::new(&config).map_err(|e| format!("wasm engine: {e:#}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |c: &mut Ctx| &mut c.wasi)
            .map_err(|e| format!("wasi linker: {e:#}"))?;
        let ticker = Ticker::start(engine.clone()).map_err(|e| format!("epoch ticker: {e}"))?;
        Ok(Self {
            engine,
            linker,
            ticker,
            slots: Arc::new(Semaphore::new(max_instances as usize)),
            memory_limit,
        })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn memory_limit(&self) -> usize {
        self.memory_limit
    }

    /// Resolves the module's imports once; a module importing anything but
    /// WASI p1, or without `_start`, is refused here (at initialize).
    pub(crate) fn pre(&self, module: &Module) -> Result<InstancePre<Ctx>, String> {
        if module.get_export("_start").is_none_or(|e| e.func().is_none()) {
            return Err("the module exports no `_start` function: a WASI command module is required".into());
        }
        self.linker.instantiate_pre(module).map_err(|e| format!("{e:#}"))
    }

    /// Runs `_start` once in a fresh store with `stdin` as its standard input.
    pub(crate) async fn run(
        &self,
        pre: &InstancePre<Ctx>,
        stdin: Vec<u8>,
        deadline: Instant,
        bounds: Bounds,
    ) -> RunReport {
        let mut report = RunReport {
            exit: Exit::NoSlot,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_full: false,
            stderr_full: false,
            timed_out: false,
            memory_denied: false,
            peak_memory: 0,
            instantiate: Duration::ZERO,
        };
        let Ok(Ok(_slot)) =
            tokio::time::timeout_at(deadline.into(), self.slots.clone().acquire_owned()).await
        else {
            return report;
        };
        let _ticking = self.ticker.enter();
        let stdout = MemoryOutputPipe::new(bounds.stdout_bytes);
        let stderr = MemoryOutputPipe::new(bounds.stderr_bytes);
        let wasi = WasiCtxBuilder::new()
            .stdin(MemoryInputPipe::new(stdin))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .arg("main")
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build_p1();
        let limiter = MemoryLimiter { limit: self.memory_limit, denied: false, peak: 0 };
        let mut store = Store::new(&self.engine, Ctx { wasi, limiter });
        store.limiter(|c| &mut c.limiter);
        let timed_out = Arc::new(AtomicBool::new(false));
        let flag = timed_out.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                flag.store(true, Ordering::Relaxed);
                Err(Trap::Interrupt.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let started = Instant::now();
        let call = async {
            let instance = pre.instantiate_async(&mut store).await;
            report.instantiate = started.elapsed();
            let start = instance.and_then(|i| i.get_typed_func::<(), ()>(&mut store, "_start"));
            match start {
                Ok(f) => f.call_async(&mut store, ()).await,
                Err(e) => Err(e),
            }
        };
        let outcome = tokio::time::timeout_at((deadline + HOST_CALL_GRACE).into(), call).await;
        report.exit = match outcome {
            Err(_) => {
                timed_out.store(true, Ordering::Relaxed);
                let cause = "deadline passed during a host call".to_owned();
                Exit::Trap { full: cause.clone(), cause }
            }
            Ok(Ok(())) => Exit::Success,
            Ok(Err(e)) => match e.downcast_ref::<I32Exit>() {
                Some(I32Exit(0)) => Exit::Success,
                Some(I32Exit(code)) => Exit::Status(*code),
                // `{e:#}`: the wasm backtrace, without the host's own (RUST_BACKTRACE).
                None => Exit::Trap { cause: e.root_cause().to_string(), full: format!("{e:#}") },
            },
        };
        let limiter = &store.data().limiter;
        report.memory_denied = limiter.denied;
        report.peak_memory = limiter.peak;
        report.timed_out = timed_out.load(Ordering::Relaxed);
        drop(store);
        report.stdout = stdout.contents().to_vec();
        report.stderr = stderr.contents().to_vec();
        report.stdout_full = report.stdout.len() >= bounds.stdout_bytes;
        report.stderr_full = report.stderr.len() >= bounds.stderr_bytes;
        report
    }
}
