//! End to end: the `rust` and `wasm` runtimes through the real binary, with
//! real cargo/rustc (target wasm32-wasip1) and wasmtime. The Rust template's
//! dependencies are built once for all test servers (support::rust_cache_dir).

mod support;

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use support::{Reply, Server, assert_error};

/// A first compile may wait for the one-time template build.
const COMPILE_WAIT: Duration = Duration::from_secs(20 * 60);

async fn init(s: &Server, title: &str, body: Value) -> Reply {
    let resp = s
        .client
        .post(format!("{}/api/v1/initialize", s.base))
        .header("Language-Title", title)
        .header("content-type", "application/json")
        .timeout(COMPILE_WAIT)
        .body(body.to_string())
        .send()
        .await
        .expect("initialize");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    Reply { status, body: serde_json::from_str(&text).unwrap_or(Value::String(text)), headers }
}

async fn session(s: &Server, title: &str, body: Value) -> String {
    let r = init(s, title, body).await;
    assert_eq!(r.status, 200, "initialize {title}: {}", r.body);
    r.body["request_id"].as_str().expect("request_id").to_owned()
}

/// Runs without the result cache, so every call really executes.
async fn run(s: &Server, id: &str, params: Value) -> Reply {
    s.execute_with(id, &[("X-Cache-Control", "no-store")], params).await
}

fn debug(script: &str) -> Value {
    json!({ "script_content": script, "context": { "compile_options": { "optimization_level": "debug" } } })
}

/// `lambda_<name>_total{runtime="<runtime>"}` from /metrics (0 when absent).
async fn counter(s: &Server, name: &str, runtime: &str) -> f64 {
    let text = s.get("/metrics").await.body.as_str().unwrap_or_default().to_owned();
    let needle = format!("lambda_{name}_total{{runtime=\"{runtime}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&needle)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

const ADDER: &str = r#"
use serde_json::{Value, json};

pub fn handle(params: Value) -> Value {
    let a = params["a"].as_i64().unwrap_or(0);
    let b = params["b"].as_i64().unwrap_or(0);
    eprintln!("adding {a} and {b}");
    json!({ "sum": a + b })
}
"#;

#[tokio::test]
async fn rust_handler_and_program_forms_report_their_errors() {
    let s = Server::start(&[("LAMBDA_RUST_PRECOMPILE", "false")]);
    let adder = session(&s, "rust-adder", debug(ADDER)).await;
    let r = run(&s, &adder, json!({"a": 2, "b": 40})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["result"], json!({"sum": 42}));
    assert_eq!(r.body["logs"], json!(["adding 2 and 40"]));

    // Result form: an Err is a 460 with its message.
    let checked = r#"
use serde_json::{Value, json};
pub fn handle(params: Value) -> Result<Value, String> {
    let n = params["n"].as_f64().ok_or("n must be a number")?;
    Ok(json!(n.sqrt()))
}"#;
    let id = session(&s, "rust-sqrt", debug(checked)).await;
    assert_eq!(run(&s, &id, json!({"n": 16})).await.body["result"], json!(4.0));
    let e = assert_error(&run(&s, &id, json!({"n": "x"})).await, 460, "RUNTIME_ERROR");
    assert_eq!(e["message"], "n must be a number");

    // A panic is a 460 with the panic message and the user's line.
    let panics = "use serde_json::Value;\n\npub fn handle(params: Value) -> Value {\n    let items: Vec<i64> = vec![];\n    if params[\"boom\"] == true {\n        panic!(\"boom: {}\", items.len());\n    }\n    params\n}\n";
    let id = session(&s, "rust-panics", debug(panics)).await;
    assert_eq!(run(&s, &id, json!({"boom": false})).await.body["result"], json!({"boom": false}));
    let e = assert_error(&run(&s, &id, json!({"boom": true})).await, 460, "RUNTIME_ERROR");
    assert_eq!(e["message"], "panicked: boom: 0", "{e}");
    assert_eq!((e["details"]["line"].clone(), e["details"]["column"].clone()), (json!(6), json!(9)), "{e}");

    // Whole-program form: main reads stdin and prints the result.
    let program = r#"
use std::io::Read;
fn main() {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).unwrap();
    let params: serde_json::Value = serde_json::from_str(&input).unwrap();
    let words = params["text"].as_str().unwrap_or("").split_whitespace().count();
    println!("{}", serde_json::json!({ "words": words }));
}"#;
    let id = session(&s, "rust-words", json!({ "script_content": program })).await;
    let r = run(&s, &id, json!({"text": "one two three"})).await;
    assert_eq!(r.body["result"], json!({"words": 3}), "{}", r.body);

    // rustc errors come back at initialize, at the user's line and column.
    let broken = "use serde_json::Value;\n\npub fn handle(params: Value) -> Value {\n    let x: u32 = \"text\";\n    params\n}\n";
    let r = init(&s, "rust-broken", debug(broken)).await;
    let e = assert_error(&r, 461, "COMPILE_ERROR");
    assert_eq!((e["details"]["line"].clone(), e["details"]["column"].clone()), (json!(4), json!(18)), "{e}");
    assert!(
        e["details"]["diagnostics"][0]["rendered"].as_str().is_some_and(|t| t.contains("src/user.rs:4:18")),
        "{e}"
    );
    // A broken script is not compiled again: its failure is stored.
    let compiles = counter(&s, "compiles", "rust").await;
    assert_error(&init(&s, "rust-broken", debug(broken)).await, 461, "COMPILE_ERROR");
    assert_eq!(counter(&s, "compiles", "rust").await, compiles);

    // Reading host files at compile time is refused.
    let sneaky = "pub fn handle(p: serde_json::Value) -> serde_json::Value { serde_json::json!(include_str!(\"/etc/hostname\")) }";
    let e = assert_error(&init(&s, "rust-sneaky", debug(sneaky)).await, 461, "COMPILE_ERROR");
    assert_eq!(e["details"]["line"], 1);

    // The same script again: no compile, a cache hit.
    let compiles = counter(&s, "compiles", "rust").await;
    let hits = counter(&s, "compile_cache_hits", "rust").await;
    let started = std::time::Instant::now();
    session(&s, "rust-adder", debug(ADDER)).await;
    let repeat = started.elapsed();
    assert_eq!(counter(&s, "compiles", "rust").await, compiles);
    assert_eq!(counter(&s, "compile_cache_hits", "rust").await, hits + 1.0);
    assert!(repeat < Duration::from_secs(2), "repeat initialize took {repeat:?}");

    // Many executions in parallel, each with its own answer.
    let calls = (0..32).map(|i| {
        let s = &s;
        let adder = adder.clone();
        async move { (i, run(s, &adder, json!({"a": i, "b": 1000})).await) }
    });
    for (i, r) in futures::future::join_all(calls).await {
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["result"]["sum"], json!(i + 1000));
    }
    assert!(counter(&s, "instantiations", "rust").await >= 35.0);
}

