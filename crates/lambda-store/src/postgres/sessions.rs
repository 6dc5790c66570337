//! `meta.sessions`: insert, lookup and the expiry sweeps.
//!
//! The sweeps are single statements, so every controller may run them at
//! the same moment: PostgreSQL row locks serialise the overlapping updates,
//! and a row the other controller changed first no longer matches the
//! `WHERE` on re-check (READ COMMITTED), so it is counted once.

use chrono::{DateTime, Utc};
use lambda_core::{ScriptHash, Session, SessionStatus};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::codec::{self, corrupt};
use crate::StoreError;

const COLUMNS: &str = "request_id, language_title, language, user_id, script_content, script_hash, \
     context, compile_options, function_language_title, timeout_ms, retain, status, created_at, \
     expires_at, execution_count, last_executed_at";

pub(super) async fn insert(pool: &PgPool, s: &Session) -> Result<(), StoreError> {
    let timeout_ms = i64::try_from(s.timeout_ms).map_err(|e| corrupt("timeout_ms", e))?;
    let sql = format!(
        "INSERT INTO meta.sessions ({COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    );
    let result = sqlx::query(&sql)
        .bind(codec::text(&s.request_id))
        .bind(codec::text(&s.language_title))
        .bind(s.language.as_str())
        .bind(codec::opt_text(s.user_id.as_deref()))
        .bind(codec::text(&s.script_content))
        .bind(s.script_hash.to_hex())
        .bind(codec::json(&s.context))
        .bind(codec::opt_json(s.compile_options.as_ref()))
        .bind(codec::opt_text(s.function_language_title.as_deref()))
        .bind(timeout_ms)
        .bind(s.retain)
        .bind(s.status.as_str())
        .bind(s.created_at)
        .bind(s.expires_at)
        .bind(s.execution_count)
        .bind(s.last_executed_at)
        .execute(pool)
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) => Err(match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!("session `{}`", s.request_id)),
            other => other,
        }),
    }
}

pub(super) async fn get(pool: &PgPool, request_id: &str) -> Result<Option<Session>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM meta.sessions WHERE request_id = $1");
    let row = sqlx::query(&sql).bind(request_id).fetch_optional(pool).await?;
    row.as_ref().map(decode).transpose()
}

pub(super) async fn count_active(pool: &PgPool, now: DateTime<Utc>) -> Result<i64, StoreError> {
    let count =
        sqlx::query_scalar("SELECT COUNT(*) FROM meta.sessions WHERE status = 'active' AND expires_at > $1")
            .bind(now)
            .fetch_one(pool)
            .await?;
    Ok(count)
}

/// Same boundary as `Session::status_at`: expired from `expires_at` on.
pub(super) async fn expire(pool: &PgPool, now: DateTime<Utc>) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE meta.sessions SET status = 'expired' WHERE status = 'active' AND expires_at <= $1",
    )
    .bind(now)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

pub(super) async fn purge(pool: &PgPool, before: DateTime<Utc>) -> Result<u64, StoreError> {
    let done =
        sqlx::query("DELETE FROM meta.sessions WHERE status IN ('expired', 'closed') AND expires_at < $1")
            .bind(before)
            .execute(pool)
            .await?;
    Ok(done.rows_affected())
}

fn decode(row: &PgRow) -> Result<Session, StoreError> {
    let hash: String = row.try_get("script_hash")?;
    let status: String = row.try_get("status")?;
    let timeout_ms: i64 = row.try_get("timeout_ms")?;
    Ok(Session {
        request_id: row.try_get("request_id")?,
        language_title: row.try_get("language_title")?,
        language: codec::language(row.try_get("language")?, "sessions.language")?,
        user_id: row.try_get("user_id")?,
        script_content: row.try_get("script_content")?,
        script_hash: ScriptHash::from_hex(&hash).ok_or_else(|| corrupt("sessions.script_hash", &hash))?,
        context: row.try_get("context")?,
        compile_options: row.try_get("compile_options")?,
        function_language_title: row.try_get("function_language_title")?,
        timeout_ms: u64::try_from(timeout_ms).map_err(|e| corrupt("sessions.timeout_ms", e))?,
        retain: row.try_get("retain")?,
        status: SessionStatus::parse(&status).ok_or_else(|| corrupt("sessions.status", &status))?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        execution_count: row.try_get("execution_count")?,
        last_executed_at: row.try_get("last_executed_at")?,
    })
}
