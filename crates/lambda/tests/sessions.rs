//! End to end: session lifecycle, idempotent initialize, caching, restart survival, logs.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Server, assert_error};

#[tokio::test]
async fn sessions_count_expire_and_close() {
    let s = Server::start(&[("SESSION_EXPIRY_SECONDS", "2")]);
    let id = s.session("nodejs-count", "return event.params.n;").await;
    let fresh = s.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(fresh.status, 200);
    assert_eq!(
        (fresh.body["status"].clone(), fresh.body["execution_count"].clone()),
        (json!("active"), json!(0))
    );
    assert_eq!(fresh.body["last_executed_at"], json!(null));
    for n in 0..3 {
        assert_eq!(s.execute(&id, json!({"n": n})).await.status, 200);
    }
    let used = s.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(used.body["execution_count"], 3, "{}", used.body);
    assert!(used.body["last_executed_at"].is_string());
    assert_eq!(used.body["language_title"], "nodejs-count");

    let once = s
        .initialize(
            "python-once",
            json!({"context": {"retain_session": false}, "script_content": "result = 1"}),
        )
        .await;
    let once = once.body["request_id"].as_str().expect("id").to_owned();
    assert_eq!(s.execute(&once, json!({})).await.status, 200);
    assert_error(&s.execute(&once, json!({})).await, 404, "NOT_FOUND");
    assert_eq!(s.get(&format!("/api/v1/sessions/{once}")).await.body["status"], "closed");

    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_error(&s.execute(&id, json!({"n": 1})).await, 404, "NOT_FOUND");
    assert_eq!(s.get(&format!("/api/v1/sessions/{id}")).await.body["status"], "expired");
}

#[tokio::test]
async fn client_request_ids_are_idempotent() {
    let s = Server::start(&[]);
    let init = |id: &'static str, script: &'static str| {
        let s = &s;
        async move {
            s.post(
                "/api/v1/initialize",
                &[("Language-Title", "nodejs-idem"), ("X-Request-ID", id)],
                &json!({"script_content": script}),
            )
            .await
        }
    };
    let first = init("order-42", "return 1;").await;
    assert_eq!((first.status, first.body["request_id"].clone()), (200, json!("order-42")), "{}", first.body);
    let again = init("order-42", "return 1;").await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["expires_at"], first.body["expires_at"]);
    assert_error(&init("order-42", "return 2;").await, 409, "CONFLICT");
    assert_error(&init("bad id!", "return 1;").await, 400, "INVALID_REQUEST");
    assert_eq!(s.execute("order-42", json!({})).await.body["result"], 1);

    // The same script under another title, or with another context, is
    // another request, not a retry.
    let other = |title: &'static str, body: serde_json::Value| {
        let s = &s;
        async move {
            s.post("/api/v1/initialize", &[("Language-Title", title), ("X-Request-ID", "order-42")], &body)
                .await
        }
    };
    assert_error(&other("nodejs-elsewhere", json!({"script_content": "return 1;"})).await, 409, "CONFLICT");
    let single_use = json!({"script_content": "return 1;", "context": {"retain_session": false}});
    assert_error(&other("nodejs-idem", single_use.clone()).await, 409, "CONFLICT");

    // A retry of a session that is used up names its status instead of
    // handing back a session no execute can use.
    let once = |id: &'static str| other_id(&s, id, single_use.clone());
    assert_eq!(once("once-1").await.status, 200);
    assert_eq!(s.execute("once-1", json!({})).await.status, 200);
    let e = assert_error(&once("once-1").await, 409, "CONFLICT");
    assert_eq!(e["details"]["status"], "closed", "{e}");
}

async fn other_id(s: &Server, id: &str, body: serde_json::Value) -> support::Reply {
    s.post("/api/v1/initialize", &[("Language-Title", "nodejs-idem"), ("X-Request-ID", id)], &body).await
}

