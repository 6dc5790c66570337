//! Pools and limits of the local runtime: output and result bounds, generic refill,
//! capacity, eviction, reaping, health and shutdown.

mod common;

use std::time::Duration;

use common::{invocation, script, start, start_with};
use lambda_core::{ErrorCode, Language, Limits};
use lambda_runtime::{
    LocalRuntime, LocalRuntimeConfig, PrepareRequest, Runtime, RuntimeHealth, WorkerCounts,
};
use serde_json::json;

/// Waits (bounded) until `check` holds for the language's counts.
async fn eventually(
    rt: &LocalRuntime,
    lang: Language,
    check: impl Fn(&WorkerCounts) -> bool,
) -> WorkerCounts {
    for _ in 0..200 {
        let counts = rt.worker_counts(lang);
        if check(&counts) {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("counts never matched: {:?}", rt.worker_counts(lang));
}

fn small_limits() -> Limits {
    Limits { max_log_lines: 5, max_log_bytes: 1024, max_result_bytes: 1000, ..Limits::default() }
}

#[tokio::test]
async fn output_is_truncated_at_the_bounds() {
    let h = start_with(|c| c.limits = small_limits()).await;
    let out =
        h.run(Language::Nodejs, "for (let i = 0; i < 100; i++) console.log(i);\nreturn 1;", json!({})).await;
    assert_eq!(out.logs, vec!["0", "1", "2", "3", "4", "[output truncated]"]);
    let out = h.run(Language::Python, "print('x' * 5000)\nprint('y')\nresult = 1", json!({})).await;
    assert_eq!(out.logs, vec!["[output truncated]"]);
    h.shutdown().await;
}

#[tokio::test]
async fn result_over_the_bound_is_a_resource_limit() {
    let h = start_with(|c| c.limits = small_limits()).await;
    for (lang, src) in
        [(Language::Nodejs, "return 'x'.repeat(5000);"), (Language::Python, "result = 'x' * 5000")]
    {
        let e = h.fail(lang, src, json!({}), ErrorCode::ResourceLimit).await;
        assert_eq!(e.error.details["limit"], json!("result"));
    }
    // A script that bypasses the host and floods the channel hits the frame bound.
    let src = "require('fs').writeSync(1, 'z'.repeat(200000));\nreturn 1;";
    let e = h.fail(Language::Nodejs, src, json!({}), ErrorCode::ResourceLimit).await;
    assert_eq!(e.error.details["limit"], json!("result"));
    assert_eq!(h.run(Language::Python, "result = 'small'", json!({})).await.result, json!("small"));
    h.shutdown().await;
}

#[tokio::test]
async fn generic_pool_is_refilled_and_counts_track_starts() {
    let h = start_with(|c| c.generic_per_language = 2).await;
    for lang in [Language::Nodejs, Language::Python] {
        assert_eq!(h.rt.worker_counts(lang).generic, 2);
        assert_eq!(h.rt.health(lang), RuntimeHealth::Ok);
    }
    let s = h.prepare(Language::Python, "result = 1").await.expect("ok");
    eventually(&h.rt, Language::Python, |c| c.generic == 2 && c.idle == 1).await;
    h.invoke(&s, json!({})).await.expect("warm");
    // Never prepared: the invocation prepares a worker itself.
    let cold = script(Language::Python, "result = 2");
    let out = h.rt.invoke(invocation(&cold, "alice", json!({}))).await.expect("cold");
    assert!(out.metrics.cold_start);
    let out = h.rt.invoke(invocation(&cold, "alice", json!({}))).await.expect("warm");
    assert!(!out.metrics.cold_start);
    let counts = eventually(&h.rt, Language::Python, |c| c.generic == 2).await;
    assert_eq!((counts.idle, counts.busy, counts.cold_starts, counts.warm_starts), (2, 0, 1, 2));
    h.shutdown().await;
}

#[tokio::test]
async fn full_pool_evicts_the_least_recently_used_idle_worker() {
    let h = start_with(|c| {
        c.generic_per_language = 0;
        c.max_workers = 1;
    })
    .await;
    let a = h.prepare(Language::Nodejs, "return 'a';").await.expect("a");
    let b = h.prepare(Language::Nodejs, "return 'b';").await.expect("b evicts a");
    assert_eq!(h.invoke(&b, json!({})).await.expect("b").result, json!("b"));
    let out = h.invoke(&a, json!({})).await.expect("a again, evicting b");
    assert_eq!(out.result, json!("a"));
    assert!(out.metrics.cold_start);
    assert_eq!(h.rt.worker_counts(Language::Nodejs).idle, 1);
    h.shutdown().await;
}

#[tokio::test]
async fn full_pool_takes_the_slot_of_another_languages_generic_worker() {
    let h = start_with(|c| c.max_workers = 2).await;
    let slow = h
        .prepare(Language::Nodejs, "await new Promise((r) => setTimeout(r, 1500));\nreturn 1;")
        .await
        .expect("ok");
    let busy = tokio::spawn({
        let rt = h.rt.clone();
        let inv = invocation(&slow, "alice", json!({}));
        async move { rt.invoke(inv).await }
    });
    eventually(&h.rt, Language::Nodejs, |c| c.busy == 1).await;
    assert_eq!(h.rt.worker_counts(Language::Python).generic, 1);
    assert_eq!(h.run(Language::Nodejs, "return 2;", json!({})).await.result, json!(2));
    assert_eq!(h.rt.worker_counts(Language::Python).generic, 0);
    assert_eq!(busy.await.expect("join").expect("slow one finishes").result, json!(1));
    h.shutdown().await;
}

#[tokio::test]
async fn no_capacity_is_unavailable_at_the_deadline() {
    let h = start_with(|c| {
        c.generic_per_language = 0;
        c.max_workers = 1;
    })
    .await;
    let slow = h.prepare(Language::Python, "import time\ntime.sleep(3)\nresult = 1").await.expect("ok");
    let busy = tokio::spawn({
        let rt = h.rt.clone();
        let inv = invocation(&slow, "alice", json!({}));
        async move { rt.invoke(inv).await }
    });
    eventually(&h.rt, Language::Python, |c| c.busy == 1).await;
    let other = script(Language::Python, "result = 2");
    let mut inv = invocation(&other, "bob", json!({}));
    inv.timeout = Duration::from_millis(300);
    let e = h.rt.invoke(inv).await.expect_err("no worker");
    assert_eq!(e.error.code, ErrorCode::Unavailable);
    assert_eq!(busy.await.expect("join").expect("slow one finishes").result, json!(1));
    h.shutdown().await;
}

#[tokio::test]
async fn idle_workers_are_reaped() {
    let h = start_with(|c| c.idle_timeout = Duration::from_millis(200)).await;
    h.run(Language::Nodejs, "return 1;", json!({})).await;
    eventually(&h.rt, Language::Nodejs, |c| c.idle == 0 && c.generic == 1).await;
    h.shutdown().await;
}

#[tokio::test]
async fn missing_interpreter_and_unserved_languages_are_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LocalRuntimeConfig {
        node_path: common::interpreter(Language::Nodejs).await,
        python_path: dir.path().join("no-such-python"),
        work_dir: dir.path().to_path_buf(),
        generic_per_language: 0, // the interpreters are still checked once at start
        ..LocalRuntimeConfig::default()
    };
    let rt = LocalRuntime::start(config).await.expect("starts anyway");
    assert_eq!(rt.health(Language::Nodejs), RuntimeHealth::Ok);
    assert!(matches!(rt.health(Language::Python), RuntimeHealth::Unavailable(_)));
    let py = script(Language::Python, "result = 1");
    let e = rt.prepare(PrepareRequest { script: py, owner: "a".into() }).await.expect_err("no python");
    assert_eq!(e.code, ErrorCode::Unavailable);
    let rs = script(Language::Rust, "pub fn handle() {}");
    let e = rt.invoke(invocation(&rs, "a", json!({}))).await.expect_err("no rust here");
    assert_eq!(
        (e.error.code, e.error.message.as_str()),
        (ErrorCode::Unavailable, "runtime rust is not available")
    );
    rt.shutdown().await;
    let js = script(Language::Nodejs, "return 1;");
    let e = rt.invoke(invocation(&js, "a", json!({}))).await.expect_err("shut down");
    assert_eq!(e.error.code, ErrorCode::Unavailable);
    assert_eq!(rt.worker_counts(Language::Nodejs).generic, 0);
}

#[tokio::test]
async fn shutdown_kills_busy_workers() {
    let h = start().await;
    let s = h
        .prepare(Language::Nodejs, "await new Promise((r) => setTimeout(r, 60000));\nreturn 1;")
        .await
        .expect("ok");
    eventually(&h.rt, Language::Nodejs, |c| c.idle == 1).await; // loaded ahead of the execute
    let rt = h.rt.clone();
    let call = tokio::spawn(async move { rt.invoke(invocation(&s, "alice", json!({}))).await });
    eventually(&h.rt, Language::Nodejs, |c| c.busy == 1).await;
    h.rt.shutdown().await;
    let e = call.await.expect("join").expect_err("killed");
    assert_eq!(e.error.code, ErrorCode::RuntimeError);
}

/// One worker per script, so that concurrent requests of a script queue in its pipeline.
async fn one_worker_per_script() -> common::Harness {
    start_with(|c| {
        c.max_workers_per_script = 1;
        c.pipeline_depth = 8;
    })
    .await
}

#[tokio::test]
async fn concurrent_requests_queue_on_one_worker_and_all_answer() {
    let h = one_worker_per_script().await;
    let s = h.prepare(Language::Python, "result = params['n'] * 2").await.expect("ok");
    let runs = (0..16).map(|n| h.rt.invoke(invocation(&s, "alice", json!({"n": n}))));
    let results = futures::future::join_all(runs).await;
    let got: Vec<_> = results.into_iter().map(|r| r.expect("answered").result).collect();
    assert_eq!(got, (0..16).map(|n| json!(n * 2)).collect::<Vec<_>>());
    let counts = h.rt.worker_counts(Language::Python);
    assert_eq!((counts.idle, counts.busy), (1, 0), "one worker served them all: {counts:?}");
    assert_eq!(counts.warm_starts + counts.cold_starts, 16);
    h.shutdown().await;
}

#[tokio::test]
async fn requests_queued_behind_a_hung_one_run_on_a_new_worker() {
    let h = one_worker_per_script().await;
    let src = "if (event.params.hang) for (;;) {}\nreturn event.params.n;";
    let s = h.prepare(Language::Nodejs, src).await.expect("ok");
    let mut hung = invocation(&s, "alice", json!({"hang": true}));
    hung.timeout = Duration::from_millis(600);
    let hung = tokio::spawn({
        let rt = h.rt.clone();
        async move { rt.invoke(hung).await }
    });
    eventually(&h.rt, Language::Nodejs, |c| c.busy == 1).await;
    let queued = (0..3).map(|n| h.rt.invoke(invocation(&s, "alice", json!({"n": n}))));
    let queued = futures::future::join_all(queued).await;
    let e = hung.await.expect("join").expect_err("times out");
    assert_eq!(e.error.code, ErrorCode::Timeout);
    let got: Vec<_> = queued.into_iter().map(|r| r.expect("ran after the kill").result).collect();
    assert_eq!(got, [json!(0), json!(1), json!(2)]);
    h.shutdown().await;
}

#[tokio::test]
async fn a_worker_killed_mid_queue_keeps_the_answers_it_gave() {
    let h = one_worker_per_script().await;
    let src =
        "import os, time\nif params.get('exit'):\n    os._exit(3)\ntime.sleep(0.05)\nresult = params['n']";
    let s = h.prepare(Language::Python, src).await.expect("ok");
    let runs = (0..6).map(|n| {
        let params = if n == 3 { json!({"exit": true, "n": n}) } else { json!({"n": n}) };
        h.rt.invoke(invocation(&s, "alice", params))
    });
    let results = futures::future::join_all(runs).await;
    for (n, r) in results.into_iter().enumerate() {
        match (n, r) {
            (3, Err(e)) => assert_eq!(e.error.code, ErrorCode::RuntimeError, "{:?}", e.error),
            (3, Ok(out)) => panic!("the exiting request answered {:?}", out.result),
            (n, r) => assert_eq!(r.map(|o| o.result).map_err(|e| e.error), Ok(json!(n)), "request {n}"),
        }
    }
    h.shutdown().await;
}

#[tokio::test]
async fn initialize_compiles_in_the_checker_and_loads_ahead() {
    let h = start().await;
    // The checker only compiles: a script that kills its process on load is fine to initialize.
    let s = h.prepare(Language::Python, "import os\nos._exit(1)").await.expect("compiles");
    let e = h.invoke(&s, json!({})).await.expect_err("exits when it runs");
    assert_eq!(e.error.code, ErrorCode::RuntimeError);
    let e = h.prepare(Language::Python, "result = (").await.expect_err("syntax error");
    assert_eq!(e.code, ErrorCode::CompileError);
    // A body-form script is loaded into a generic worker before its first execute.
    let s = h.prepare(Language::Nodejs, "return event.params.n + 1;").await.expect("compiles");
    eventually(&h.rt, Language::Nodejs, |c| c.idle == 1).await;
    let out = h.invoke(&s, json!({"n": 1})).await.expect("runs");
    assert_eq!((out.result, out.metrics.cold_start), (json!(2), false));
    // A module-form script still loads at initialize, so its load errors are answered there.
    let e = h.prepare(Language::Nodejs, "module.exports = 42;").await.expect_err("not a function");
    assert_eq!(e.code, ErrorCode::CompileError);
    h.shutdown().await;
}

#[tokio::test]
async fn a_forged_answer_fails_its_own_request_not_the_ones_behind_it() {
    let h = one_worker_per_script().await;
    let src = "if (event.params.forge) require('fs').writeSync(1, '{\"ok\":true,\"result\":\"forged\"}\\n');\n\
               await new Promise((r) => setTimeout(r, 20));\nreturn event.params.n;";
    let s = h.prepare(Language::Nodejs, src).await.expect("ok");
    let runs = (0..5).map(|n| h.rt.invoke(invocation(&s, "alice", json!({"forge": n == 1, "n": n}))));
    let results = futures::future::join_all(runs).await;
    for (n, r) in results.into_iter().enumerate() {
        match (n, r) {
            (1, Err(e)) => assert_eq!(e.error.code, ErrorCode::RuntimeError, "{:?}", e.error),
            (1, Ok(out)) => panic!("the forging request answered {:?}", out.result),
            (n, r) => assert_eq!(r.map(|o| o.result).map_err(|e| e.error), Ok(json!(n)), "request {n}"),
        }
    }
    h.shutdown().await;
}