#[tokio::test]
async fn compile_options_are_honoured_and_validated() {
    let s = Server::start(&[("LAMBDA_RUST_PRECOMPILE", "false")]);
    let flagged = r#"
pub fn handle(_: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "feature1": cfg!(feature = "feature1"), "release": !cfg!(debug_assertions) })
}"#;
    let with =
        |options: Value| json!({ "script_content": flagged, "context": { "compile_options": options } });
    let id =
        session(&s, "rust-flags", with(json!({"features": ["feature1"], "target": "wasm32-wasip1"}))).await;
    assert_eq!(run(&s, &id, json!({})).await.body["result"], json!({"feature1": true, "release": true}));
    let id = session(&s, "rust-flags", with(json!({"optimization_level": "debug"}))).await;
    assert_eq!(run(&s, &id, json!({})).await.body["result"], json!({"feature1": false, "release": false}));

    let e = assert_error(
        &init(&s, "rust-flags", with(json!({"target": "x86_64-unknown-linux-gnu"}))).await,
        400,
        "INVALID_REQUEST",
    );
    assert_eq!(e["details"]["supported"], json!(["wasm32-wasip1"]));
    assert!(e["message"].as_str().is_some_and(|m| m.contains("wasm32-wasip1")), "{e}");
    let e = assert_error(
        &init(&s, "rust-flags", with(json!({"features": ["turbo"]}))).await,
        400,
        "INVALID_REQUEST",
    );
    assert!(e["details"]["supported"].as_array().is_some_and(|f| f.contains(&json!("feature1"))), "{e}");
    assert_error(
        &init(&s, "rust-flags", with(json!({"optimization_level": "max"}))).await,
        400,
        "INVALID_REQUEST",
    );
}

