//! The store suite against PostgreSQL (one fresh database per test), plus
//! what only a shared server can show: concurrent migrations, restart
//! survival, the error mapping, and sweeps racing on several controllers.

use std::sync::Arc;

use chrono::Duration;
use lambda_core::{FunctionKind, Language, SessionStatus};
use lambda_store::testsuite::pg::TestDatabase;
use lambda_store::testsuite::{at, execution, function, request_log, session};
use lambda_store::{ErrorLog, LogEntry, PostgresConfig, PostgresStore, Store, StoreError};
use serde_json::json;

async fn fresh() -> (TestDatabase, Box<dyn Store>) {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    (db, Box::new(store))
}

lambda_store::store_suite!(fresh);

#[tokio::test]
async fn the_reference_schema_is_created() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables \
         WHERE table_schema IN ('meta', 'public') AND table_name NOT LIKE '\\_sqlx%' ORDER BY 1",
    )
    .fetch_all(store.pool())
    .await
    .expect("tables");
    assert_eq!(
        tables,
        [
            "meta.artifacts",
            "meta.functions",
            "meta.sessions",
            "meta.users",
            "public.error_logs",
            "public.request_logs"
        ]
    );
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = 'meta' AND table_name = 'sessions'",
    )
    .fetch_all(store.pool())
    .await
    .expect("columns");
    for column in [
        "script_hash",
        "compiled_artifact",
        "compile_options",
        "compile_status",
        "compile_error",
        "context",
        "expires_at",
        "execution_count",
    ] {
        assert!(columns.iter().any(|c| c == column), "meta.sessions.{column} missing: {columns:?}");
    }
}

#[tokio::test]
async fn controllers_starting_together_migrate_an_empty_database_once() {
    let db = TestDatabase::create().await;
    let starts = (0..6).map(|_| {
        let url = db.url.clone();
        tokio::spawn(async move { PostgresStore::connect(&PostgresConfig::new(url)).await })
    });
    let stores: Vec<PostgresStore> = futures_join(starts).await;
    for store in &stores {
        store.ping().await.expect("ping");
    }
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(stores[0].pool())
        .await
        .expect("migrations table");
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .expect("migrations dir")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql")))
        .count();
    assert_eq!(applied, files as i64);
    for store in stores {
        store.close().await;
    }
}

async fn futures_join(
    handles: impl Iterator<Item = tokio::task::JoinHandle<Result<PostgresStore, StoreError>>>,
) -> Vec<PostgresStore> {
    let mut out = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        out.push(handle.await.expect("join").expect("concurrent start"));
    }
    out
}

#[tokio::test]
async fn sessions_functions_and_logs_survive_a_reconnect() {
    let db = TestDatabase::create().await;
    let s = session("survivor", at(3_600_000));
    let f = function(Language::Nodejs, "calculator", FunctionKind::Predefined, None);
    {
        let store = db.store().await;
        store.insert_session(&s).await.expect("insert");
        assert!(store.seed_function(&f).await.expect("seed"));
        let batch = [LogEntry::Request(request_log("survivor", 1)), execution("survivor", 5, false)];
        store.write_logs(&batch).await.expect("write");
        store.close().await;
    }
    let store = db.store().await;
    let back = store.get_session("survivor").await.expect("get").expect("session survived");
    assert_eq!((back.execution_count, back.last_executed_at), (1, Some(at(5))));
    assert_eq!(store.get_function("nodejs-calculator").await.expect("get"), Some(f.clone()));
    assert_eq!(store.request_logs("survivor").await.expect("logs").len(), 1);
    assert!(!store.seed_function(&f).await.expect("seed again"));
}

#[tokio::test]
async fn errors_map_by_sqlstate() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    store.insert_session(&session("bad-lang", at(60_000))).await.expect("insert");
    sqlx::query("UPDATE meta.sessions SET language = 'cobol' WHERE request_id = 'bad-lang'")
        .execute(store.pool())
        .await
        .expect("tamper");
    let err = store.get_session("bad-lang").await.expect_err("corrupt row");
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");

    // Class 22 (data exception): a value the column cannot hold.
    let mut huge = session("huge", at(60_000));
    huge.timeout_ms = u64::MAX;
    assert!(matches!(store.insert_session(&huge).await, Err(StoreError::Corrupt(_))));
    // Class 23 (constraint) other than unique: a check constraint.
    let err = sqlx::query("INSERT INTO meta.users (user_id, scopes) VALUES (NULL, '')")
        .execute(store.pool())
        .await
        .expect_err("not null");
    assert!(matches!(StoreError::from(err), StoreError::Corrupt(_)));

    // A closed pool (as a server gone away) is transient.
    store.close().await;
    let err = store.ping().await.expect_err("closed");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn nul_characters_do_not_reject_a_log_batch() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let mut log = request_log("nul", 1);
    log.request_payload = json!({"params": {"text": "a\u{0}b"}}).into();
    let error = ErrorLog {
        request_id: "nul".into(),
        language_title: "nodejs-adder".into(),
        error_code: "RUNTIME_ERROR".into(),
        message: "bad \u{0} byte".into(),
        details: json!({}),
        created_at: at(1),
    };
    store.write_logs(&[LogEntry::Request(log), LogEntry::Error(error)]).await.expect("written");
    let back = store.request_logs("nul").await.expect("read");
    assert_eq!(back[0].request_payload.to_value(), json!({"params": {"text": "a\u{FFFD}b"}}));
    assert_eq!(store.error_logs("nul").await.expect("read")[0].message, "bad \u{FFFD} byte");
}

