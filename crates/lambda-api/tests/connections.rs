//! How `lambda_api::serve` holds connections: idle keep-alive connections
//! park (give their buffers back) and go on serving, bytes a client sent
//! ahead survive a park, idle connections close, and shutdown drains.
//!
//! A plain router stands in for the API here: what is under test is the
//! connection handling, which is the same for any router.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use lambda_api::{ConnectionMetrics, ServeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const PARK_AFTER: Duration = Duration::from_millis(100);
/// Long enough for a park on a loaded CI machine, short of the idle timeout.
const PAST_PARK: Duration = Duration::from_millis(600);

struct Server {
    addr: SocketAddr,
    metrics: ConnectionMetrics,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(idle_timeout: Duration) -> Server {
    let router = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/echo", post(|body: String| async move { body }))
        .route("/large", get(|| async { large_body() }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "slow"
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let metrics = ConnectionMetrics::default();
    let config = ServeConfig { idle_timeout, park_after: PARK_AFTER, metrics: metrics.clone() };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(lambda_api::serve(
        listener,
        router,
        async move {
            let _ = stopped.await;
        },
        config,
    ));
    Server { addr, metrics, stop: Some(stop), task }
}

impl Server {
    fn counts(&self) -> (i64, i64, u64) {
        (self.metrics.active.get(), self.metrics.parked.get(), self.metrics.parks.get())
    }

    async fn shut_down(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task")
            .expect("serve");
    }
}

/// Reads one response: its head (lowercased) and body, by `content-length`.
async fn response(stream: &mut TcpStream) -> (String, String) {
    let mut data = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().expect("content-length"))
                .unwrap_or(0);
            let body_start = end + 4;
            while data.len() < body_start + length {
                let n = stream.read(&mut chunk).await.expect("read body");
                assert!(n > 0, "connection closed mid-body");
                data.extend_from_slice(&chunk[..n]);
            }
            assert_eq!(data.len(), body_start + length, "no bytes beyond the response");
            let body = String::from_utf8_lossy(&data[body_start..]).into_owned();
            return (head, body);
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("a response in time")
            .expect("read head");
        assert!(n > 0, "connection closed before a response: {:?}", String::from_utf8_lossy(&data));
        data.extend_from_slice(&chunk[..n]);
    }
}

fn echo(body: &str) -> String {
    format!(
        "POST /echo HTTP/1.1\r\nhost: t\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

const HEALTH: &str = "GET /health HTTP/1.1\r\nhost: t\r\n\r\n";

/// More than loopback's socket buffers hold, so most of it waits in hyper
/// until the client reads.
fn large_body() -> String {
    (0..2_000_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect::<String>().repeat(16)
}

async fn expect_closed(stream: &mut TcpStream, within: Duration) {
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(within, stream.read(&mut byte))
        .await
        .expect("the server closes the connection in time");
    assert!(matches!(read, Ok(0) | Err(_)), "expected a close, read {read:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_parks_and_serves_its_next_request() {
    let server = start(Duration::from_secs(10)).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    for round in 0..3 {
        stream.write_all(HEALTH.as_bytes()).await.expect("write");
        let (head, body) = response(&mut stream).await;
        assert!(head.starts_with("http/1.1 200"), "round {round}: {head}");
        assert!(!head.contains("connection: close"), "round {round}: {head}");
        assert_eq!(body, "ok");
        tokio::time::sleep(PAST_PARK).await;
        assert_eq!(server.counts(), (0, 1, round + 1), "round {round}: parked, without buffers");
    }
    server.shut_down().await;
}

#[tokio::test]
async fn an_answer_the_client_has_not_read_yet_is_not_cut_by_a_park() {
    let server = start(Duration::from_secs(10)).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    for round in 0..2 {
        stream.write_all(b"GET /large HTTP/1.1\r\nhost: t\r\n\r\n").await.expect("write");
        // hyper waits for the next head while the answer is still unflushed.
        tokio::time::sleep(PAST_PARK).await;
        assert_eq!(server.counts(), (1, 0, 0), "round {round}: not parked with an unread answer");
        let (head, body) = response(&mut stream).await;
        assert!(head.starts_with("http/1.1 200"), "round {round}: {head}");
        assert!(body == large_body(), "round {round}: the answer arrived cut ({} bytes)", body.len());
    }
    server.shut_down().await;
}

#[tokio::test]
async fn a_busy_connection_does_not_park() {
    let server = start(Duration::from_secs(10)).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream.write_all(b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n").await.expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.counts(), (1, 0, 0), "a request in progress keeps its connection active");
    let (head, body) = response(&mut stream).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "slow");
    server.shut_down().await;
}

#[tokio::test]
async fn a_request_head_that_arrives_slowly_is_served_on_a_kept_connection() {
    let server = start(Duration::from_secs(10)).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    for round in 0..2 {
        // Past the park time between the two halves of a head: hyper is
        // reading a request, so the connection must not end under it.
        let (first_half, second_half) = HEALTH.split_at(10);
        stream.write_all(first_half.as_bytes()).await.expect("write");
        tokio::time::sleep(PAST_PARK).await;
        stream.write_all(second_half.as_bytes()).await.expect("write");
        let (head, body) = response(&mut stream).await;
        assert!(head.starts_with("http/1.1 200"), "round {round}: {head}");
        assert!(!head.contains("connection: close"), "round {round}: {head}");
        assert_eq!(body, "ok");
    }
    server.shut_down().await;
}

#[tokio::test]
async fn bytes_sent_ahead_of_a_park_are_served_after_it() {
    let server = start(Duration::from_secs(10)).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let second = echo("the second request's body");
    let (first_half, second_half) = second.split_at(20);
    // The first request and the start of the second arrive together, as a
    // pipelining client sends them; hyper holds the partial head while idle.
    stream.write_all(format!("{}{first_half}", echo("first")).as_bytes()).await.expect("write");
    let (head, body) = response(&mut stream).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "first");
    tokio::time::sleep(PAST_PARK).await;
    assert_eq!(server.counts().2, 1, "the connection parked with a partial head read ahead");
    stream.write_all(second_half.as_bytes()).await.expect("write");
    let (head, body) = response(&mut stream).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "the second request's body");
    server.shut_down().await;
}

#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout() {
    let server = start(Duration::from_millis(800)).await;
    // Never sends a byte.
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    // Parks after one request, then sends nothing more.
    let mut kept = TcpStream::connect(server.addr).await.expect("connect");
    kept.write_all(HEALTH.as_bytes()).await.expect("write");
    let (head, _) = response(&mut kept).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    expect_closed(&mut silent, Duration::from_secs(5)).await;
    expect_closed(&mut kept, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!((server.counts().0, server.counts().1), (0, 0), "nothing left open");
    server.shut_down().await;
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight_and_closes_parked_connections() {
    let server = start(Duration::from_secs(10)).await;
    let mut parked = TcpStream::connect(server.addr).await.expect("connect");
    parked.write_all(HEALTH.as_bytes()).await.expect("write");
    response(&mut parked).await;
    tokio::time::sleep(PAST_PARK).await;
    assert_eq!(server.counts().1, 1);

    let mut busy = TcpStream::connect(server.addr).await.expect("connect");
    busy.write_all(b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n").await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = server.addr;
    let stopping = tokio::spawn(server.shut_down());
    let (head, body) = response(&mut busy).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "slow");
    expect_closed(&mut parked, Duration::from_secs(5)).await;
    stopping.await.expect("shutdown");
    assert!(TcpStream::connect(addr).await.is_err(), "no longer listening");
}
