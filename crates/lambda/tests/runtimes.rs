//! End to end: Node.js and Python scripts in the real interpreters, over HTTP.

mod support;

use serde_json::json;
use support::{Server, assert_error};

#[tokio::test]
async fn nodejs_body_and_module_forms() {
    let s = Server::start(&[]);
    let body = s
        .session(
            "nodejs-adder",
            "console.log('adding', event.params.a); return event.params.a + event.params.b;",
        )
        .await;
    let r = s.execute(&body, json!({"a": 2, "b": 3})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["result"], 5);
    assert_eq!(r.body["cached"], false);
    assert_eq!(r.body["language_title"], "nodejs-adder");
    assert_eq!(r.body["request_id"], body.as_str());
    assert!(r.body["execution_time"].is_u64());
    assert_eq!(r.body["logs"], json!(["adding 2"]));

    let module = s
        .session("nodejs-mod", "const crypto = require('crypto');\nmodule.exports = async (event) => ({ h: crypto.createHash('sha256').update(event.params.s).digest('hex').slice(0, 8), ctx: event.context.environment, id: event.request_id });")
        .await;
    let r = s.execute(&module, json!({"s": "abc"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["result"]["h"], "ba7816bf");
    assert_eq!(r.body["result"]["id"], module.as_str());

    let handler = s.session("js-handler", "exports.handler = async (event) => { await new Promise(r => setTimeout(r, 5)); return undefined; };").await;
    let r = s.execute(&handler, json!({})).await;
    assert_eq!((r.status, r.body["result"].clone()), (200, json!(null)), "{}", r.body);
}

/// The README starts the service with the default `LAMBDA_DATA_DIR=./data`,
/// relative to where it runs; the workers, which run in a root of their own,
/// must still find their hosts.
#[tokio::test]
async fn scripts_run_with_a_data_dir_relative_to_the_working_directory() {
    let cwd = tempfile::tempdir().expect("tempdir");
    let s = Server::start_from(cwd.path(), std::path::Path::new("./data"), &[]);
    for (title, script) in [
        ("nodejs-adder", "return event.params.a + event.params.b;"),
        ("python-adder", "result = params['a'] + params['b']"),
    ] {
        let id = s.session(title, script).await;
        let r = s.execute(&id, json!({"a": 2, "b": 3})).await;
        assert_eq!((r.status, r.body["result"].clone()), (200, json!(5)), "{title}: {}", r.body);
    }
    assert!(cwd.path().join("data/lambda.db").exists(), "the store is not in the relative data dir");
}

#[tokio::test]
async fn python_script_and_handler_forms() {
    let s = Server::start(&[]);
    let script = s.session("python-words", "print('counting')\nresult = len(params['text'].split())").await;
    let r = s.execute(&script, json!({"text": "a b c"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["result"], 3);
    assert_eq!(r.body["logs"], json!(["counting"]));

    let one = s
        .session(
            "python-one",
            "import math\ndef handle(params):\n    return {'root': math.isqrt(params['n'])}",
        )
        .await;
    let r = s.execute(&one, json!({"n": 17})).await;
    assert_eq!(r.body["result"], json!({"root": 4}), "{}", r.body);

    let id = s
        .initialize(
            "python-two",
            json!({"context": {"environment": "staging"}, "script_content": "def handle(params, context):\n    return context['environment']"}),
        )
        .await;
    let id = id.body["request_id"].as_str().expect("id").to_owned();
    let r = s.execute(&id, json!({})).await;
    assert_eq!(r.body["result"], "staging", "{}", r.body);

    // `async def handle` is awaited, like a Node.js promise.
    let script =
        "import asyncio\nasync def handle(params):\n    await asyncio.sleep(0)\n    return params['n'] * 2";
    let id = s.session("python-async", script).await;
    assert_eq!(s.execute(&id, json!({"n": 21})).await.body["result"], 42);
    assert_eq!(s.execute(&id, json!({"n": 5})).await.body["result"], 10);

    // A result too deep to encode fails its own execute, and the worker lives on.
    let script = "def handle(params):\n    r = []\n    for _ in range(params['depth']):\n        r = [r]\n    return r";
    let id = s.session("python-deep", script).await;
    let e = assert_error(&s.execute(&id, json!({"depth": 5000})).await, 460, "RUNTIME_ERROR");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("not JSON-serialisable")), "{e}");
    assert_eq!(s.execute(&id, json!({"depth": 1})).await.body["result"], json!([[]]));
}

#[tokio::test]
async fn compile_errors_are_461_with_position() {
    let s = Server::start(&[]);
    let r = s.initialize("nodejs-broken", json!({"script_content": "const a = 1;\nreturn a +;"})).await;
    let e = assert_error(&r, 461, "COMPILE_ERROR");
    assert_eq!(e["details"]["line"], 2, "{e}");
    assert!(e["details"]["column"].is_u64(), "{e}");

    let r = s.initialize("python-broken", json!({"script_content": "x = 1\ny = (2 +\n"})).await;
    let e = assert_error(&r, 461, "COMPILE_ERROR");
    assert!(e["details"]["line"].as_u64().is_some_and(|l| l >= 2), "{e}");
}

#[tokio::test]
async fn thrown_errors_are_460_with_stack() {
    let s = Server::start(&[]);
    let id =
        s.session("nodejs-thrower", "const x = 1;\nthrow new Error('bad input ' + event.params.n);").await;
    let r = s.execute(&id, json!({"n": 7})).await;
    let e = assert_error(&r, 460, "RUNTIME_ERROR");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("bad input 7")), "{e}");
    assert!(e["details"]["stack_trace"].as_str().is_some_and(|t| !t.is_empty()), "{e}");
    assert_eq!(e["details"]["line"], 2, "{e}");
    assert_eq!(r.body["request_id"], id.as_str());

    let id = s.session("python-raiser", "def handle(params):\n    raise ValueError('nope')").await;
    let r = s.execute(&id, json!({})).await;
    let e = assert_error(&r, 460, "RUNTIME_ERROR");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("nope")), "{e}");
    assert_eq!((e["details"]["line"].clone(), e["details"]["column"].clone()), (json!(2), json!(5)), "{e}");
}

