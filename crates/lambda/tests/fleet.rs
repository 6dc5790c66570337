//! A fleet of real `lambda serve` processes on one PostgreSQL and one Redis:
//! shared sessions and results, restart survival, and outages of either
//! service (a private redis-server / PostgreSQL that the test stops and
//! starts) after which everything recovers by itself and no log is lost.
//!
//! Needs the machine's PostgreSQL (`LAMBDA_TEST_DATABASE_URL`) and Redis
//! (`LAMBDA_TEST_REDIS_URL`); CI starts them. Each test has its own
//! database and key prefix.

mod support;

use std::time::Duration;

use lambda_cache::testing::{PrivateRedis, redis_url, unique_prefix};
use lambda_store::testsuite::pg::{PrivatePostgres, TestDatabase};
use lambda_store::{PostgresConfig, PostgresStore, Store};
use serde_json::{Value, json};
use support::{Server, assert_error};

const ADDER: &str = "return event.params.a + event.params.b;";

/// A controller on the given PostgreSQL and Redis.
fn controller(database_url: &str, redis_url: &str, prefix: &str) -> Server {
    Server::start(&fleet_env(database_url, redis_url, prefix))
}

fn fleet_env<'a>(database_url: &'a str, redis_url: &'a str, prefix: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("DATABASE_URL", database_url),
        ("REDIS_URL", redis_url),
        ("REDIS_KEY_PREFIX", prefix),
        // Fail fast while PostgreSQL is down (the default is 3 s).
        ("DATABASE_ACQUIRE_TIMEOUT_MS", "1000"),
    ]
}

