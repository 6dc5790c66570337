//! For tests (feature `testing`): where the machine's Redis is, unique key
//! prefixes, and a private `redis-server` on a free port that a test may
//! stop and start to play an outage.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The Redis the tests share (`LAMBDA_TEST_REDIS_URL`, default the local one).
pub fn redis_url() -> String {
    std::env::var("LAMBDA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A key prefix no other test uses: `lambda-test:<pid>:<n>:<nanos>:`.
pub fn unique_prefix() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("lambda-test:{}:{}:{nanos}:", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// A `redis-server` of the test's own; killed on drop.
#[derive(Debug)]
pub struct PrivateRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut redis = PrivateRedis { port: free_port(), dir, child: None };
        redis.resume();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port (after [`PrivateRedis::stop`]).
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(redis_server())
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server is required for this test");
        self.child = Some(child);
        let give_up = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < give_up, "redis-server did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server: the outage.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn redis_server() -> PathBuf {
    std::env::var_os("LAMBDA_TEST_REDIS_SERVER").map_or_else(|| PathBuf::from("redis-server"), PathBuf::from)
}