#[tokio::test]
async fn sweeps_and_counters_are_safe_on_every_controller_at_once() {
    let db = TestDatabase::create().await;
    let stores: Vec<Arc<PostgresStore>> = vec![Arc::new(db.store().await), Arc::new(db.store().await)];
    for i in 0..50 {
        stores[0].insert_session(&session(&format!("old-{i}"), at(1_000))).await.expect("insert");
    }
    stores[0].insert_session(&session("live", at(10_000_000))).await.expect("insert");

    // Both controllers sweep at the same moment: every session expires once.
    let now = at(2_000);
    let (a, b) = tokio::join!(stores[0].expire_sessions(now), stores[1].expire_sessions(now));
    assert_eq!(a.expect("a") + b.expect("b"), 50);
    let later = now + Duration::hours(1);
    let (a, b) = tokio::join!(stores[0].purge_sessions(later), stores[1].purge_sessions(later));
    assert_eq!(a.expect("a") + b.expect("b"), 50);
    assert_eq!(stores[1].count_active_sessions(now).await.expect("count"), 1);

    // Counters written by both controllers add up.
    let writes = (0..20).map(|i| {
        let store = stores[i % 2].clone();
        tokio::spawn(async move { store.write_logs(&[execution("live", i as i64, false)]).await })
    });
    for w in writes.collect::<Vec<_>>() {
        w.await.expect("join").expect("write");
    }
    let live = stores[0].get_session("live").await.expect("get").expect("live");
    assert_eq!(
        (live.execution_count, live.last_executed_at, live.status),
        (20, Some(at(19)), SessionStatus::Active)
    );
}

/// The log pipeline over a PostgreSQL server that goes away and comes back:
/// nothing is lost, and the pool reconnects by itself.
#[tokio::test]
async fn a_postgres_outage_loses_no_log_entry() {
    use lambda_store::testsuite::pg::PrivatePostgres;
    use lambda_store::{LogPipeline, PipelineConfig};

    let mut server = PrivatePostgres::start();
    let config = PostgresConfig {
        acquire_timeout: std::time::Duration::from_millis(500),
        ..PostgresConfig::new(server.url())
    };
    let store = Arc::new(PostgresStore::connect(&config).await.expect("connect"));
    store.insert_session(&session("s", at(3_600_000))).await.expect("insert");
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = LogPipeline::start(
        store.clone(),
        PipelineConfig {
            capacity: 8,
            batch_size: 4,
            retry_initial: std::time::Duration::from_millis(10),
            retry_max: std::time::Duration::from_millis(200),
            ..PipelineConfig::in_data_dir(dir.path())
        },
    );
    let sink = pipeline.sink();
    for n in 0..10 {
        sink.submit(LogEntry::Request(request_log("s", n)));
    }
    wait_for("the first logs", async || store.request_logs("s").await.is_ok_and(|l| l.len() == 10)).await;

    server.stop();
    assert!(matches!(store.ping().await, Err(StoreError::Unavailable(_))));
    for n in 10..50 {
        sink.submit(LogEntry::Request(request_log("s", n)));
        sink.submit(execution("s", n, false));
    }
    // Beyond the in-memory bound the entries wait on disk.
    let stats = pipeline.stats();
    assert!(stats.spill_pending > 0, "{stats:?}");

    server.resume();
    wait_for("every log after the outage", async || {
        store.request_logs("s").await.is_ok_and(|l| l.len() == 50)
    })
    .await;
    let ns: Vec<i64> = store
        .request_logs("s")
        .await
        .expect("logs")
        .iter()
        .map(|l| l.response_payload.to_value()["n"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(ns, (0..50).collect::<Vec<_>>());
    wait_for("the counters", async || {
        store.get_session("s").await.ok().flatten().is_some_and(|s| s.execution_count == 40)
    })
    .await;
    pipeline.shutdown(std::time::Duration::from_secs(5)).await;
    assert_eq!(spill_lines(&dir), 0);
}

fn spill_lines(dir: &tempfile::TempDir) -> usize {
    std::fs::read_to_string(dir.path().join("log-spill.jsonl")).map(|s| s.lines().count()).unwrap_or(0)
}

/// Polls until `check` holds; the generous limit only guards against hangs.
async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while !check().await {
        assert!(std::time::Instant::now() < give_up, "gave up waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