/// Polls until `check` holds; the generous limit only guards against hangs.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let give_up = std::time::Instant::now() + Duration::from_secs(120);
    while !check().await {
        assert!(std::time::Instant::now() < give_up, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn store_of(url: &str) -> PostgresStore {
    PostgresStore::connect(&PostgresConfig::new(url)).await.expect("the test's own view of PostgreSQL")
}

async fn execute_ok(server: &Server, id: &str, params: Value) -> Value {
    let reply = server.execute(id, params).await;
    assert_eq!(reply.status, 200, "execute {id}: {}", reply.body);
    reply.body
}

#[tokio::test]
async fn two_controllers_share_sessions_results_and_single_use_claims() {
    let db = TestDatabase::create().await;
    let prefix = unique_prefix();
    let redis = redis_url();
    let a = controller(&db.url, &redis, &prefix);
    let b = controller(&db.url, &redis, &prefix);

    // Initialized on A, executed on B.
    let id = a.session("nodejs-fleet-adder", ADDER).await;
    let on_b = execute_ok(&b, &id, json!({"a": 2, "b": 3})).await;
    assert_eq!((on_b["result"].clone(), on_b["cached"].clone()), (json!(5), json!(false)));

    // A result cached by A is a hit on B.
    let first = execute_ok(&a, &id, json!({"a": 10, "b": 20})).await;
    assert_eq!(first["cached"], false);
    let hit = execute_ok(&b, &id, json!({"a": 10, "b": 20})).await;
    assert_eq!((hit["result"].clone(), hit["cached"].clone()), (json!(30), json!(true)));

    // A single-use session runs once in the whole fleet.
    let once = a
        .initialize(
            "nodejs-fleet-once",
            json!({"script_content": ADDER, "context": {"retain_session": false}}),
        )
        .await;
    assert_eq!(once.status, 200, "{}", once.body);
    let once = once.body["request_id"].as_str().expect("id").to_owned();
    execute_ok(&b, &once, json!({"a": 1, "b": 1})).await;
    assert_error(&a.execute(&once, json!({"a": 1, "b": 1})).await, 404, "NOT_FOUND");
    assert_error(&b.execute(&once, json!({"a": 1, "b": 1})).await, 404, "NOT_FOUND");
    // A controller that loads it afterwards (a new one, or one restarted)
    // reads it from the shared cache as closed, not as it was initialized.
    let c = controller(&db.url, &redis, &prefix);
    let info = c.get(&format!("/api/v1/sessions/{once}")).await;
    assert_eq!((info.status, info.body["status"].clone()), (200, json!("closed")), "{}", info.body);
    assert_error(&c.execute(&once, json!({"a": 1, "b": 1})).await, 404, "NOT_FOUND");

    // Both controllers' logs and counters reach the shared store.
    let store = store_of(&db.url).await;
    eventually("three request logs", async || store.request_logs(&id).await.is_ok_and(|l| l.len() == 3))
        .await;
    eventually("the fleet-wide counter", async || {
        store.get_session(&id).await.ok().flatten().is_some_and(|s| s.execution_count == 3)
    })
    .await;
    let health = a.get("/health").await;
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.body["status"], "ok", "{}", health.body);
    assert_eq!(health.body["components"]["postgres"], "ok");
    assert_eq!(health.body["components"]["redis"], "ok");
}

#[tokio::test]
async fn a_restarted_controller_serves_the_sessions_made_before() {
    let db = TestDatabase::create().await;
    let redis = redis_url();
    let mut first = controller(&db.url, &redis, &unique_prefix());
    let id = first.session("nodejs-fleet-survivor", ADDER).await;
    execute_ok(&first, &id, json!({"a": 1, "b": 2})).await;
    assert!(first.stop().success(), "orderly shutdown");

    // A new process, a new data dir and a new key prefix (an empty cache):
    // only PostgreSQL knows the session.
    let second = controller(&db.url, &redis, &unique_prefix());
    let again = execute_ok(&second, &id, json!({"a": 40, "b": 2})).await;
    assert_eq!(again["result"], 42);
    let info = second.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(info.status, 200, "{}", info.body);
    assert_eq!(info.body["status"], "active");

    // The first process flushed its log at shutdown; the second's follows.
    let store = store_of(&db.url).await;
    eventually("both request logs", async || store.request_logs(&id).await.is_ok_and(|l| l.len() == 2)).await;
}

#[tokio::test]
async fn a_redis_outage_runs_uncached_reports_degraded_and_recovers() {
    let db = TestDatabase::create().await;
    let mut redis = PrivateRedis::start();
    let redis_url = redis.url();
    let prefix = unique_prefix();
    let a = controller(&db.url, &redis_url, &prefix);
    let id = a.session("nodejs-fleet-uncached", ADDER).await;
    execute_ok(&a, &id, json!({"a": 1, "b": 1})).await;
    assert_eq!(execute_ok(&a, &id, json!({"a": 1, "b": 1})).await["cached"], true);

    redis.stop();
    for _ in 0..3 {
        let body = execute_ok(&a, &id, json!({"a": 5, "b": 5})).await;
        assert_eq!((body["result"].clone(), body["cached"].clone()), (json!(10), json!(false)));
    }
    let health = a.get("/health").await;
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.body["status"], "degraded", "{}", health.body);
    assert_eq!(health.body["components"]["redis"], "unavailable");
    assert_eq!(health.body["components"]["postgres"], "ok");
    // New sessions too: the store is fine.
    let during = a.session("nodejs-fleet-during", ADDER).await;
    execute_ok(&a, &during, json!({"a": 0, "b": 0})).await;

    redis.resume();
    eventually("health to be ok again", async || a.get("/health").await.body["status"] == "ok").await;
    eventually("results to be cached again", async || {
        a.execute(&id, json!({"a": 7, "b": 7})).await.body["cached"] == true
    })
    .await;
}

