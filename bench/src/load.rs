//! The load generator: N keep-alive HTTP/1.1 connections, each sending its
//! next request as soon as the previous answer is read, for a fixed duration.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::cpu::{self, PerRequest};

/// Builds the `n`-th request of a connection.
pub type MakeRequest = Arc<dyn Fn(u64) -> Request<Full<Bytes>> + Send + Sync>;

/// Builds a second request from the body of the first (e.g. an execute of the
/// session an initialize created); the pair is measured as one.
pub type FollowUp = Arc<dyn Fn(u64, &[u8]) -> Option<Request<Full<Bytes>>> + Send + Sync>;

/// What one case measured.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub rps: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// CPU µs per request of the server, its workers and the load generator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<PerRequest>,
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).context("histogram bounds")
}

/// Runs `work` while also driving the connection `conn`, in this task: the
/// request and its connection never hand over to another task, which would
/// cost the load generator a wake-up per request on the cores it shares with
/// the server under test.
async fn driving<F: std::future::Future>(
    conn: &mut std::pin::Pin<&mut Connection>,
    work: F,
) -> anyhow::Result<F::Output> {
    tokio::select! {
        biased;
        out = work => Ok(out),
        ended = conn.as_mut() => {
            ended?;
            anyhow::bail!("the server closed the connection")
        }
    }
}

type Connection = hyper::client::conn::http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

async fn connection(
    addr: SocketAddr,
    make: MakeRequest,
    follow: Option<FollowUp>,
    warmup_until: Instant,
    until: Instant,
    seed: u64,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let mut conn = std::pin::pin!(conn);
    let mut hist = histogram()?;
    let mut errors = 0;
    let mut n = seed;
    loop {
        let started = Instant::now();
        if started >= until {
            break;
        }
        let response = driving(&mut conn, sender.send_request(make(n))).await??;
        let mut ok = response.status().is_success();
        let body = driving(&mut conn, response.into_body().collect()).await??.to_bytes();
        if let Some(follow) = follow.as_ref().filter(|_| ok) {
            match follow(n, &body) {
                Some(request) => {
                    let response = driving(&mut conn, sender.send_request(request)).await??;
                    ok = response.status().is_success();
                    driving(&mut conn, response.into_body().collect()).await??;
                }
                None => ok = false,
            }
        }
        n += 1_000_000;
        if started < warmup_until {
            continue;
        }
        if !ok {
            errors += 1;
        }
        hist.record(started.elapsed().as_micros().max(1) as u64)?;
    }
    Ok((hist, errors))
}

/// What a run drives and measures: `concurrency` connections to `addr` for
/// `warmup + duration` (only `duration` is measured), and the CPU time of
/// the process `server` over the measured part.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub addr: SocketAddr,
    pub server: u32,
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

/// Runs the target's connections, each sending the requests `make` builds.
pub async fn run(target: Target, make: MakeRequest) -> anyhow::Result<Stats> {
    run_chained(target, make, None).await
}

/// As [`run`], each request followed by the one `follow` makes of its answer.
pub async fn run_chained(
    target: Target,
    make: MakeRequest,
    follow: Option<FollowUp>,
) -> anyhow::Result<Stats> {
    let Target { addr, server, concurrency, warmup, duration } = target;
    let start = Instant::now();
    let warmup_until = start + warmup;
    let until = warmup_until + duration;
    let sampler = tokio::spawn(async move {
        tokio::time::sleep_until(warmup_until.into()).await;
        let before = tokio::task::spawn_blocking(move || cpu::sample(server)).await?;
        tokio::time::sleep_until(until.into()).await;
        let after = tokio::task::spawn_blocking(move || cpu::sample(server)).await?;
        anyhow::Ok((before, after))
    });
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| tokio::spawn(connection(addr, make.clone(), follow.clone(), warmup_until, until, i as u64)))
        .collect();
    let mut total = histogram()?;
    let mut errors = 0;
    for task in tasks {
        let (hist, errs) = task.await??;
        total.add(&hist)?;
        errors += errs;
    }
    let (before, after) = sampler.await??;
    let seconds = duration.as_secs_f64();
    Ok(Stats {
        cpu: Some(PerRequest::between(&before, &after, total.len())),
        requests: total.len(),
        errors,
        seconds,
        rps: total.len() as f64 / seconds,
        p50_us: total.value_at_quantile(0.50),
        p99_us: total.value_at_quantile(0.99),
        max_us: total.max(),
    })
}

/// Opens `count` idle keep-alive connections (each proven alive by one request)
/// and returns their senders, so the caller holds them open.
pub async fn hold(
    addr: SocketAddr,
    count: usize,
    make: MakeRequest,
) -> anyhow::Result<Vec<hyper::client::conn::http1::SendRequest<Full<Bytes>>>> {
    let mut held = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(200) {
        let opened = futures::future::join_all(chunk.iter().map(|&i| {
            let make = make.clone();
            async move {
                let stream = TcpStream::connect(addr).await?;
                let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(conn);
                let response = sender.send_request(make(i as u64)).await?;
                response.into_body().collect().await?;
                anyhow::Ok(sender)
            }
        }))
        .await;
        for sender in opened {
            held.push(sender?);
        }
    }
    Ok(held)
}
