//! `lambda-bench`: measures Lambda Microservice on this machine against the
//! floor (dedicated Node.js, Python and bare hyper servers) in one run, prints
//! a table and writes `bench/results/<time>-<commit>.json`. Not a test.

mod cpu;
mod load;
mod relay;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use load::{FollowUp, MakeRequest, Stats};
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(about = "Benchmark Lambda Microservice against its floor")]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// The `lambda` binary (release build).
    #[arg(long, default_value = "target/release/lambda")]
    lambda: PathBuf,
    /// Measured seconds per case (after one second of warm-up).
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Warm-up seconds before each measure (not counted).
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Concurrent keep-alive connections per throughput case.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Idle keep-alive connections held open during the last case (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    hold: usize,
    /// Where the JSON result goes.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Runs only the cases whose name starts with one of these (comma-separated:
    /// `floor-node`, `floor-python`, `floor-hyper`, `nodejs-warm`, `nodejs-init`,
    /// `python-…`, `rust-…`, `relay-nodejs`, `relay-python`, `cached`, `hold`;
    /// `nodejs` selects both nodejs cases).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

impl Cli {
    fn wants(&self, case: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| case.starts_with(o.as_str()))
    }
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Internal: the bare hyper floor server.
    #[command(hide = true)]
    FloorHyper,
    /// Internal: the relay bound, a bare hyper front over two `language` workers.
    #[command(hide = true)]
    Relay { language: String },
}

#[derive(Debug, Serialize)]
struct Case {
    name: String,
    #[serde(flatten)]
    stats: Stats,
    /// The comparison with this case's floor, when it has one.
    #[serde(flatten)]
    compared: Compared,
    /// Controller RSS right after the case: what the case left behind
    /// (sessions, workers' bookkeeping, held connections) shows case by case.
    #[serde(skip_serializing_if = "Option::is_none")]
    controller_rss_after_bytes: Option<u64>,
}

fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &Value) -> Request<Full<Bytes>> {
    let mut req =
        Request::post(path).header("host", addr.to_string()).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(Bytes::from(body.to_string()))).unwrap_or_default()
}

/// One request on a fresh connection, for setup calls.
async fn call(addr: SocketAddr, req: Request<Full<Bytes>>) -> anyhow::Result<(u16, Value)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let response = sender.send_request(req).await?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

async fn initialize(addr: SocketAddr, title: &str, script: &str) -> anyhow::Result<String> {
    let req =
        post(addr, "/api/v1/initialize", &[("language-title", title)], &json!({ "script_content": script }));
    let (status, body) = call(addr, req).await?;
    if status != 200 {
        bail!("initialize {title}: {status} {body}");
    }
    body["request_id"].as_str().map(str::to_owned).context("request_id")
}

