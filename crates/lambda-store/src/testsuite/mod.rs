//! The backend-independent store test suite (feature `testsuite`): every
//! check takes an empty store as `&dyn Store` and panics on failure, so that
//! SQLite and PostgreSQL are held to the same contract. Run it with
//! [`store_suite!`](crate::store_suite), one `#[tokio::test]` per check.

mod artifacts;
mod functions;
mod logs;
pub mod pg;
mod sessions;

use chrono::{DateTime, Duration, TimeZone, Utc};
use lambda_core::{Function, FunctionKind, Language, ScriptHash, Session, SessionStatus};
use serde_json::json;

pub use artifacts::*;
pub use functions::*;
pub use logs::*;
pub use sessions::*;

/// Expands to one `#[tokio::test]` per check of the suite. `$fresh` is an
/// async fn returning `(guard, store)`: a new, empty store for each test, and
/// whatever must live as long as it does (a temp dir, a schema dropper).
///
/// ```ignore
/// async fn fresh() -> (tempfile::TempDir, Box<dyn lambda_store::Store>) { … }
/// lambda_store::store_suite!(fresh);
/// ```
#[macro_export]
macro_rules! store_suite {
    ($fresh:path) => {
        $crate::store_suite!(@each $fresh;
            backend_answers_ping,
            session_round_trip,
            missing_session_is_none,
            duplicate_session_conflicts,
            count_active_sessions_respects_status_and_expiry,
            expire_sessions_marks_only_past_active,
            purge_sessions_deletes_old_expired_and_closed,
            function_round_trip,
            register_function_only_where_free,
            seed_function_is_idempotent,
            list_functions_pages_in_title_order,
            list_functions_filters_combine,
            write_logs_round_trip,
            write_logs_counts_executions_and_closes,
            write_logs_accepts_empty_and_unknown_sessions,
            artifact_round_trip_and_replace,
        );
    };
    (@each $fresh:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (_guard, store) = $fresh().await;
                $crate::testsuite::$check(&*store).await;
            }
        )*
    };
}

/// A fixed instant plus `ms` milliseconds: portable values (PostgreSQL keeps
/// microseconds), far from "now" so that nothing depends on the clock.
pub fn at(ms: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).single().unwrap_or_default() + Duration::milliseconds(ms)
}

/// An active, retained nodejs session created at `at(0)` expiring at `expires_at`.
pub fn session(request_id: &str, expires_at: DateTime<Utc>) -> Session {
    let script = "return params.a + params.b;";
    Session {
        request_id: request_id.to_owned(),
        language_title: "nodejs-adder".to_owned(),
        language: Language::Nodejs,
        user_id: None,
        script_content: script.to_owned(),
        script_hash: ScriptHash::compute(Language::Nodejs, script, None),
        context: json!({}),
        compile_options: None,
        function_language_title: None,
        timeout_ms: 30_000,
        retain: true,
        status: SessionStatus::Active,
        created_at: at(0),
        expires_at,
        execution_count: 0,
        last_executed_at: None,
    }
}

pub fn function(language: Language, title: &str, kind: FunctionKind, user_id: Option<&str>) -> Function {
    Function {
        language_title: format!("{language}-{title}"),
        language,
        title: title.to_owned(),
        description: format!("the {title} function"),
        kind,
        user_id: user_id.map(str::to_owned),
        script_content: format!("// {title}"),
        schema: None,
        examples: json!([]),
        compile_options: None,
        created_at: at(0),
        updated_at: at(0),
    }
}
