//! The threads wasm executions run on, apart from the controller's async
//! threads.
//!
//! A running guest yields only at each epoch tick (1 ms), and a tokio worker
//! that always has a task to poll checks its I/O only every 61 polls. On the
//! controller's threads a few spinning guests therefore held every other
//! request back for tens of milliseconds at each of its I/O steps: a nodejs
//! execute beside four spinning wasm executions took 0.3–0.6 s, against
//! 0.5 ms idle. Here the guests share threads of their own, and the
//! controller's thread is scheduled against them by the kernel.

use std::future::Future;
use std::io;

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

pub(crate) struct Compute {
    /// `None` only while dropping.
    runtime: Option<Runtime>,
}

impl Compute {
    pub(crate) fn start(threads: usize) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("wasm")
            .enable_all()
            .build()?;
        Ok(Self { runtime: Some(runtime) })
    }

    /// Runs `task` on the compute threads. Dropping the returned future (the
    /// client went away) aborts the task at the guest's next yield. `None`
    /// if the task panicked.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        task: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let mut handle = AbortOnDrop(self.runtime.as_ref()?.spawn(task));
        (&mut handle.0).await.ok()
    }
}

impl Drop for Compute {
    /// Without waiting: a runtime dropped inside another one must not block.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