#[tokio::test]
async fn timeout_is_504_and_worker_is_replaced() {
    let s = Server::start(&[]);
    for (title, script) in [
        ("nodejs-spin", "if (event.params.spin) { while (true) {} } return 'ok';"),
        ("python-spin", "if params.get('spin'):\n    while True:\n        pass\nresult = 'ok'"),
    ] {
        let r = s.initialize(title, json!({"context": {"timeout_ms": 300}, "script_content": script})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let id = r.body["request_id"].as_str().expect("id").to_owned();
        let r = s.execute(&id, json!({"spin": true})).await;
        let e = assert_error(&r, 504, "TIMEOUT");
        assert_eq!(e["details"]["timeout_ms"], 300, "{e}");
        let r = s.execute(&id, json!({"spin": false})).await;
        assert_eq!((r.status, r.body["result"].clone()), (200, json!("ok")), "{title}: {}", r.body);
    }
}

#[tokio::test]
async fn concurrent_executes_of_one_session_are_all_right() {
    let s = Server::start(&[]);
    for (title, script) in [
        ("nodejs-mul", "await new Promise(r => setTimeout(r, 10)); return event.params.n * 2;"),
        ("python-mul", "import time\ntime.sleep(0.01)\nresult = params['n'] * 2"),
    ] {
        let id = s.session(title, script).await;
        let calls = (0..24).map(|n| {
            let s = &s;
            let id = id.clone();
            async move { (n, s.execute_with(&id, &[("X-Cache-Control", "no-store")], json!({"n": n})).await) }
        });
        for (n, r) in futures::future::join_all(calls).await {
            assert_eq!((r.status, r.body["result"].clone()), (200, json!(n * 2)), "{title}: {}", r.body);
        }
    }
}

#[tokio::test]
async fn a_crashing_script_fails_alone() {
    let s = Server::start(&[]);
    let good = s.session("python-good", "result = params['x'] + 1").await;
    let bad = s.session("nodejs-exit", "if (event.params.exit) process.exit(3); return 'alive';").await;
    let r = s.execute(&bad, json!({"exit": true})).await;
    assert_error(&r, 460, "RUNTIME_ERROR");
    let r = s.execute(&bad, json!({"exit": false})).await;
    assert_eq!(r.body["result"], "alive", "{}", r.body);
    let r = s.execute(&good, json!({"x": 1})).await;
    assert_eq!(r.body["result"], 2, "{}", r.body);
}
