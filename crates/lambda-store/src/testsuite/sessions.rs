//! Suite checks of sessions: round trip, conflicts, the expiry sweeps.

use lambda_core::{Language, ScriptHash, SessionStatus};
use serde_json::json;

use super::{at, session};
use crate::{Store, StoreError};

pub async fn backend_answers_ping(store: &dyn Store) {
    store.ping().await.expect("ping");
    assert!(["sqlite", "postgres"].contains(&store.backend()));
}

pub async fn session_round_trip(store: &dyn Store) {
    let options = json!({"optimization_level": "release"});
    let mut full = session("full", at(3_600_000));
    full.language_title = "rust-validator".into();
    full.language = Language::Rust;
    full.user_id = Some("alice".into());
    full.script_hash = ScriptHash::compute(Language::Rust, &full.script_content, Some(&options));
    full.context = json!({"env": "test", "nested": {"n": [1, 2.5, null, "x"]}});
    full.compile_options = Some(options);
    full.function_language_title = Some("rust-validator".into());
    full.timeout_ms = 1_234;
    full.retain = false;
    full.status = SessionStatus::Closed;
    full.created_at = at(0) + chrono::Duration::microseconds(123_456);
    full.execution_count = 7;
    full.last_executed_at = Some(at(1_001));
    store.insert_session(&full).await.expect("insert full");
    assert_eq!(store.get_session("full").await.expect("get"), Some(full));

    let bare = session("bare", at(60_000));
    store.insert_session(&bare).await.expect("insert bare");
    assert_eq!(store.get_session("bare").await.expect("get"), Some(bare));
}

pub async fn missing_session_is_none(store: &dyn Store) {
    assert_eq!(store.get_session("nope").await.expect("get"), None);
}

pub async fn duplicate_session_conflicts(store: &dyn Store) {
    let first = session("dup", at(60_000));
    store.insert_session(&first).await.expect("first insert");
    let mut second = session("dup", at(120_000));
    second.script_content = "return 2;".into();
    let err = store.insert_session(&second).await.expect_err("duplicate request_id");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.get_session("dup").await.expect("get"), Some(first));
}

pub async fn count_active_sessions_respects_status_and_expiry(store: &dyn Store) {
    store.insert_session(&session("live-1", at(10_000))).await.expect("insert");
    store.insert_session(&session("live-2", at(20_000))).await.expect("insert");
    store.insert_session(&session("past", at(1_000))).await.expect("insert");
    let mut closed = session("closed", at(20_000));
    closed.status = SessionStatus::Closed;
    store.insert_session(&closed).await.expect("insert");

    assert_eq!(store.count_active_sessions(at(5_000)).await.expect("count"), 2);
    // Expired from `expires_at` on, as `Session::status_at` says.
    assert_eq!(store.count_active_sessions(at(10_000)).await.expect("count"), 1);
    assert_eq!(store.count_active_sessions(at(0)).await.expect("count"), 3);
    assert_eq!(store.count_active_sessions(at(30_000)).await.expect("count"), 0);
}

pub async fn expire_sessions_marks_only_past_active(store: &dyn Store) {
    store.insert_session(&session("old", at(1_000))).await.expect("insert");
    store.insert_session(&session("edge", at(5_000))).await.expect("insert");
    store.insert_session(&session("young", at(9_000))).await.expect("insert");
    let mut closed = session("closed", at(1_000));
    closed.status = SessionStatus::Closed;
    store.insert_session(&closed).await.expect("insert");

    assert_eq!(store.expire_sessions(at(5_000)).await.expect("expire"), 2);
    let status = |s: Option<lambda_core::Session>| s.map(|s| s.status);
    assert_eq!(status(store.get_session("old").await.expect("get")), Some(SessionStatus::Expired));
    assert_eq!(status(store.get_session("edge").await.expect("get")), Some(SessionStatus::Expired));
    assert_eq!(status(store.get_session("young").await.expect("get")), Some(SessionStatus::Active));
    assert_eq!(status(store.get_session("closed").await.expect("get")), Some(SessionStatus::Closed));
    // Nothing left to expire at the same instant.
    assert_eq!(store.expire_sessions(at(5_000)).await.expect("expire"), 0);
}

pub async fn purge_sessions_deletes_old_expired_and_closed(store: &dyn Store) {
    let mut expired = session("expired", at(1_000));
    expired.status = SessionStatus::Expired;
    let mut closed = session("closed", at(2_000));
    closed.status = SessionStatus::Closed;
    let mut closed_late = session("closed-late", at(50_000));
    closed_late.status = SessionStatus::Closed;
    // Past expiry but never marked: purge leaves it to expire_sessions first.
    let unmarked = session("unmarked", at(1_000));
    for s in [&expired, &closed, &closed_late, &unmarked] {
        store.insert_session(s).await.expect("insert");
    }

    assert_eq!(store.purge_sessions(at(10_000)).await.expect("purge"), 2);
    assert_eq!(store.get_session("expired").await.expect("get"), None);
    assert_eq!(store.get_session("closed").await.expect("get"), None);
    assert!(store.get_session("closed-late").await.expect("get").is_some());
    assert!(store.get_session("unmarked").await.expect("get").is_some());
    assert_eq!(store.purge_sessions(at(10_000)).await.expect("purge"), 0);
}
