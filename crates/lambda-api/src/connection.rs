//! One HTTP/1.1 connection: hyper's `http1` connection while requests come,
//! and no buffers at all while the connection sits idle.
//!
//! hyper keeps a read and a write buffer (8 KB each) for as long as a
//! connection lives, so 10,000 idle keep-alive connections would hold
//! ≈100 MB. Here a connection that has waited [`ServeConfig::park_after`] for
//! its next request is *parked*, the way nginx frees an idle keep-alive
//! connection's buffers:
//!
//! 1. hyper's connection is ended gracefully while it is idle, which hands
//!    back the socket and any bytes a pipelining client already sent;
//! 2. the task waits for the socket to become readable, holding no buffer;
//! 3. the next request is served by a new hyper connection on the same
//!    socket, which reads the handed-back bytes first.
//!
//! Knowing when hyper is idle uses two signals hyper gives without reaching
//! into it. hyper arms its header-read timer whenever it starts waiting for a
//! request head, through the [`Timer`] it is given; a wait that is not the
//! connection's first follows a finished response, so hyper's keep-alive
//! state is idle. And hyper flushes the socket only once its write buffer is
//! empty, so a flush after the last write means the response is out.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use hyper::body::{Buf, Bytes, Incoming};
use hyper::rt::{Read, ReadBufCursor, Sleep, Timer, Write};
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// How connections are held.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// How long a connection may wait for a request head: a new connection
    /// for its first byte, a keep-alive connection for its next request, and
    /// any request for the rest of its headers. Then it is closed.
    pub idle_timeout: Duration,
    /// How long a keep-alive connection waits for its next request before its
    /// buffers are released. Short: a client under load sends its next request
    /// sooner, and one that pauses longer costs a new hyper connection (a few
    /// allocations) when it comes back.
    pub park_after: Duration,
    /// Open connections: serving a request or waiting with buffers (`active`),
    /// and idle without buffers (`parked`).
    pub metrics: ConnectionMetrics,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30),
            park_after: Duration::from_millis(100),
            metrics: ConnectionMetrics::default(),
        }
    }
}

/// `lambda_http_connections` by state, and `lambda_http_connection_parks`.
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    pub active: Gauge,
    pub parked: Gauge,
    pub parks: Counter,
}

/// Counts one connection in a gauge for as long as it lives.
struct Counted<'a>(&'a Gauge);

impl<'a> Counted<'a> {
    fn new(gauge: &'a Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves `stream` until the client closes it, it idles out, or `shutdown`
/// changes (then the request in progress, if any, finishes first).
pub(crate) async fn serve_connection<S>(
    mut stream: TcpStream,
    service: S,
    config: Arc<ServeConfig>,
    mut shutdown: watch::Receiver<()>,
) where
    S: HttpService<Incoming> + Clone + Unpin,
    S::Future: Unpin,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let idle = Arc::new(Idle::default());
    let mut ahead = Bytes::new();
    // A new connection waits for its first byte without buffers, like a parked one.
    let mut wait = config.idle_timeout;
    loop {
        if ahead.is_empty() {
            let _parked = Counted::new(&config.metrics.parked);
            let readable = tokio::select! {
                readable = stream.readable() => readable.is_ok(),
                () = tokio::time::sleep(wait) => false,
                _ = shutdown.changed() => false,
            };
            if !readable {
                return;
            }
        }
        let _active = Counted::new(&config.metrics.active);
        match serve_until_idle(stream, ahead, service.clone(), &idle, &config, &mut shutdown).await {
            Some((returned, rest)) => (stream, ahead) = (returned, rest),
            None => return,
        }
        wait = config.idle_timeout.saturating_sub(config.park_after);
    }
}

/// Runs one hyper connection on `stream`. Returns the socket and the bytes
/// read ahead when the connection was parked, `None` when it ended.
async fn serve_until_idle<S>(
    stream: TcpStream,
    ahead: Bytes,
    service: S,
    idle: &Arc<Idle>,
    config: &ServeConfig,
    shutdown: &mut watch::Receiver<()>,
) -> Option<(TcpStream, Bytes)>
where
    S: HttpService<Incoming> + Unpin,
    S::Future: Unpin,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    idle.park_due.store(false, Relaxed);
    idle.unflushed.store(false, Relaxed);
    let io = Parkable { io: TokioIo::new(stream), ahead, idle: idle.clone() };
    let timer =
        HeadTimer { idle: idle.clone(), park_after: config.park_after, head_waits: AtomicU32::new(0) };
    let mut connection = http1::Builder::new()
        .timer(timer)
        .header_read_timeout(config.idle_timeout)
        .serve_connection(io, service);
    let mut stopping = std::pin::pin!(shutdown.changed());
    let (mut parking, mut stopped) = (false, false);
    let ended = std::future::poll_fn(|cx| {
        if !stopped && stopping.as_mut().poll(cx).is_ready() {
            stopped = true;
            Pin::new(&mut connection).graceful_shutdown();
        }
        loop {
            if let Poll::Ready(ended) = connection.poll_without_shutdown(cx) {
                return Poll::Ready(ended);
            }
            if parking || stopped || !idle.parkable() {
                return Poll::Pending;
            }
            // Idle, so this closes hyper's connection at once, without a
            // `Connection: close` on any response.
            parking = true;
            Pin::new(&mut connection).graceful_shutdown();
        }
    })
    .await;
    match ended {
        Ok(()) if parking && !stopped => {
            config.metrics.parks.inc();
            let parts = connection.into_parts();
            // What hyper read and did not parse, then anything it had not read
            // yet; copied, as the handed-back `Bytes` keeps hyper's whole read
            // buffer alive.
            let ahead = [&parts.read_buf[..], &parts.io.ahead[..]].concat();
            Some((parts.io.io.into_inner(), Bytes::from(ahead)))
        }
        Ok(()) => None,
        Err(e) => {
            tracing::trace!(error = %e, "connection ended with an error");
            None
        }
    }
}

