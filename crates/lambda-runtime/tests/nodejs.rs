//! The Node.js script contract on a real `node`: forms, errors, deadlines, crashes, concurrency.

mod common;

use std::time::Duration;

use common::{invocation, start};
use lambda_core::{ErrorCode, Language::Nodejs};
use lambda_runtime::Runtime;
use serde_json::json;

#[tokio::test]
async fn body_form_adds_params() {
    let h = start().await;
    let out = h.run(Nodejs, "return event.params.a + event.params.b;", json!({"a": 2, "b": 3})).await;
    assert_eq!(out.result, json!(5));
    assert!(out.logs.is_empty());
    let out = h.run(Nodejs, "return [event.request_id, event.context.environment];", json!({})).await;
    assert_eq!(out.result, json!(["req-1", "test"]));
    h.shutdown().await;
}

#[tokio::test]
async fn module_forms() {
    let h = start().await;
    let src = "module.exports = async (event) => ({ value: event.params.x * 2 });";
    assert_eq!(h.run(Nodejs, src, json!({"x": 21})).await.result, json!({"value": 42}));
    let src = "exports.handler = async function (event) { return event.params.s.toUpperCase(); };";
    assert_eq!(h.run(Nodejs, src, json!({"s": "hi"})).await.result, json!("HI"));
    let src = "const crypto = require('crypto');\nmodule.exports = (e) => crypto.createHash('sha256').update(e.params.s).digest('hex');";
    let out = h.run(Nodejs, src, json!({"s": "abc"})).await;
    assert_eq!(out.result, json!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    h.shutdown().await;
}

#[tokio::test]
async fn promises_logs_builtins_and_null() {
    let h = start().await;
    let src = "const v = await new Promise((r) => setTimeout(() => r(7), 10));\nreturn v;";
    assert_eq!(h.run(Nodejs, src, json!({})).await.result, json!(7));
    let src =
        "console.log('hello', {a: 1}); console.error('oops'); process.stdout.write('raw\\n'); return 1;";
    let out = h.run(Nodejs, src, json!({})).await;
    assert_eq!(out.logs, vec!["hello { a: 1 }", "oops", "raw"]);
    let src = "const { createHash } = require('crypto'); return createHash('md5').update('a').digest('hex');";
    assert_eq!(h.run(Nodejs, src, json!({})).await.result, json!("0cc175b9c0f1b6a831c399e269772661"));
    assert_eq!(h.run(Nodejs, "const x = 1;", json!({})).await.result, json!(null));
    h.shutdown().await;
}

#[tokio::test]
async fn syntax_error_has_line_and_column() {
    let h = start().await;
    let err = h.prepare(Nodejs, "const a = 1;\nreturn a +;").await.expect_err("does not compile");
    assert_eq!(err.code, ErrorCode::CompileError);
    assert_eq!(err.details["line"], json!(2));
    assert_eq!(err.details["column"], json!(11));
    assert!(err.message.contains("SyntaxError"), "{}", err.message);
    let err =
        h.prepare(Nodejs, "module.exports = (e) => {\n  return e.params +* 2;\n};").await.expect_err("bad");
    assert_eq!((err.code, err.details["line"].clone()), (ErrorCode::CompileError, json!(2)));
    let err = h.prepare(Nodejs, "\nnull.x;\nmodule.exports = () => 1;").await.expect_err("throws on load");
    assert_eq!((err.code, err.details["line"].clone()), (ErrorCode::CompileError, json!(2)));
    h.shutdown().await;
}

#[tokio::test]
async fn thrown_error_is_a_runtime_error() {
    let h = start().await;
    let src = "console.log('before');\nif (event.params.fail) {\n  throw new Error('boom');\n}\nreturn 1;";
    let e = h.fail(Nodejs, src, json!({"fail": true}), ErrorCode::RuntimeError).await;
    assert_eq!(e.error.message, "Error: boom");
    assert_eq!(e.error.details["line"], json!(3));
    assert_eq!(e.error.details["column"], json!(9));
    let stack = e.error.details["stack_trace"].as_str().expect("stack");
    assert!(stack.contains("script.js:3:9"), "{stack}");
    assert_eq!(e.logs, vec!["before"]);
    let script = h.prepare(Nodejs, src).await.expect("prepared");
    assert_eq!(h.invoke(&script, json!({})).await.expect("worker survived").result, json!(1));
    h.shutdown().await;
}

#[tokio::test]
async fn non_serialisable_result_is_a_runtime_error() {
    let h = start().await;
    let e = h.fail(Nodejs, "const o = {}; o.self = o; return o;", json!({}), ErrorCode::RuntimeError).await;
    assert!(e.error.message.contains("not JSON-serialisable"), "{}", e.error.message);
    let e = h.fail(Nodejs, "return 10n;", json!({}), ErrorCode::RuntimeError).await;
    assert!(e.error.message.contains("not JSON-serialisable"), "{}", e.error.message);
    h.shutdown().await;
}

#[tokio::test]
async fn infinite_loop_times_out_and_the_script_still_works() {
    let h = start().await;
    let script =
        h.prepare(Nodejs, "if (event.params.spin) { while (true) {} }\nreturn 'ok';").await.expect("ok");
    let mut inv = invocation(&script, "alice", json!({"spin": true}));
    inv.timeout = Duration::from_millis(300);
    let e = h.rt.invoke(inv).await.expect_err("times out");
    assert_eq!(e.error.code, ErrorCode::Timeout);
    assert_eq!(e.error.details["timeout_ms"], json!(300));
    assert!(e.error.message.contains("300 ms"), "{}", e.error.message);
    assert_eq!(h.invoke(&script, json!({})).await.expect("new worker").result, json!("ok"));
    h.shutdown().await;
}

#[tokio::test]
async fn crashing_or_lying_worker_fails_only_its_invocation() {
    let h = start().await;
    let script =
        h.prepare(Nodejs, "if (event.params.exit) process.exit(3);\nreturn 'alive';").await.expect("ok");
    let e = h.invoke(&script, json!({"exit": true})).await.expect_err("worker exits");
    assert_eq!(e.error.code, ErrorCode::RuntimeError);
    assert!(e.error.message.contains("worker exited unexpectedly"), "{}", e.error.message);
    assert!(e.error.message.contains('3'), "{}", e.error.message);
    assert_eq!(h.invoke(&script, json!({})).await.expect("replaced").result, json!("alive"));

    let src = "if (event.params.lie) require('fs').writeSync(1, 'garbage\\n');\nreturn 'fine';";
    let script = h.prepare(Nodejs, src).await.expect("ok");
    let e = h.invoke(&script, json!({"lie": true})).await.expect_err("malformed frame");
    assert_eq!(e.error.code, ErrorCode::RuntimeError);
    assert_eq!(h.invoke(&script, json!({})).await.expect("replaced").result, json!("fine"));
    h.shutdown().await;
}

#[tokio::test]
async fn concurrent_invokes_are_all_correct() {
    let h = start().await;
    let src = "await new Promise((r) => setTimeout(r, 5));\nreturn event.params.n * event.params.n;";
    let script = h.prepare(Nodejs, src).await.expect("ok");
    let calls = (0..20).map(|n| h.rt.invoke(invocation(&script, "alice", json!({"n": n}))));
    let results = futures::future::join_all(calls).await;
    for (n, r) in results.into_iter().enumerate() {
        assert_eq!(r.expect("ok").result, json!(n * n));
    }
    let counts = h.rt.worker_counts(Nodejs);
    assert!(counts.idle >= 1 && counts.idle <= 4, "{counts:?}");
    assert_eq!(counts.busy, 0);
    h.shutdown().await;
}

#[tokio::test]
async fn owners_never_share_a_worker() {
    let h = start().await;
    let src = "globalThis.count = (globalThis.count || 0) + 1;\nreturn globalThis.count;";
    let script = h.prepare(Nodejs, src).await.expect("ok");
    for expected in 1..=3 {
        let out = h.rt.invoke(invocation(&script, "alice", json!({}))).await.expect("ok");
        assert_eq!(out.result, json!(expected));
    }
    let out = h.rt.invoke(invocation(&script, "bob", json!({}))).await.expect("ok");
    assert_eq!(out.result, json!(1));
    assert!(out.metrics.cold_start);
    let out = h.rt.invoke(invocation(&script, "alice", json!({}))).await.expect("ok");
    assert_eq!(out.result, json!(4));
    assert!(!out.metrics.cold_start);
    h.shutdown().await;
}
