//! End to end: the error contract, predefined functions, listing, health, metrics, config.

mod support;

use serde_json::json;
use support::{Server, assert_error};

#[tokio::test]
async fn request_errors_follow_the_contract() {
    let s = Server::start(&[("MAX_SCRIPT_SIZE", "1000")]);
    let no_title = s.post("/api/v1/initialize", &[], &json!({"script_content": "return 1"})).await;
    assert_error(&no_title, 400, "INVALID_REQUEST");
    let unknown = s.initialize("cobol-payroll", json!({"script_content": "x"})).await;
    let e = assert_error(&unknown, 400, "INVALID_REQUEST");
    assert_eq!(e["details"]["supported"], json!(["nodejs", "python", "rust", "wasm"]));
    let bad_title = s.initialize("nodejs", json!({"script_content": "x"})).await;
    assert_error(&bad_title, 400, "INVALID_REQUEST");
    let malformed = s
        .request(
            reqwest::Method::POST,
            "/api/v1/initialize",
            &[("Language-Title", "nodejs-x")],
            Some("{\"script_content\": ".into()),
        )
        .await;
    assert_error(&malformed, 400, "INVALID_REQUEST");
    let wrong_type = s.initialize("nodejs-x", json!({"script_content": 5})).await;
    assert_error(&wrong_type, 400, "INVALID_REQUEST");
    let big = s
        .initialize("nodejs-big", json!({"script_content": format!("return '{}';", "a".repeat(2000))}))
        .await;
    assert_error(&big, 413, "PAYLOAD_TOO_LARGE");
    let bad_timeout =
        s.initialize("nodejs-x", json!({"context": {"timeout_ms": -5}, "script_content": "return 1"})).await;
    assert_error(&bad_timeout, 400, "INVALID_REQUEST");
    let unknown_session = s.execute("no-such-session", json!({})).await;
    assert_error(&unknown_session, 404, "NOT_FOUND");
    assert_error(&s.get("/api/v1/sessions/nope").await, 404, "NOT_FOUND");
    let no_function = s.initialize("nodejs-unregistered", json!({})).await;
    assert_error(&no_function, 404, "NOT_FOUND");
    let bad_cache = s.session("nodejs-one", "return 1").await;
    let r = s.execute_with(&bad_cache, &[("X-Cache-Control", "sometimes")], json!({})).await;
    assert_error(&r, 400, "INVALID_REQUEST");
    let r = s
        .request(reqwest::Method::POST, &format!("/api/v1/execute/{bad_cache}"), &[], Some("[1,".into()))
        .await;
    assert_error(&r, 400, "INVALID_REQUEST");
    assert_error(&s.get("/api/v1/nothing-here").await, 404, "NOT_FOUND");
}

#[tokio::test]
async fn predefined_functions_run_with_schema_validation() {
    let s = Server::start(&[]);
    let calc = s.initialize("nodejs-calculator", json!({})).await;
    assert_eq!(calc.status, 200, "{}", calc.body);
    let calc = calc.body["request_id"].as_str().expect("id").to_owned();
    let r = s.execute(&calc, json!({"operation": "add", "values": [1, 2, 3]})).await;
    assert_eq!(r.body["result"], json!({"value": 6}), "{}", r.body);
    let r = s.execute(&calc, json!({"operation": "divide", "values": [1, 0]})).await;
    let e = assert_error(&r, 460, "RUNTIME_ERROR");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("division by zero")), "{e}");
    let r = s.execute(&calc, json!({"operation": "add", "values": [1e308, 1e308]})).await;
    let e = assert_error(&r, 460, "RUNTIME_ERROR");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("out of the range")), "{e}");
    let r = s.execute(&calc, json!({"operation": "power", "values": [1]})).await;
    let e = assert_error(&r, 400, "INVALID_PARAMS");
    assert_eq!(e["details"]["path"], "/operation", "{e}");

    let text = s.initialize("python-textprocessor", json!({})).await;
    let text = text.body["request_id"].as_str().expect("id").to_owned();
    let r = s.execute(&text, json!({"text": "hello big world", "operation": "word_count"})).await;
    assert_eq!(r.body["result"], json!({"value": 3}), "{}", r.body);
    let r = s.execute(&text, json!({"text": "Hi", "operation": "uppercase"})).await;
    assert_eq!(r.body["result"], json!({"value": "HI"}), "{}", r.body);
    assert_error(&s.execute(&text, json!({"operation": "uppercase"})).await, 400, "INVALID_PARAMS");

    // A session that brings its own script is not bound by the function's schema.
    let own = s.session("nodejs-calculator", "return event.params.anything;").await;
    let r = s.execute(&own, json!({"anything": 42})).await;
    assert_eq!(r.body["result"], 42, "{}", r.body);
}