#[tokio::test]
async fn a_postgres_outage_keeps_live_sessions_running_and_loses_no_log() {
    let mut pg = PrivatePostgres::start();
    let database_url = pg.url();
    let prefix = unique_prefix();
    let redis = redis_url();
    let a = controller(&database_url, &redis, &prefix);
    let b = controller(&database_url, &redis, &prefix);
    let id = a.session("nodejs-fleet-outage", ADDER).await;
    execute_ok(&a, &id, json!({"a": 0, "b": 1})).await;

    pg.stop();
    // Live sessions go on, on the controller that made them and, through
    // Redis, on one that never saw them.
    let mut executed = 1;
    for n in 0..10 {
        for server in [&a, &b] {
            let body = execute_ok(server, &id, json!({"a": n, "b": 100})).await;
            assert_eq!(body["result"], n + 100);
            executed += 1;
        }
    }
    // New sessions cannot be stored: 503, not a hang, not a 500.
    assert_error(
        &a.initialize("nodejs-fleet-new", json!({"script_content": ADDER})).await,
        503,
        "UNAVAILABLE",
    );
    for server in [&a, &b] {
        let health = server.get("/health").await;
        assert_eq!(health.status, 200, "{}", health.body);
        assert_eq!(health.body["status"], "degraded", "{}", health.body);
        assert_eq!(health.body["components"]["postgres"], "unavailable", "{}", health.body);
    }

    pg.resume();
    eventually("postgres to be ok again", async || {
        a.get("/health").await.body["components"]["postgres"] == "ok"
    })
    .await;
    let store = store_of(&database_url).await;
    eventually("every request log", async || {
        store.request_logs(&id).await.is_ok_and(|l| l.len() == executed)
    })
    .await;
    eventually("every execution counted", async || {
        store.get_session(&id).await.ok().flatten().is_some_and(|s| s.execution_count == executed as i64)
    })
    .await;
    let logs = store.request_logs(&id).await.expect("logs");
    assert!(logs.iter().all(|l| l.status_code == 200), "{logs:?}");
    // Initialize works again.
    let after = b.session("nodejs-fleet-after", ADDER).await;
    execute_ok(&a, &after, json!({"a": 1, "b": 2})).await;
}

#[tokio::test]
async fn urls_come_from_files_and_lambda_migrate_creates_the_schema() {
    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (db_file, redis_file) = (dir.path().join("database-url"), dir.path().join("redis-url"));
    std::fs::write(&db_file, format!("{}\n", db.url)).expect("write");
    std::fs::write(&redis_file, format!("{}\n", redis_url())).expect("write");
    let db_file = db_file.to_string_lossy().into_owned();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lambda"))
        .arg("migrate")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL_FILE", &db_file)
        .env("LAMBDA_DATA_DIR", dir.path().join("data"))
        .output()
        .expect("run lambda migrate");
    assert!(out.status.success(), "lambda migrate: {}", String::from_utf8_lossy(&out.stderr));
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.expect("connect");
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE (table_schema, table_name) IN \
         (('meta', 'sessions'), ('meta', 'functions'), ('meta', 'users'), ('meta', 'artifacts'), \
          ('public', 'request_logs'), ('public', 'error_logs'))",
    )
    .fetch_one(&mut conn)
    .await
    .expect("query");
    assert_eq!(tables, 6);

    let prefix = unique_prefix();
    let redis_file = redis_file.to_string_lossy().into_owned();
    let server = Server::start(&[
        ("DATABASE_URL_FILE", db_file.as_str()),
        ("REDIS_URL_FILE", redis_file.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
    ]);
    let health = server.get("/health").await;
    assert_eq!(health.body["status"], "ok", "{}", health.body);
    assert_eq!(health.body["components"]["storage"], "postgres");
    assert_eq!(health.body["components"]["cache"], "redis");
    // The predefined functions are seeded into PostgreSQL.
    let seeded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM meta.functions WHERE kind = 'predefined'")
        .fetch_one(&mut conn)
        .await
        .expect("query");
    assert!(seeded >= 3, "{seeded}");
}

#[test]
fn bad_storage_and_cache_settings_stop_the_start_naming_the_variable() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[("DATABASE_URL", "mysql://root@127.0.0.1/test")], "DATABASE_URL"),
        (&[("REDIS_URL", "http://127.0.0.1:6379")], "REDIS_URL"),
        (&[("REDIS_URL", "redis://127.0.0.1"), ("REDIS_URL_FILE", "/nonexistent")], "REDIS_URL_FILE"),
        (
            &[("DATABASE_URL", "postgres://u@127.0.0.1/db"), ("DATABASE_MAX_CONNECTIONS", "0")],
            "DATABASE_MAX_CONNECTIONS",
        ),
    ];
    for (env, var) in cases {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lambda"));
        cmd.arg("serve").env("LAMBDA_DATA_DIR", std::env::temp_dir().join("lambda-bad-fleet-config"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run");
        assert_eq!(out.status.code(), Some(64), "{env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(var), "{env:?}: {stderr}");
    }
}