#[tokio::test]
async fn cache_control_and_cached_flag() {
    let s = Server::start(&[]);
    // Returns a fresh value each run, so a cached answer is recognisable.
    let id = s.session("nodejs-clock", "return process.hrtime.bigint().toString();").await;
    let first = s.execute(&id, json!({"k": 1})).await;
    assert_eq!(first.body["cached"], false);
    let hit = s.execute(&id, json!({"k": 1})).await;
    assert_eq!(
        (hit.body["cached"].clone(), hit.body["result"].clone()),
        (json!(true), first.body["result"].clone())
    );
    assert_eq!(hit.body["execution_time"], first.body["execution_time"]);
    let other_params = s.execute(&id, json!({"k": 2})).await;
    assert_eq!(other_params.body["cached"], false);

    let bypass = s.execute_with(&id, &[("X-Cache-Control", "no-cache")], json!({"k": 1})).await;
    assert_eq!(bypass.body["cached"], false);
    // no-cache still writes: the next plain read sees the new value.
    let after = s.execute(&id, json!({"k": 1})).await;
    assert_eq!(
        (after.body["cached"].clone(), after.body["result"].clone()),
        (json!(true), bypass.body["result"].clone())
    );

    let stored_nothing = s.execute_with(&id, &[("X-Cache-Control", "no-store")], json!({"k": 3})).await;
    assert_eq!(stored_nothing.body["cached"], false);
    assert_eq!(s.execute(&id, json!({"k": 3})).await.body["cached"], false);

    let short = s.execute_with(&id, &[("X-Cache-Control", "max-age=1")], json!({"k": 4})).await;
    assert_eq!(short.body["cached"], false);
    assert_eq!(s.execute(&id, json!({"k": 4})).await.body["cached"], true);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(s.execute(&id, json!({"k": 4})).await.body["cached"], false);
}

#[tokio::test]
async fn sessions_and_logs_survive_a_restart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let mut s = Server::start_in(&data, &[]);
    let id = s.session("python-keep", "result = params['v'] * 10").await;
    assert_eq!(s.execute(&id, json!({"v": 1})).await.body["result"], 10);
    let failing = s.session("nodejs-fail", "throw new Error('always');").await;
    assert_error(&s.execute(&failing, json!({})).await, 460, "RUNTIME_ERROR");
    // Executes refused before they ran are logged too: every execute is.
    assert_error(
        &s.execute_with(&id, &[("X-Cache-Control", "bogus")], json!({})).await,
        400,
        "INVALID_REQUEST",
    );
    let e = assert_error(&s.execute(&id, json!([1, 2])).await, 400, "INVALID_REQUEST");
    assert_eq!(e["details"]["field"], "params", "{e}");
    assert_error(&s.execute(UNKNOWN, json!({})).await, 404, "NOT_FOUND");
    let once = json!({"script_content": "return 1;", "context": {"retain_session": false}});
    let once =
        s.initialize("nodejs-once", once).await.body["request_id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(s.execute(&once, json!({})).await.status, 200);
    assert_error(&s.execute(&once, json!({})).await, 404, "NOT_FOUND");
    // Used up is 404 before anything in the request is looked at.
    assert_error(&s.execute(&once, json!([1])).await, 404, "NOT_FOUND");
    assert!(s.stop().success());

    let mut s = Server::start_in(&data, &[]);
    let r = s.execute_with(&id, &[("X-Cache-Control", "no-store")], json!({"v": 2})).await;
    assert_eq!(r.body["result"], 20, "{}", r.body);
    let session = s.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(session.body["execution_count"], 2, "{}", session.body);
    assert!(s.stop().success());

    let store = lambda_store::sqlite::SqliteStore::open(&data.join("lambda.db")).await.expect("open store");
    use lambda_store::Store;
    let logs = store.request_logs(&id).await.expect("logs");
    let statuses: Vec<(u16, bool)> = logs.iter().map(|l| (l.status_code, l.cached)).collect();
    assert_eq!(statuses, vec![(200, false), (400, false), (400, false), (200, false)]);
    assert_eq!(logs[3].response_payload.to_value()["result"], 20);
    assert_eq!(logs[1].language_title, "python-keep");
    let codes: Vec<String> =
        store.error_logs(&id).await.expect("error logs").into_iter().map(|e| e.error_code).collect();
    assert_eq!(codes, ["INVALID_REQUEST", "INVALID_REQUEST"]);
    let errors = store.error_logs(&failing).await.expect("error logs");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].error_code, "RUNTIME_ERROR");
    let failed = store.request_logs(&failing).await.expect("logs");
    assert_eq!(failed.first().map(|l| l.status_code), Some(460));
    let unknown = store.request_logs(UNKNOWN).await.expect("logs");
    assert_eq!(unknown.iter().map(|l| l.status_code).collect::<Vec<_>>(), [404]);
    assert_eq!(store.error_logs(UNKNOWN).await.expect("error logs")[0].error_code, "NOT_FOUND");
    let once: Vec<u16> =
        store.request_logs(&once).await.expect("logs").iter().map(|l| l.status_code).collect();
    assert_eq!(once, [200, 404, 404]);
}

/// A session id nobody created.
const UNKNOWN: &str = "no-such-session";