/// A POST to `path` with `headers`, parsed once: each request of a run
/// clones it with a new body, so the load generator spends its time on the
/// exchange rather than on building requests.
fn template(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> impl Fn(String) -> Request<Full<Bytes>> + use<> {
    let parts = post(addr, path, headers, &Value::Null).into_parts().0;
    move |body| {
        let mut req = Request::new(Full::new(Bytes::from(body)));
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = parts.uri.clone();
        *req.headers_mut() = parts.headers.clone();
        req
    }
}

fn adder(addr: SocketAddr, path: String, headers: Vec<(&'static str, &'static str)>) -> MakeRequest {
    let request = template(addr, &path, &headers);
    Arc::new(move |n| request(format!(r#"{{"params":{{"a":{},"b":1}}}}"#, n % 1000)))
}

/// Initializes of a new script each time (`salt` keeps two cases' scripts apart).
fn new_scripts(addr: SocketAddr, language: &'static str, salt: u64) -> MakeRequest {
    let title = format!("{language}-bench-init");
    Arc::new(move |n| {
        let n = n * 2 + salt;
        let script = match language {
            "nodejs" => format!("return event.params.a + {n};"),
            "python" => format!("result = params['a'] + {n}"),
            _ => format!("{RUST_ADDER}// {n}\n"),
        };
        post(
            addr,
            "/api/v1/initialize",
            &[("language-title", title.as_str())],
            &json!({ "script_content": script }),
        )
    })
}

const NODE_FLOOR: &str = "floor: node http";
const PYTHON_FLOOR: &str = "floor: python asyncio";
const HYPER_FLOOR: &str = "floor: bare hyper";

/// A floor server, kept up through the run. This VM's speed drifts by tens of
/// percent between minutes, so each platform case is compared with the
/// floor measured right before and right after it, not at the start only.
struct Floor {
    name: &'static str,
    server: server::Process,
    make: MakeRequest,
    /// Its most recent measure.
    latest: Stats,
}

/// Throughput figures of one run: concurrency, warm-up and measured time.
#[derive(Clone, Copy)]
struct Load {
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
}

impl Load {
    fn target(self, server: &server::Process) -> load::Target {
        load::Target {
            addr: server.addr,
            server: server.child.id(),
            concurrency: self.concurrency,
            warmup: self.warmup,
            duration: self.duration,
        }
    }

    async fn run(self, server: &server::Process, make: MakeRequest) -> anyhow::Result<Stats> {
        load::run(self.target(server), make).await
    }

    /// The first run of a case, discarded, then the measured one. A server's
    /// first run after it starts can read far below its next ones, however
    /// long its warm-up: the python floor measured 11.4k req/s (85 µs of CPU
    /// per request) and then 15.6k–17.1k (57–63 µs) five times in a row.
    /// Every throughput case, floor or platform, gets the same treatment.
    async fn settled_run(self, server: &server::Process, make: MakeRequest) -> anyhow::Result<Stats> {
        self.run(server, make.clone()).await?;
        self.run(server, make).await
    }
}

impl Floor {
    async fn start(
        name: &'static str,
        server: server::Process,
        make: MakeRequest,
        timing: Load,
    ) -> anyhow::Result<Self> {
        let latest = timing.settled_run(&server, make.clone()).await?;
        Ok(Self { name, server, make, latest })
    }

    /// Measures the floor again, and returns `stats`' ratio to the mean of
    /// that measure and the one before.
    async fn compare(&mut self, stats: &Stats, timing: Load) -> anyhow::Result<Compared> {
        println!("  {} again …", self.name);
        let before = self.latest.rps;
        self.latest = timing.run(&self.server, self.make.clone()).await?;
        let reference = (before + self.latest.rps) / 2.0;
        Ok(Compared {
            ratio_rps: Some(stats.rps / reference),
            floor: Some(self.name.to_owned()),
            floor_rps: Some(reference),
            floor_rps_measured: Some([before, self.latest.rps]),
        })
    }
}

#[derive(Debug, Default, Serialize)]
struct Compared {
    /// Throughput ratio to the floor (platform / floor).
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_rps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    floor: Option<String>,
    /// The floor's throughput the ratio is taken against: the mean of its
    /// measures just before and just after this case.
    #[serde(skip_serializing_if = "Option::is_none")]
    floor_rps: Option<f64>,
    /// Those two measures, before and after.
    #[serde(skip_serializing_if = "Option::is_none")]
    floor_rps_measured: Option<[f64; 2]>,
}

/// A platform case's comparison with its floor, when the floor runs.
async fn against(stats: &Stats, floor: Option<&mut Floor>, timing: Load) -> anyhow::Result<Compared> {
    match floor {
        Some(floor) => floor.compare(stats, timing).await,
        None => Ok(Compared::default()),
    }
}

const SCRIPTS: [(&str, &str); 2] =
    [("nodejs", "return event.params.a + event.params.b;"), ("python", "result = params['a'] + params['b']")];
const RUST_ADDER: &str = "use serde_json::{json, Value};\npub fn handle(params: Value) -> Value {\n    json!(params[\"a\"].as_i64().unwrap_or(0) + params[\"b\"].as_i64().unwrap_or(0))\n}\n";

/// The sum of a metric's series whose line starts with `prefix`.
fn metric_sum(metrics: &str, prefix: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn workers(metrics: &str) -> u64 {
    metric_sum(metrics, "lambda_workers{")
}

async fn metrics_text(addr: SocketAddr) -> String {
    let req = Request::get("/metrics").header("host", addr.to_string()).body(Full::new(Bytes::new()));
    let Ok(req) = req else { return String::new() };
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else { return String::new() };
    let Ok((mut sender, conn)) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
    else {
        return String::new();
    };
    tokio::spawn(conn);
    let Ok(response) = sender.send_request(req).await else { return String::new() };
    let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let commit = std::process::Command::new("git").args(["rev-parse", "--short", "HEAD"]).output();
    json!({
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": model,
        "kernel": kernel.trim(),
        "commit": commit.ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.mode {
        Some(Mode::FloorHyper) => return server::serve_hyper_hello().await,
        Some(Mode::Relay { language }) => return relay::serve(language, &runtimes_dir()).await,
        None => {}
    }
    let warmup = Duration::from_secs(cli.warmup);
    let duration = Duration::from_secs(cli.duration);
    let c = cli.concurrency;
    let mut cases: Vec<Case> = Vec::new();
    let floors_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("floors");

    let timing = Load { concurrency: c, warmup, duration };
    println!("floors …");
    let mut node_floor = None;
    if cli.wants("floor-node") {
        let node = server::node_floor(&floors_dir.join("node_server.js"))?;
        let make = adder(node.addr, "/".into(), vec![]);
        node_floor = Some(Floor::start(NODE_FLOOR, node, make, timing).await?);
    }
    let mut python_floor = None;
    if cli.wants("floor-python") {
        let python = server::python_floor(&floors_dir.join("python_server.py"))?;
        let make = adder(python.addr, "/".into(), vec![]);
        python_floor = Some(Floor::start(PYTHON_FLOOR, python, make, timing).await?);
    }
    let mut hyper_floor = None;
    if cli.wants("floor-hyper") {
        let hyper = server::hyper_floor()?;
        let hyper_addr = hyper.addr;
        let get_hello: MakeRequest = Arc::new(move |_| {
            Request::get("/")
                .header("host", hyper_addr.to_string())
                .body(Full::new(Bytes::new()))
                .unwrap_or_default()
        });
        hyper_floor = Some(Floor::start(HYPER_FLOOR, hyper, get_hello, timing).await?);
    }
    for floor in [&node_floor, &python_floor, &hyper_floor].into_iter().flatten() {
        cases.push(Case {
            name: floor.name.into(),
            stats: floor.latest.clone(),
            compared: Compared::default(),
            controller_rss_after_bytes: None,
        });
    }

    let data = tempfile::tempdir()?;
    let rust_cache =
        cli.lambda.parent().map_or_else(|| PathBuf::from("bench-rust"), |d| d.join("bench-rust"));
    let lambda = server::lambda(&cli.lambda, data.path(), &rust_cache)?;
    let addr = lambda.addr;
    let rss_idle = lambda.rss_bytes();
    let mut rss_max = rss_idle;
    let mut workers_max = 0;

    let (_, health) =
        call(addr, Request::get("/health").header("host", addr.to_string()).body(Full::new(Bytes::new()))?)
            .await?;
    let mut languages: Vec<(&'static str, String)> =
        SCRIPTS.iter().map(|(l, s)| (*l, (*s).to_owned())).collect();
    if health["components"]["runtimes"]["rust"] == "ok" {
        // The server builds the Rust template in the background at start: a
        // first compile waits for it, so that no case measures beside rustc.
        println!("waiting for the Rust template build …");
        initialize(addr, "rust-bench-warmup", RUST_ADDER).await?;
        languages.push(("rust", RUST_ADDER.to_owned()));
    }

    for (language, script) in &languages {
        let language = *language;
        if !cli.wants(&format!("{language}-warm")) {
            continue;
        }
        println!("{language}: warm execute …");
        let started = Instant::now();
        let id = initialize(addr, &format!("{language}-bench-adder"), script).await?;
        let first_init = started.elapsed();
        let make = adder(addr, format!("/api/v1/execute/{id}"), vec![("x-cache-control", "no-store")]);
        let stats = timing.settled_run(&lambda, make).await?;
        let rss = lambda.rss_bytes();
        rss_max = rss_max.max(rss);
        workers_max = workers_max.max(workers(&metrics_text(addr).await));
        let floor = match language {
            "nodejs" => node_floor.as_mut(),
            "python" => python_floor.as_mut(),
            _ => None,
        };
        let compared = against(&stats, floor, timing).await?;
        cases.push(Case {
            name: format!("{language}: warm execute (first initialize {} ms)", first_init.as_millis()),
            compared,
            stats,
            controller_rss_after_bytes: Some(rss),
        });
    }

    for (language, _) in &languages {
        let language = *language;
        // A Rust initialize is a compile of seconds: `bench/rust_wasm.sh` measures those.
        if language == "rust" || !cli.wants(&format!("{language}-init")) {
            continue;
        }

        println!("{language}: initialize …");
        let concurrency = if language == "rust" { 1 } else { 2 };
        let init = |salt| new_scripts(addr, language, salt);
        let target = load::Target { concurrency, ..timing.target(&lambda) };
        let stats = load::run(target, init(0)).await?;
        cases.push(Case {
            name: format!("{language}: initialize (new script each)"),
            stats,
            compared: Compared::default(),
            controller_rss_after_bytes: Some(lambda.rss_bytes()),
        });
        // The cold start as a client sees it: a new script's first result.
        let first: FollowUp = Arc::new(move |n, body| {
            let id = serde_json::from_slice::<Value>(body).ok()?["request_id"].as_str()?.to_owned();
            let params = json!({ "params": { "a": n % 1000, "b": 1 } });
            Some(post(addr, &format!("/api/v1/execute/{id}"), &[("x-cache-control", "no-store")], &params))
        });
        let stats = load::run_chained(target, init(1), Some(first)).await?;
        cases.push(Case {
            name: format!("{language}: initialize + first execute (new script each)"),
            stats,
            compared: Compared::default(),
            controller_rss_after_bytes: Some(lambda.rss_bytes()),
        });
    }

    for language in ["nodejs", "python"] {
        if !cli.wants(&format!("relay-{language}")) {
            continue;
        }
        println!("{language}: relay bound …");
        let relay = server::relay(language)?;
        let make = adder(relay.addr, "/".into(), vec![]);
        let stats = timing.settled_run(&relay, make).await?;
        let floor = match language {
            "nodejs" => node_floor.as_mut(),
            _ => python_floor.as_mut(),
        };
        let compared = against(&stats, floor, timing).await?;
        cases.push(Case {
            name: format!("bound: hyper relay to two {language} workers"),
            compared,
            stats,
            controller_rss_after_bytes: None,
        });
    }

    if cli.wants("cached") {
        println!("cached execute …");
        let id = initialize(addr, "nodejs-bench-cached", SCRIPTS[0].1).await?;
        let request = template(addr, &format!("/api/v1/execute/{id}"), &[]);
        let cached: MakeRequest = Arc::new(move |_| request(r#"{"params":{"a":1,"b":2}}"#.to_owned()));
        let stats = timing.settled_run(&lambda, cached).await?;
        let rss = lambda.rss_bytes();
        rss_max = rss_max.max(rss);
        let compared = against(&stats, hyper_floor.as_mut(), timing).await?;
        cases.push(Case {
            name: "nodejs: cached execute".into(),
            compared,
            stats,
            controller_rss_after_bytes: Some(rss),
        });
    }

    let mut rss_holding = None;
    let mut held_parked = None;
    if cli.hold > 0 && cli.wants("hold") {
        println!("holding {} keep-alive connections …", cli.hold);
        let health: MakeRequest = Arc::new(move |_| {
            Request::get("/health")
                .header("host", addr.to_string())
                .body(Full::new(Bytes::new()))
                .unwrap_or_default()
        });
        let held = load::hold(addr, cli.hold, health).await?;
        println!(
            "controller RSS with {} idle connections open: {:.1} MB",
            held.len(),
            lambda.rss_bytes() as f64 / 1e6
        );
        let id = initialize(addr, "nodejs-bench-held", SCRIPTS[0].1).await?;
        let make = adder(addr, format!("/api/v1/execute/{id}"), vec![("x-cache-control", "no-store")]);
        let stats = timing.settled_run(&lambda, make).await?;
        rss_holding = Some(lambda.rss_bytes());
        let parked = metric_sum(&metrics_text(addr).await, "lambda_http_connections{state=\"parked\"}");
        println!("  of them parked (idle, without buffers): {parked}");
        held_parked = Some(parked);
        drop(held);
        let compared = against(&stats, node_floor.as_mut(), timing).await?;
        cases.push(Case {
            name: format!("nodejs: warm execute with {} idle connections held", cli.hold),
            compared,
            stats,
            controller_rss_after_bytes: rss_holding,
        });
    }
    rss_max = rss_max.max(rss_holding.unwrap_or(0));

    print_table(&cases);
    println!(
        "controller RSS: idle {:.1} MB, max {:.1} MB{}; workers (max seen): {workers_max}",
        rss_idle as f64 / 1e6,
        rss_max as f64 / 1e6,
        rss_holding.map_or(String::new(), |r| format!(", holding connections {:.1} MB", r as f64 / 1e6)),
    );
    let result = json!({
        "machine": machine(),
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "config": { "duration_s": cli.duration, "concurrency": c, "held_connections": cli.hold },
        "held_connections_parked": held_parked,
        "controller_rss_bytes": { "idle": rss_idle, "max": rss_max, "holding": rss_holding },
        "workers_max": workers_max,
        "cases": cases,
    });
    std::fs::create_dir_all(&cli.out)?;
    let commit = result["machine"]["commit"].as_str().unwrap_or("unknown").to_owned();
    let file = cli.out.join(format!("{}-{commit}.json", chrono::Utc::now().format("%Y%m%dT%H%M%SZ")));
    std::fs::write(&file, serde_json::to_string_pretty(&result)?)?;
    println!("wrote {}", file.display());
    Ok(())
}

/// The runtime hosts the platform embeds (`runtimes/` at the repository root).
fn runtimes_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../runtimes")
}

fn print_table(cases: &[Case]) {
    println!();
    println!(
        "{:<62} {:>10} {:>9} {:>9} {:>7} {:>8} {:>11} {:>7} {:>17}",
        "case", "req/s", "p50 µs", "p99 µs", "errors", "× floor", "floor req/s", "RSS MB", "CPU µs/req s+w+g"
    );
    for c in cases {
        let ratio = c.compared.ratio_rps.map_or(String::new(), |r| format!("{r:.2}"));
        let rss = c.controller_rss_after_bytes.map_or(String::new(), |b| format!("{:.0}", b as f64 / 1e6));
        let floor_rps = c.compared.floor_rps.map_or(String::new(), |r| format!("{r:.0}"));
        let cpu =
            c.stats.cpu.as_ref().map_or(String::new(), |u| {
                format!("{:.0}+{:.0}+{:.0}", u.server_us, u.workers_us, u.load_us)
            });
        println!(
            "{:<62} {:>10.0} {:>9} {:>9} {:>7} {:>8} {:>11} {:>7} {:>17}",
            c.name, c.stats.rps, c.stats.p50_us, c.stats.p99_us, c.stats.errors, ratio, floor_rps, rss, cpu
        );
    }
    println!("CPU µs/req: s = the server (controller or floor), w = its workers, g = the load generator.");
    println!();
}
