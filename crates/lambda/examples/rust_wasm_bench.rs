//! Benchmark client of the `rust` and `wasm` runtimes through HTTP, run by
//! `bench/rust_wasm.sh` against a release server: time of a first compile,
//! of a repeat initialize of the same script, and warm execute latency and
//! throughput of a trivial handler (result cache off: `no-store`).
//!
//! Usage: `rust_wasm_bench <base-url> [sequential-executes] [concurrency] [seconds]`

use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ADDER: &str = r#"use serde_json::{Value, json};
pub fn handle(params: Value) -> Value {
    json!({ "sum": params["a"].as_i64().unwrap_or(0) + params["b"].as_i64().unwrap_or(0) })
}
"#;

const ECHO_WAT: &str = include_str!("../tests/fixtures/echo.wat");

struct Bench {
    client: reqwest::Client,
    base: String,
}

impl Bench {
    async fn initialize(&self, title: &str, script: &str) -> (String, Duration) {
        let started = Instant::now();
        let r = self
            .client
            .post(format!("{}/api/v1/initialize", self.base))
            .header("Language-Title", title)
            .json(&json!({ "script_content": script }))
            .send()
            .await
            .expect("initialize");
        let took = started.elapsed();
        let status = r.status();
        let body: Value = r.json().await.expect("json");
        assert!(status.is_success(), "initialize {title}: {status} {body}");
        (body["request_id"].as_str().expect("id").to_owned(), took)
    }

    async fn execute(&self, id: &str, i: i64) -> Duration {
        let started = Instant::now();
        let r = self
            .client
            .post(format!("{}/api/v1/execute/{id}", self.base))
            .header("X-Cache-Control", "no-store")
            .json(&json!({ "params": { "a": i, "b": 1 } }))
            .send()
            .await
            .expect("execute");
        let ok = r.status().is_success();
        let _ = r.bytes().await;
        assert!(ok, "execute failed");
        started.elapsed()
    }

    /// Sequential latency percentiles, then throughput with `concurrency` clients.
    async fn executes(&self, id: &str, n: usize, concurrency: usize, secs: u64) -> (Vec<Duration>, f64) {
        for i in 0..50 {
            self.execute(id, i).await;
        }
        let mut lat = Vec::with_capacity(n);
        for i in 0..n {
            lat.push(self.execute(id, i as i64).await);
        }
        lat.sort();
        let until = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let workers = (0..concurrency).map(|_| async {
            let mut done = 0u64;
            while Instant::now() < until {
                self.execute(id, done as i64).await;
                done += 1;
            }
            done
        });
        let total: u64 = futures::future::join_all(workers).await.into_iter().sum();
        (lat, total as f64 / started.elapsed().as_secs_f64())
    }
}

fn pct(sorted: &[Duration], p: f64) -> String {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    format!("{:.3} ms", sorted[i].as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let base = args.next().expect("usage: rust_wasm_bench <base-url> [n] [concurrency] [seconds]");
    let n: usize = args.next().map_or(2000, |v| v.parse().expect("n"));
    let concurrency: usize = args.next().map_or(8, |v| v.parse().expect("concurrency"));
    let secs: u64 = args.next().map_or(5, |v| v.parse().expect("seconds"));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(1800)).build().expect("client");
    let bench = Bench { client, base };
    let nonce = format!("{}-{}", std::process::id(), epoch_nanos());

    // Waits for the one-time template build (not what is measured).
    bench.initialize("rust-warmup", &format!("{ADDER}// warm-up {nonce}\n")).await;
    let script = format!("{ADDER}// bench {nonce}\n");
    let (id, first) = bench.initialize("rust-bench", &script).await;
    let mut repeats = Vec::new();
    for _ in 0..50 {
        repeats.push(bench.initialize("rust-bench", &script).await.1);
    }
    repeats.sort();
    let (lat, rps) = bench.executes(&id, n, concurrency, secs).await;
    let (wasm_id, _) = bench.initialize("wasm-echo", ECHO_WAT).await;
    let (wasm_lat, wasm_rps) = bench.executes(&wasm_id, n, concurrency, secs).await;

    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| rust first compile (initialize, release, template prebuilt) | {:.2} s |",
        first.as_secs_f64()
    );
    println!(
        "| rust repeat initialize of the same script, p50 / p99 | {} / {} |",
        pct(&repeats, 0.5),
        pct(&repeats, 0.99)
    );
    println!(
        "| rust warm execute via HTTP, p50 / p90 / p99 ({n} sequential) | {} / {} / {} |",
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99)
    );
    println!("| rust warm execute throughput ({concurrency} clients, {secs} s) | {rps:.0} req/s |");
    println!(
        "| wasm (WAT echo) warm execute p50 / p99 | {} / {} |",
        pct(&wasm_lat, 0.5),
        pct(&wasm_lat, 0.99)
    );
    println!("| wasm warm execute throughput ({concurrency} clients, {secs} s) | {wasm_rps:.0} req/s |");
}

/// Makes each run's scripts new, so the first initialize really compiles.
fn epoch_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}