/// What a connection's task, its socket wrapper and its timer share.
#[derive(Default)]
struct Idle {
    /// hyper has waited `park_after` for the next request head.
    park_due: AtomicBool,
    /// hyper wrote to the socket and has not flushed since.
    unflushed: AtomicBool,
}

impl Idle {
    fn parkable(&self) -> bool {
        self.park_due.load(Relaxed) && !self.unflushed.load(Relaxed)
    }
}

/// The socket as hyper sees it: bytes handed back from the previous hyper
/// connection come first, and writes and flushes are tracked.
struct Parkable {
    io: TokioIo<TcpStream>,
    ahead: Bytes,
    idle: Arc<Idle>,
}

impl Read for Parkable {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.ahead.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = this.ahead.len().min(buf.remaining());
        buf.put_slice(&this.ahead[..n]);
        this.ahead.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl Write for Parkable {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.idle.unflushed.store(true, Relaxed);
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.idle.unflushed.store(true, Relaxed);
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        this.idle.unflushed.store(false, Relaxed);
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// hyper's timer, used by its server only for the header-read timeout.
struct HeadTimer {
    idle: Arc<Idle>,
    park_after: Duration,
    /// Head waits begun on this hyper connection.
    head_waits: AtomicU32,
}

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let deadline = tokio::time::Instant::from_std(deadline);
        let park_at = tokio::time::Instant::now() + self.park_after;
        // The first wait precedes the first request: hyper's keep-alive state
        // is not idle yet, and ending the connection would lose the request.
        let follows_a_request = self.head_waits.fetch_add(1, Relaxed) > 0;
        let armed = follows_a_request && park_at < deadline;
        Box::pin(HeadWait {
            sleep: tokio::time::sleep_until(if armed { park_at } else { deadline }),
            deadline,
            armed: ParkArm { idle: self.idle.clone(), armed },
        })
    }
}

pin_project_lite::pin_project! {
    /// hyper's header-read timeout. While armed it first ends at the park
    /// time, marks the connection due to park, and then runs on to the
    /// real deadline.
    struct HeadWait {
        #[pin]
        sleep: tokio::time::Sleep,
        deadline: tokio::time::Instant,
        armed: ParkArm,
    }
}

struct ParkArm {
    idle: Arc<Idle>,
    armed: bool,
}

impl Drop for ParkArm {
    /// hyper drops the wait once a head arrives: no longer idle.
    fn drop(&mut self) {
        self.idle.park_due.store(false, Relaxed);
    }
}

impl Future for HeadWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        if this.armed.armed {
            ready!(this.sleep.as_mut().poll(cx));
            this.armed.armed = false;
            this.armed.idle.park_due.store(true, Relaxed);
            this.sleep.as_mut().reset(*this.deadline);
        }
        this.sleep.poll(cx)
    }
}

impl Sleep for HeadWait {}