#[tokio::test]
async fn deadlines_and_memory_limits_fail_only_their_own_execution() {
    let s = Server::start(&[("LAMBDA_RUST_PRECOMPILE", "false"), ("LAMBDA_WASM_MEMORY_MB", "32")]);
    let script = r#"
use serde_json::{Value, json};
pub fn handle(params: Value) -> Value {
    if params["spin"] == true {
        let mut n: u64 = 0;
        loop { n = std::hint::black_box(n.wrapping_add(1)); }
    }
    if params["hog"] == true {
        let mut held: Vec<Vec<u8>> = Vec::new();
        loop { held.push(vec![1u8; 1 << 20]); std::hint::black_box(&held); }
    }
    json!("fine")
}"#;
    let body = json!({ "script_content": script, "context": { "timeout_ms": 300, "compile_options": { "optimization_level": "debug" } } });
    let id = session(&s, "rust-bad", body).await;
    let started = std::time::Instant::now();
    let e = assert_error(&run(&s, &id, json!({"spin": true})).await, 504, "TIMEOUT");
    assert_eq!(e["details"]["timeout_ms"], 300);
    assert!(started.elapsed() < Duration::from_secs(3), "the deadline held: {:?}", started.elapsed());
    assert_eq!(run(&s, &id, json!({})).await.body["result"], "fine");

    let e = assert_error(&run(&s, &id, json!({"hog": true})).await, 462, "RESOURCE_LIMIT");
    assert_eq!(e["details"]["limit"], "memory", "{e}");
    assert_eq!(run(&s, &id, json!({})).await.body["result"], "fine");
}

#[tokio::test]
async fn compiled_artifacts_survive_a_restart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let script = format!("{ADDER}\n// restart test {}\n", std::process::id());
    let env = [("LAMBDA_RUST_PRECOMPILE", "false")];
    let mut first = Server::start_in(&data, &env);
    let id = session(&first, "rust-adder", debug(&script)).await;
    assert_eq!(run(&first, &id, json!({"a": 1, "b": 2})).await.body["result"], json!({"sum": 3}));
    assert_eq!(counter(&first, "compiles", "rust").await, 1.0);
    first.stop();
    assert!(
        std::fs::read_dir(data.join("wasm-cache"))
            .expect("wasm-cache")
            .flatten()
            .any(|f| f.path().extension().is_some_and(|e| e == "cwasm")),
        "a precompiled module is kept on disk"
    );

    let second = Server::start_in(&data, &env);
    // The session survives and runs without any compile.
    assert_eq!(run(&second, &id, json!({"a": 5, "b": 5})).await.body["result"], json!({"sum": 10}));
    session(&second, "rust-adder", debug(&script)).await;
    assert_eq!(counter(&second, "compiles", "rust").await, 0.0);
    assert_eq!(counter(&second, "compile_cache_hits", "rust").await, 1.0);
}

/// Copies stdin to stdout: a WASI command whose result is its params.
const ECHO_WAT: &str = include_str!("fixtures/echo.wat");

const HELLO_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "hello\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// Adds one to a byte in its data segment's page and to two bytes in pages
/// that start as zeros, and prints the three counts: `111` on a fresh memory.
const COUNTER_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 4)
  (data (i32.const 64) "0")
  (func $bump (param $at i32) (result i32)
    (i32.store8 (local.get $at) (i32.add (i32.load8_u (local.get $at)) (i32.const 1)))
    (i32.load8_u (local.get $at)))
  (func (export "_start")
    (i32.store8 (i32.const 16) (call $bump (i32.const 64)))
    (i32.store8 (i32.const 17) (i32.add (i32.const 48) (call $bump (i32.const 70000))))
    (i32.store8 (i32.const 18) (i32.add (i32.const 48) (call $bump (i32.const 200000))))
    (i32.store8 (i32.const 19) (i32.const 10))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 4))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// Instance slots are reused, and only the pages a run wrote are reset: no
/// run may see what an earlier one left in memory, in the pages of the
/// module's data or in the ones that start as zeros.
#[tokio::test]
async fn a_wasm_run_never_sees_the_memory_an_earlier_run_wrote() {
    let s = Server::start(&[("LAMBDA_RUST_PRECOMPILE", "false")]);
    let id = session(&s, "wasm-counter", json!({ "script_content": COUNTER_WAT })).await;
    for run_number in 1..=6 {
        let r = run(&s, &id, json!({})).await;
        assert_eq!(r.body["result"], json!(111), "run {run_number}: {}", r.body);
    }
}

