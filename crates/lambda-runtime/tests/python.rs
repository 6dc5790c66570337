//! The Python script contract on a real CPython: forms, errors, deadlines, crashes, concurrency.

mod common;

use std::time::Duration;

use common::{invocation, start};
use lambda_core::{ErrorCode, Language::Python};
use lambda_runtime::Runtime;
use serde_json::json;

#[tokio::test]
async fn script_form_sets_result() {
    let h = start().await;
    let out = h.run(Python, "result = len(params['text'].split())", json!({"text": "a b c"})).await;
    assert_eq!(out.result, json!(3));
    let out = h.run(Python, "result = [request_id, context['environment']]", json!({})).await;
    assert_eq!(out.result, json!(["req-1", "test"]));
    assert_eq!(h.run(Python, "x = 1", json!({})).await.result, json!(null));
    h.shutdown().await;
}

#[tokio::test]
async fn handler_forms() {
    let h = start().await;
    let src = "import math\n\ndef handle(params):\n    return {'value': math.floor(params['x'] * 2)}\n";
    assert_eq!(h.run(Python, src, json!({"x": 2.6})).await.result, json!({"value": 5}));
    let src = "def handle(params, context):\n    return [params['a'], context['environment']]\n";
    assert_eq!(h.run(Python, src, json!({"a": 1})).await.result, json!([1, "test"]));
    h.shutdown().await;
}

#[tokio::test]
async fn print_is_captured() {
    let h = start().await;
    let src = "import sys\nprint('hello', params['n'])\nprint('two\\nlines')\nsys.stderr.write('err\\n')\nresult = 1";
    let out = h.run(Python, src, json!({"n": 5})).await;
    assert_eq!(out.logs, vec!["hello 5", "two", "lines", "err"]);
    h.shutdown().await;
}

#[tokio::test]
async fn syntax_error_has_line_and_offset() {
    let h = start().await;
    let err = h.prepare(Python, "x = 1\nif x\n    result = 2").await.expect_err("does not compile");
    assert_eq!(err.code, ErrorCode::CompileError);
    assert_eq!(err.details["line"], json!(2));
    assert_eq!(err.details["column"], json!(5));
    assert!(err.message.contains("SyntaxError"), "{}", err.message);
    let err = h
        .prepare(Python, "import os\n\nraise ValueError('no')\ndef handle(p):\n    return p\n")
        .await
        .expect_err("x");
    assert_eq!(err.code, ErrorCode::CompileError);
    assert_eq!(err.details["line"], json!(3));
    assert!(
        err.message.contains("failed to load") && err.message.contains("ValueError: no"),
        "{}",
        err.message
    );
    h.shutdown().await;
}

#[tokio::test]
async fn exception_has_type_message_traceback_and_line() {
    let h = start().await;
    let src = "def inner(p):\n    return p['x'] / 0\n\ndef handle(params):\n    print('before')\n    return inner(params)\n";
    let e = h.fail(Python, src, json!({"x": 1}), ErrorCode::RuntimeError).await;
    assert_eq!(e.error.message, "ZeroDivisionError: division by zero");
    assert_eq!(e.error.details["line"], json!(2));
    let stack = e.error.details["stack_trace"].as_str().expect("traceback");
    assert!(stack.contains("line 6, in handle") && stack.contains("line 2, in inner"), "{stack}");
    assert!(!stack.contains("host.py"), "{stack}");
    assert_eq!(e.logs, vec!["before"]);
    let e = h.fail(Python, "result = {1, 2}", json!({}), ErrorCode::RuntimeError).await;
    assert!(e.error.message.contains("not JSON-serialisable"), "{}", e.error.message);
    h.shutdown().await;
}

#[tokio::test]
async fn busy_loop_times_out_and_the_script_still_works() {
    let h = start().await;
    let script =
        h.prepare(Python, "if params.get('spin'):\n    while True: pass\nresult = 'ok'").await.expect("ok");
    let mut inv = invocation(&script, "alice", json!({"spin": true}));
    inv.timeout = Duration::from_millis(300);
    let e = h.rt.invoke(inv).await.expect_err("times out");
    assert_eq!(e.error.code, ErrorCode::Timeout);
    assert_eq!(e.error.details["timeout_ms"], json!(300));
    assert_eq!(h.invoke(&script, json!({})).await.expect("new worker").result, json!("ok"));
    h.shutdown().await;
}

#[tokio::test]
async fn os_exit_fails_only_its_invocation() {
    let h = start().await;
    let script = h
        .prepare(Python, "import os\nif params.get('exit'):\n    os._exit(1)\nresult = 'alive'")
        .await
        .expect("ok");
    let e = h.invoke(&script, json!({"exit": true})).await.expect_err("worker exits");
    assert_eq!(e.error.code, ErrorCode::RuntimeError);
    assert!(e.error.message.contains("worker exited unexpectedly"), "{}", e.error.message);
    assert_eq!(h.invoke(&script, json!({})).await.expect("replaced").result, json!("alive"));
    let e = h.fail(Python, "import sys\nsys.exit(2)", json!({}), ErrorCode::RuntimeError).await;
    assert!(e.error.message.contains("SystemExit"), "{}", e.error.message);
    h.shutdown().await;
}

#[tokio::test]
async fn concurrent_invokes_are_all_correct() {
    let h = start().await;
    let script =
        h.prepare(Python, "import time\ntime.sleep(0.005)\nresult = params['n'] * 3").await.expect("ok");
    let calls = (0..20).map(|n| h.rt.invoke(invocation(&script, "alice", json!({"n": n}))));
    for (n, r) in futures::future::join_all(calls).await.into_iter().enumerate() {
        assert_eq!(r.expect("ok").result, json!(n * 3));
    }
    h.shutdown().await;
}

#[tokio::test]
async fn owners_never_share_a_worker() {
    let h = start().await;
    let src = "import builtins\nbuiltins.count = getattr(builtins, 'count', 0) + 1\nresult = builtins.count";
    let script = h.prepare(Python, src).await.expect("ok");
    for expected in 1..=2 {
        assert_eq!(
            h.rt.invoke(invocation(&script, "alice", json!({}))).await.expect("ok").result,
            json!(expected)
        );
    }
    assert_eq!(h.rt.invoke(invocation(&script, "bob", json!({}))).await.expect("ok").result, json!(1));
    h.shutdown().await;
}
