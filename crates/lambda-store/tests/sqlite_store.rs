//! The store suite against SQLite files (and the in-memory variant), plus what
//! only a file-backed store can show: restart survival, idempotent migrations.

use std::path::Path;

use lambda_core::{FunctionKind, Language};
use lambda_store::testsuite::{at, execution, function, request_log, session};
use lambda_store::{SqliteStore, Store, StoreError};
use sqlx::Connection;
use tempfile::TempDir;

async fn fresh() -> (TempDir, Box<dyn Store>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("lambda.db")).await.expect("open");
    (dir, Box::new(store))
}

lambda_store::store_suite!(fresh);

mod in_memory {
    async fn fresh() -> ((), Box<dyn lambda_store::Store>) {
        ((), Box::new(lambda_store::SqliteStore::open_in_memory().await.expect("open")))
    }

    lambda_store::store_suite!(fresh);
}

async fn raw(path: &Path) -> sqlx::SqliteConnection {
    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.expect("raw connection")
}

#[tokio::test]
async fn sessions_functions_and_logs_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lambda.db");
    let s = session("survivor", at(3_600_000));
    let f = function(Language::Nodejs, "calculator", FunctionKind::Predefined, None);
    {
        let store = SqliteStore::open(&path).await.expect("open");
        store.insert_session(&s).await.expect("insert");
        assert!(store.seed_function(&f).await.expect("seed"));
        let batch =
            [lambda_store::LogEntry::Request(request_log("survivor", 1)), execution("survivor", 5, false)];
        store.write_logs(&batch).await.expect("write");
        store.close().await;
    }
    let store = SqliteStore::open(&path).await.expect("reopen");
    let back = store.get_session("survivor").await.expect("get").expect("session survived");
    assert_eq!((back.execution_count, back.last_executed_at), (1, Some(at(5))));
    assert_eq!(back.script_content, s.script_content);
    assert_eq!(store.get_function("nodejs-calculator").await.expect("get"), Some(f.clone()));
    assert_eq!(store.request_logs("survivor").await.expect("logs").len(), 1);
    assert!(!store.seed_function(&f).await.expect("seed again"));
}

#[tokio::test]
async fn migrations_are_idempotent_on_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nested/data/lambda.db");
    for _ in 0..3 {
        let store = SqliteStore::open(&path).await.expect("open creates the directories and the file");
        store.ping().await.expect("ping");
        store.close().await;
    }
    let mut conn = raw(&path).await;
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut conn)
        .await
        .expect("migrations table");
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .expect("migrations dir")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql")))
        .count();
    assert_eq!(applied, files as i64);
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut conn).await.expect("pragma");
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn undecodable_rows_are_corrupt_not_unavailable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lambda.db");
    let store = SqliteStore::open(&path).await.expect("open");
    store.insert_session(&session("bad-lang", at(60_000))).await.expect("insert");
    store.insert_session(&session("bad-json", at(60_000))).await.expect("insert");
    let mut conn = raw(&path).await;
    sqlx::query("UPDATE sessions SET language = 'cobol' WHERE request_id = 'bad-lang'")
        .execute(&mut conn)
        .await
        .expect("tamper");
    sqlx::query("UPDATE sessions SET context = '{oops' WHERE request_id = 'bad-json'")
        .execute(&mut conn)
        .await
        .expect("tamper");
    for id in ["bad-lang", "bad-json"] {
        let err = store.get_session(id).await.expect_err("corrupt row");
        assert!(matches!(err, StoreError::Corrupt(_)), "{id}: {err:?}");
    }
}

#[tokio::test]
async fn a_closed_pool_is_unavailable() {
    let sqlite = SqliteStore::open_in_memory().await.expect("open");
    sqlite.close().await;
    let err = sqlite.ping().await.expect_err("closed");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}