/// A module whose native compile needs more memory than the bound (here
/// 48 MiB: a function of 15,000 additions needs 64–128) fails its own
/// initialize with 461; a small module compiles and runs under the same bound.
#[tokio::test]
async fn a_module_too_costly_to_compile_is_461_and_nothing_else_fails() {
    let s = Server::start(&[
        ("LAMBDA_RUST_PRECOMPILE", "false"),
        ("LAMBDA_RUST_PREBUILD", "false"),
        ("LAMBDA_RUST_COMPILE_MEMORY_MB", "48"),
    ]);
    let adds: String =
        (0..15_000).map(|i| format!("(local.set 0 (i32.add (local.get 0) (i32.const {i})))")).collect();
    let costly =
        format!("(module (memory (export \"memory\") 1) (func (export \"_start\") (local i32) {adds}))");
    let e = assert_error(
        &init(&s, "wasm-costly", json!({ "script_content": costly })).await,
        461,
        "COMPILE_ERROR",
    );
    assert_eq!(
        (e["details"]["limit"].clone(), e["details"]["limit_mb"].clone()),
        (json!("compile_memory"), json!(48)),
        "{e}"
    );

    let id = session(&s, "wasm-echo", json!({ "script_content": ECHO_WAT })).await;
    let r = run(&s, &id, json!({"x": 1})).await;
    assert_eq!(r.body["result"], json!({"x": 1}), "{}", r.body);
}

#[tokio::test]
async fn wasm_modules_as_wat_and_base64() {
    let s = Server::start(&[("LAMBDA_RUST_PRECOMPILE", "false"), ("RUST_BACKTRACE", "1")]);
    let id = session(&s, "wasm-echo", json!({ "script_content": ECHO_WAT })).await;
    let r = run(&s, &id, json!({"x": [1, 2]})).await;
    assert_eq!(r.body["result"], json!({"x": [1, 2]}), "{}", r.body);

    let binary = wat::parse_str(ECHO_WAT).expect("valid wat");
    let encoded = base64::engine::general_purpose::STANDARD.encode(binary);
    let id = session(&s, "wasm-echo64", json!({ "script_content": encoded })).await;
    assert_eq!(run(&s, &id, json!({"y": true})).await.body["result"], json!({"y": true}));

    let id = session(&s, "wasm-hello", json!({ "script_content": HELLO_WAT })).await;
    let e = assert_error(&run(&s, &id, json!({})).await, 460, "RUNTIME_ERROR");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("not JSON")), "{e}");

    let e = assert_error(
        &init(
            &s,
            "wasm-bad",
            json!({"script_content": "(module\n  (func (export \"_start\") (i32.bogus)))"}),
        )
        .await,
        461,
        "COMPILE_ERROR",
    );
    assert_eq!(e["details"]["line"], 2, "{e}");
    let e = assert_error(
        &init(&s, "wasm-lib", json!({"script_content": "(module (func (export \"f\")))"})).await,
        461,
        "COMPILE_ERROR",
    );
    assert!(e["message"].as_str().is_some_and(|m| m.contains("_start")), "{e}");
    let e = assert_error(&init(&s, "wasm-net", json!({"script_content": "(module (import \"env\" \"socket\" (func)) (func (export \"_start\")))"})).await, 461, "COMPILE_ERROR");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("socket")), "{e}");
    // Well-formed text that wasmtime's validator refuses, in the compiler process.
    let invalid = json!({"script_content": "(module (func (export \"_start\") (drop (i32.add))))"});
    let e = assert_error(&init(&s, "wasm-invalid", invalid).await, 461, "COMPILE_ERROR");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("type mismatch")), "{e}");

    // A module that declares more memory (3000 pages, 187 MiB) than a run may
    // have (128 MiB) is the script's resource limit, told at initialize.
    let big =
        json!({"script_content": "(module (memory (export \"memory\") 3000) (func (export \"_start\")))"});
    let e = assert_error(&init(&s, "wasm-big", big).await, 462, "RESOURCE_LIMIT");
    assert_eq!(e["details"]["limit"], "memory", "{e}");
    let big_table = json!({"script_content": "(module (table 20000000 funcref) (func (export \"_start\")))"});
    let e = assert_error(&init(&s, "wasm-table", big_table).await, 462, "RESOURCE_LIMIT");
    assert_eq!(e["details"]["limit"], "table", "{e}");

    // A trap's stack trace is the module's, never the host's own backtrace
    // (the test runs with RUST_BACKTRACE set by CI or not).
    let trap = json!({"script_content": "(module (func (export \"_start\") unreachable))"});
    let id = session(&s, "wasm-trap", trap).await;
    let e = assert_error(&run(&s, &id, json!({})).await, 460, "RUNTIME_ERROR");
    let trace = e["details"]["stack_trace"].as_str().unwrap_or_default();
    assert!(trace.contains("unreachable") && !trace.contains(".cargo/registry"), "{e}");
}

