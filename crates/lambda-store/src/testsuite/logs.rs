//! Suite checks of `write_logs`: rows, order, execution counters, closing.

use lambda_core::SessionStatus;
use serde_json::json;

use super::{at, session};
use crate::{ErrorLog, LogEntry, RequestLog, SessionExecution, Store};

/// A request log whose `response_payload` carries `n`, to check order.
pub fn request_log(request_id: &str, n: i64) -> RequestLog {
    RequestLog {
        request_id: request_id.to_owned(),
        language_title: "nodejs-adder".to_owned(),
        user_id: None,
        status_code: 200,
        duration_ms: 3,
        cached: false,
        request_payload: json!({"params": {"a": n, "b": 1}}).into(),
        response_payload: json!({"n": n}).into(),
        runtime_metrics: json!({"cpu_ms": 1}).into(),
        error_code: None,
        created_at: at(n),
    }
}

pub fn execution(request_id: &str, ms: i64, close: bool) -> LogEntry {
    LogEntry::Execution(SessionExecution { request_id: request_id.to_owned(), executed_at: at(ms), close })
}

pub async fn write_logs_round_trip(store: &dyn Store) {
    let ok = request_log("s1", 1);
    let mut failed = request_log("s1", 2);
    failed.status_code = 460;
    failed.cached = true;
    failed.user_id = Some("alice".into());
    failed.error_code = Some("SCRIPT_ERROR".into());
    let error = ErrorLog {
        request_id: "s1".into(),
        language_title: "nodejs-adder".into(),
        error_code: "SCRIPT_ERROR".into(),
        message: "boom".into(),
        details: json!({"line": 3, "stack": "Error: boom"}),
        created_at: at(2),
    };
    let other = request_log("s2", 3);
    let batch = [
        LogEntry::Request(ok.clone()),
        LogEntry::Request(failed.clone()),
        LogEntry::Error(error.clone()),
        LogEntry::Request(other.clone()),
    ];
    store.write_logs(&batch).await.expect("write");
    assert_eq!(store.request_logs("s1").await.expect("read"), vec![ok, failed]);
    assert_eq!(store.error_logs("s1").await.expect("read"), vec![error]);
    assert_eq!(store.request_logs("s2").await.expect("read"), vec![other]);
    assert_eq!(store.error_logs("s2").await.expect("read"), vec![]);
    assert_eq!(store.request_logs("s3").await.expect("read"), vec![]);

    // Order is write order, not timestamp order.
    let late = request_log("s1", -5);
    store.write_logs(&[LogEntry::Request(late.clone())]).await.expect("write");
    let logs = store.request_logs("s1").await.expect("read");
    assert_eq!(logs.last(), Some(&late));
}

pub async fn write_logs_counts_executions_and_closes(store: &dyn Store) {
    store.insert_session(&session("kept", at(3_600_000))).await.expect("insert");
    let mut single = session("single", at(3_600_000));
    single.retain = false;
    store.insert_session(&single).await.expect("insert");

    store.write_logs(&[execution("kept", 100, false), execution("kept", 300, false)]).await.expect("write");
    // An older execution arriving late does not move last_executed_at back.
    store.write_logs(&[execution("kept", 200, false)]).await.expect("write");
    let kept = store.get_session("kept").await.expect("get").expect("kept exists");
    assert_eq!((kept.execution_count, kept.last_executed_at), (3, Some(at(300))));
    assert_eq!(kept.status, SessionStatus::Active);

    store
        .write_logs(&[LogEntry::Request(request_log("single", 1)), execution("single", 400, true)])
        .await
        .expect("write");
    let single = store.get_session("single").await.expect("get").expect("single exists");
    assert_eq!((single.execution_count, single.last_executed_at), (1, Some(at(400))));
    assert_eq!(single.status, SessionStatus::Closed);
    assert_eq!(store.request_logs("single").await.expect("read").len(), 1);
}

pub async fn write_logs_accepts_empty_and_unknown_sessions(store: &dyn Store) {
    store.write_logs(&[]).await.expect("empty batch");
    // The session may have been purged before its counters arrive.
    store
        .write_logs(&[execution("gone", 1, true), LogEntry::Request(request_log("gone", 1))])
        .await
        .expect("write");
    assert_eq!(store.get_session("gone").await.expect("get"), None);
    assert_eq!(store.request_logs("gone").await.expect("read").len(), 1);
}