#[tokio::test]
async fn functions_are_listed_filtered_and_paged() {
    let s = Server::start(&[]);
    let r = s.get("/api/v1/functions").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["total"], 3, "{}", r.body);
    assert_eq!((r.body["page"].clone(), r.body["per_page"].clone()), (json!(1), json!(20)));
    let r = s
        .initialize("python-mine", json!({"context": {"user_id": "alice"}, "script_content": "result = 1"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let r = s.get("/api/v1/functions?type=dynamic").await;
    assert_eq!(r.body["total"], 1, "{}", r.body);
    let f = &r.body["functions"][0];
    assert_eq!(
        (f["language"].clone(), f["title"].clone(), f["type"].clone()),
        (json!("python"), json!("mine"), json!("dynamic"))
    );
    assert_eq!(s.get("/api/v1/functions?user_id=alice").await.body["total"], 1);
    assert_eq!(s.get("/api/v1/functions?language=nodejs").await.body["total"], 1);
    let page = s.get("/api/v1/functions?per_page=1&page=2").await;
    assert_eq!(
        (page.body["total"].clone(), page.body["functions"].as_array().map(Vec::len)),
        (json!(4), Some(1))
    );
    assert_error(&s.get("/api/v1/functions?per_page=500").await, 400, "INVALID_REQUEST");
    assert_error(&s.get("/api/v1/functions?type=other").await, 400, "INVALID_REQUEST");

    let one = s.get("/api/v1/functions/nodejs-calculator").await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body["type"], "predefined");
    assert!(one.body["schema"]["params"].is_object(), "{}", one.body);
    assert!(one.body["examples"].as_array().is_some_and(|e| !e.is_empty()));
    assert!(one.body["script_content"].as_str().is_some_and(|s| s.contains("module.exports")));
    assert_error(&s.get("/api/v1/functions/nodejs-nothing").await, 404, "NOT_FOUND");

    // Someone else's script under a taken title does not change the registered function.
    s.session("python-mine", "result = 2").await;
    let mine = s.get("/api/v1/functions/python-mine").await;
    assert_eq!(mine.body["script_content"], "result = 1");
}

#[tokio::test]
async fn health_and_metrics() {
    let s = Server::start(&[]);
    let h = s.get("/health").await;
    assert_eq!(h.status, 200, "{}", h.body);
    assert_eq!(h.body["status"], "ok");
    assert_eq!(h.body["components"]["storage"], "sqlite");
    assert_eq!(h.body["components"]["postgres"], "disabled");
    assert_eq!(h.body["components"]["redis"], "disabled");
    assert_eq!(h.body["components"]["runtimes"]["nodejs"], "ok");
    assert_eq!(h.body["components"]["runtimes"]["python"], "ok");

    let id = s.session("nodejs-m", "return 1;").await;
    s.execute(&id, json!({})).await;
    s.execute(&id, json!({})).await;
    assert_eq!(s.get("/api/v1/nowhere").await.status, 404);
    for method in ["BREW", "BREW2"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        assert_eq!(s.request(method, "/api/v1/nowhere", &[], None).await.status, 404);
    }
    let m = s.get("/metrics").await;
    assert_eq!(m.status, 200);
    let text = m.body.as_str().expect("text").to_owned();
    for needle in [
        "lambda_http_requests_total{endpoint=\"/api/v1/execute/{request_id}\",method=\"POST\",status=\"200\"} 2",
        "lambda_http_requests_total{endpoint=\"unmatched\",method=\"GET\",status=\"404\"} 1",
        // Methods outside the standard set share one series.
        "lambda_http_requests_total{endpoint=\"unmatched\",method=\"OTHER\",status=\"404\"} 2",
        "lambda_errors_total{code=\"NOT_FOUND\"} 3",
        "lambda_http_request_duration_seconds_count{endpoint=\"/api/v1/initialize\"} 1",
        "lambda_executions_total{runtime=\"nodejs\",outcome=\"success\"} 1",
        "lambda_cache_requests_total{result=\"hit\"} 1",
        "lambda_cache_requests_total{result=\"miss\"} 1",
        "lambda_sessions_active 1",
        "lambda_sessions_created_total{runtime=\"nodejs\"} 1",
        "lambda_workers{runtime=\"python\",state=\"generic\"}",
        "lambda_worker_starts_total{runtime=\"nodejs\",kind=\"warm\"} 1",
        "lambda_http_connections{state=\"active\"}",
        "lambda_http_connections{state=\"parked\"}",
        "lambda_http_connection_parks_total",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    // Prometheus text 0.0.4 unless the scraper asks for OpenMetrics.
    let content_type = |r: &support::Reply| {
        r.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    };
    assert!(content_type(&m).starts_with("text/plain; version=0.0.4"), "{:?}", m.headers);
    assert!(text.contains("# TYPE lambda_http_requests_total counter") && !text.contains("# EOF"));
    let accept = [("Accept", "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5")];
    let open = s.request(reqwest::Method::GET, "/metrics", &accept, None).await;
    assert!(content_type(&open).starts_with("application/openmetrics-text"), "{:?}", open.headers);
    assert!(open.body.as_str().is_some_and(|t| t.ends_with("# EOF\n")));
}

#[test]
fn bad_config_stops_the_start_naming_the_variable() {
    for (var, value) in [
        ("PORT", "eighty"),
        ("SESSION_EXPIRY_SECONDS", "0"),
        ("RUNTIME_MAPPINGS", "/nonexistent.json"),
        ("LAMBDA_ASYNC_THREADS", "0"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lambda"))
            .arg("serve")
            .env(var, value)
            .env("LAMBDA_DATA_DIR", std::env::temp_dir().join("lambda-bad-config"))
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(64), "{var}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let named = stderr.contains(var) || (var == "PORT" && stderr.contains("--port"));
        assert!(named, "{var}: {stderr}");
    }
}

#[test]
fn serve_help_documents_every_variable() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lambda"))
        .args(["serve", "--help"])
        .output()
        .expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "HOST",
        "PORT",
        "LAMBDA_DATA_DIR",
        "SESSION_EXPIRY_SECONDS",
        "RUNTIME_TIMEOUT_SECONDS",
        "MAX_SCRIPT_SIZE",
        "CACHE_TTL",
        "DB_LOGGING_ENABLED",
        "METRICS_PORT",
        "RUNTIME_MAPPINGS",
        "DATABASE_URL",
        "REDIS_URL",
    ] {
        assert!(help.contains(&format!("[env: {var}")), "--help lacks {var}:\n{help}");
    }
    assert!(help.contains("RUST_LOG"));
}
