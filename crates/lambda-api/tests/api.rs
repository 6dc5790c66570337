//! In-process API tests: the real router, store, cache and runtime, driven
//! with `oneshot` requests (no sockets).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use lambda_api::{ApiConfig, AppState};
use lambda_cache::MemoryCache;
use lambda_core::Limits;
use lambda_runtime::{LocalRuntime, LocalRuntimeConfig};
use lambda_store::{LogPipeline, PipelineConfig, SqliteStore};
use serde_json::{Value, json};
use tower::ServiceExt;

struct TestApp {
    router: Router,
    _pipeline: LogPipeline,
    _tmp: tempfile::TempDir,
}

impl TestApp {
    async fn new() -> Self {
        Self::with_limits(Limits::default()).await
    }

    async fn with_limits(limits: Limits) -> Self {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Arc::new(SqliteStore::open(&tmp.path().join("lambda.db")).await.expect("store"));
        for f in lambda_api::predefined::shipped() {
            lambda_store::Store::seed_function(store.as_ref(), &f).await.expect("seed");
        }
        let runtime = LocalRuntime::start(LocalRuntimeConfig {
            work_dir: tmp.path().join("runtime"),
            generic_per_language: 1,
            limits: limits.clone(),
            ..LocalRuntimeConfig::default()
        })
        .await
        .expect("runtime");
        let pipeline = LogPipeline::start(
            store.clone(),
            PipelineConfig { spill_path: tmp.path().join("spill.jsonl"), ..PipelineConfig::default() },
        );
        let config = ApiConfig { limits, ..ApiConfig::default() };
        let state =
            AppState::new(config, store, Arc::new(MemoryCache::new(1 << 20)), runtime, pipeline.sink());
        Self { router: lambda_api::router(state, true), _pipeline: pipeline, _tmp: tmp }
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Body::from(body.to_owned())).expect("request");
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (
            status,
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into())),
        )
    }

    async fn initialize(&self, title: &str, body: &str) -> (StatusCode, Value) {
        self.call("POST", "/api/v1/initialize", &[("language-title", title)], body).await
    }
}

#[tokio::test]
async fn missing_language_title() {
    let app = TestApp::new().await;
    let (status, body) =
        app.call("POST", "/api/v1/initialize", &[], r#"{"script_content":"return 1"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    insta::assert_json_snapshot!(body, @r#"
    {
      "error": {
        "code": "INVALID_REQUEST",
        "details": {
          "header": "Language-Title"
        },
        "message": "the Language-Title header is required"
      }
    }
    "#);
}

#[tokio::test]
async fn malformed_json_names_the_position() {
    let app = TestApp::new().await;
    let (status, body) = app.initialize("nodejs-x", "{\n  \"script_content\": ,\n}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "INVALID_REQUEST");
    assert_eq!(body["error"]["details"], json!({"line": 2, "column": 21}));
}

#[tokio::test]
async fn oversized_script_and_body_are_413() {
    let app =
        TestApp::with_limits(Limits { max_script_bytes: 100, max_body_bytes: 200, ..Limits::default() })
            .await;
    let script = json!({ "script_content": "x".repeat(150) }).to_string();
    let (status, body) = app.initialize("nodejs-big", &script).await;
    assert_eq!((status.as_u16(), body["error"]["code"].clone()), (413, json!("PAYLOAD_TOO_LARGE")));
    let huge = json!({ "script_content": "x".repeat(400) }).to_string();
    let (status, _) = app.initialize("nodejs-big", &huge).await;
    assert_eq!(status.as_u16(), 413);

    let (_, init) = app.initialize("nodejs-small", r#"{"script_content":"return 1"}"#).await;
    let id = init["request_id"].as_str().expect("id");
    let params = json!({ "params": { "pad": "y".repeat(300) } }).to_string();
    let (status, body) = app.call("POST", &format!("/api/v1/execute/{id}"), &[], &params).await;
    assert_eq!((status.as_u16(), body["error"]["code"].clone()), (413, json!("PAYLOAD_TOO_LARGE")));
    assert_eq!(body["request_id"], id);
}

#[tokio::test]
async fn unknown_language_lists_the_supported_ones() {
    let app = TestApp::new().await;
    let (status, body) = app.initialize("go-hello", r#"{"script_content":"x"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    insta::assert_json_snapshot!(body, @r#"
    {
      "error": {
        "code": "INVALID_REQUEST",
        "details": {
          "header": "Language-Title",
          "supported": [
            "nodejs",
            "python",
            "rust",
            "wasm"
          ]
        },
        "message": "unknown language in Language-Title `go-hello`; supported: nodejs, python, rust, wasm"
      }
    }
    "#);
}

#[tokio::test]
async fn languages_without_a_runtime_are_503() {
    let app = TestApp::new().await;
    let (status, body) = app.initialize("wasm-add", r#"{"script_content":"(module)"}"#).await;
    assert_eq!((status.as_u16(), body["error"]["code"].clone()), (503, json!("UNAVAILABLE")), "{body}");
}

#[tokio::test]
async fn initialize_then_execute() {
    let app = TestApp::new().await;
    let (status, init) =
        app.initialize("nodejs-add", r#"{"script_content":"return event.params.a + event.params.b;"}"#).await;
    assert_eq!(status, StatusCode::OK, "{init}");
    assert_eq!(init["status"], "initialized");
    let id = init["request_id"].as_str().expect("id");
    let (status, body) =
        app.call("POST", &format!("/api/v1/execute/{id}"), &[], r#"{"params":{"a":1,"b":2}}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["result"].clone(), body["cached"].clone()), (json!(3), json!(false)));
    let (_, again) =
        app.call("POST", &format!("/api/v1/execute/{id}"), &[], r#"{"params":{"b":2,"a":1}}"#).await;
    assert_eq!(again["cached"], true, "key order does not change the cache key");
    let (status, _) = app.call("POST", &format!("/api/v1/execute/{id}"), &[], "").await;
    assert_eq!(status, StatusCode::OK, "an empty body means empty params");
}

#[tokio::test]
async fn health_names_the_embedded_components() {
    let app = TestApp::new().await;
    let (status, mut body) = app.call("GET", "/health", &[], "").await;
    assert_eq!(status, StatusCode::OK);
    // The sandbox report depends on the machine; its shape is checked by the sandbox's own tests.
    if let Some(components) = body["components"].as_object_mut() {
        components.remove("sandbox");
    }
    insta::assert_json_snapshot!(body, @r#"
    {
      "components": {
        "cache": "memory",
        "controller": "ok",
        "postgres": "disabled",
        "redis": "disabled",
        "runtimes": {
          "nodejs": "ok",
          "python": "ok",
          "rust": "disabled",
          "wasm": "disabled"
        },
        "sqlite": "ok",
        "storage": "sqlite"
      },
      "status": "ok",
      "version": "1.0.0"
    }
    "#);
}