#[tokio::test]
async fn rust_validator_is_predefined_with_its_schema() {
    let s = Server::start(&[]);
    let f = s.get("/api/v1/functions/rust-validator").await;
    assert_eq!(f.status, 200, "{}", f.body);
    assert_eq!(f.body["type"], "predefined");
    let id = session(&s, "rust-validator", json!({})).await;
    for example in f.body["examples"].as_array().expect("examples") {
        let r = run(&s, &id, example["params"].clone()).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["result"], example["result"], "{}", r.body);
    }
    let r = run(
        &s,
        &id,
        json!({"data": {"n": 5}, "rules": {"n": {"type": "number", "max": 3}, "s": {"pattern": "^a"}}}),
    )
    .await;
    assert_eq!(
        r.body["result"],
        json!({"valid": false, "errors": [{"field": "n", "message": "must be at most 3"}]})
    );
    let e = assert_error(&run(&s, &id, json!({"data": 1, "rules": {}})).await, 400, "INVALID_PARAMS");
    assert!(e["details"].is_object(), "{e}");

    let h = s.get("/health").await;
    assert_eq!(h.body["components"]["runtimes"]["rust"], "ok", "{}", h.body);
    assert_eq!(h.body["components"]["runtimes"]["wasm"], "ok", "{}", h.body);
}

#[tokio::test]
async fn a_missing_toolchain_is_503_naming_the_fix() {
    let s = Server::start(&[("LAMBDA_CARGO", "/nonexistent/cargo"), ("LAMBDA_RUST_PRECOMPILE", "false")]);
    let script = format!("{ADDER}\n// no toolchain {}\n", std::process::id());
    let e =
        assert_error(&init(&s, "rust-adder", json!({ "script_content": script })).await, 503, "UNAVAILABLE");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("rustup target add wasm32-wasip1")), "{e}");
    let h = s.get("/health").await;
    let reason = &h.body["components"]["runtimes"]["rust"]["reason"];
    assert!(reason.as_str().is_some_and(|m| m.contains("rustup target add wasm32-wasip1")), "{}", h.body);
    // wasm needs no toolchain.
    assert_eq!(h.body["components"]["runtimes"]["wasm"], "ok");
}

#[tokio::test]
async fn a_wasm_execution_whose_client_leaves_stops_and_frees_its_slot() {
    // One instance slot: a guest left running would hold it until its deadline.
    let s = Server::start(&[("LAMBDA_RUST_PRECOMPILE", "false"), ("LAMBDA_WASM_MAX_INSTANCES", "1")]);
    let spin = json!({
        "script_content": "(module (func (export \"_start\") (loop br 0)))",
        "context": { "timeout_ms": 60000 },
    });
    let spinner = session(&s, "wasm-spin", spin).await;
    // Prints `7`, the result.
    let seven = HELLO_WAT.replace(r#""hello\n""#, r#""7\n""#).replace("(i32.const 6)", "(i32.const 2)");
    let quick = json!({ "script_content": seven, "context": { "timeout_ms": 5000 } });
    let quick = session(&s, "wasm-quick", quick).await;

    let gone = s
        .client
        .post(format!("{}/api/v1/execute/{spinner}", s.base))
        .header("X-Cache-Control", "no-store")
        .json(&json!({ "params": {} }))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(gone.is_err(), "the spinner answered: {gone:?}");
    // The server notices the closed connection on its own; the slot must come back
    // long before the spinner's 60 s deadline, and nothing may count it busy.
    let reply = run(&s, &quick, json!({})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["result"], 7);
    let metrics = s.get("/metrics").await.body.as_str().unwrap_or_default().to_owned();
    assert!(metrics.contains("lambda_workers{runtime=\"wasm\",state=\"busy\"} 0"), "{metrics}");
}
