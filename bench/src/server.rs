//! The processes under test: `lambda serve` and the dedicated floor servers.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

/// A child process killed on drop.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Resident set size now, bytes (from /proc).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }
}

/// Spawns `cmd` and waits for a stdout line containing the port it listens on:
/// `lambda listening on http://ADDR` or `listening PORT`.
pub fn spawn(mut cmd: Command) -> anyhow::Result<Process> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let Some(line) = lines.next() else { bail!("{cmd:?} exited before listening") };
        let line = line?;
        if let Some(url) = line.strip_prefix("lambda listening on http://") {
            break url.trim().parse()?;
        }
        if let Some(port) = line.strip_prefix("listening ") {
            break SocketAddr::from(([127, 0, 0, 1], port.trim().parse()?));
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok(Process { child, addr })
}

/// `lambda serve` on embedded defaults in `data_dir`. The Rust template's
/// prebuilt dependencies live in `rust_cache_dir`, kept between runs.
pub fn lambda(binary: &Path, data_dir: &Path, rust_cache_dir: &Path) -> anyhow::Result<Process> {
    let mut cmd = Command::new(binary);
    cmd.arg("serve")
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("GRPC_PORT", "0")
        .env("LAMBDA_DATA_DIR", data_dir)
        .env("LAMBDA_RUST_CACHE_DIR", rust_cache_dir)
        .env("RUST_LOG", "warn");
    spawn(cmd)
}

pub fn node_floor(script: &Path) -> anyhow::Result<Process> {
    let mut cmd = Command::new("node");
    cmd.arg(script).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    spawn(cmd)
}

pub fn python_floor(script: &Path) -> anyhow::Result<Process> {
    let mut cmd = Command::new("python3");
    cmd.arg(script);
    spawn(cmd)
}

pub fn hyper_floor() -> anyhow::Result<Process> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("floor-hyper");
    spawn(cmd)
}

/// The relay bound over `language`'s workers (see `relay.rs`).
pub fn relay(language: &str) -> anyhow::Result<Process> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["relay", language]);
    spawn(cmd)
}

/// The bare hyper "hello" server (run as a child of the harness).
pub async fn serve_hyper_hello() -> anyhow::Result<()> {
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?.port());
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                    Bytes::from_static(b"hello"),
                )))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
