//! The `sessions` table: insert, lookup and the expiry sweeps.

use chrono::{DateTime, Utc};
use lambda_core::{ScriptHash, Session, SessionStatus};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

use super::codec::{self, corrupt, timestamp};
use crate::StoreError;

const COLUMNS: &str = "request_id, language_title, language, user_id, script_content, script_hash, \
     context, compile_options, function_language_title, timeout_ms, retain, status, created_at, \
     expires_at, execution_count, last_executed_at";

pub(super) async fn insert(pool: &SqlitePool, s: &Session) -> Result<(), StoreError> {
    let timeout_ms = i64::try_from(s.timeout_ms).map_err(|e| corrupt("timeout_ms", e))?;
    let sql =
        format!("INSERT INTO sessions ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    let result = sqlx::query(&sql)
        .bind(&s.request_id)
        .bind(&s.language_title)
        .bind(s.language.as_str())
        .bind(&s.user_id)
        .bind(&s.script_content)
        .bind(s.script_hash.to_hex())
        .bind(codec::json(&s.context))
        .bind(s.compile_options.as_ref().map(codec::json))
        .bind(&s.function_language_title)
        .bind(timeout_ms)
        .bind(s.retain)
        .bind(s.status.as_str())
        .bind(timestamp(s.created_at))
        .bind(timestamp(s.expires_at))
        .bind(s.execution_count)
        .bind(s.last_executed_at.map(timestamp))
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

pub(super) async fn get(pool: &SqlitePool, request_id: &str) -> Result<Option<Session>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM sessions WHERE request_id = ?");
    let row = sqlx::query(&sql).bind(request_id).fetch_optional(pool).await?;
    row.as_ref().map(decode).transpose()
}

pub(super) async fn count_active(pool: &SqlitePool, now: DateTime<Utc>) -> Result<i64, StoreError> {
    let count =
        sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE status = 'active' AND expires_at > ?")
            .bind(timestamp(now))
            .fetch_one(pool)
            .await?;
    Ok(count)
}

/// Same boundary as `Session::status_at`: expired from `expires_at` on.
pub(super) async fn expire(pool: &SqlitePool, now: DateTime<Utc>) -> Result<u64, StoreError> {
    let done =
        sqlx::query("UPDATE sessions SET status = 'expired' WHERE status = 'active' AND expires_at <= ?")
            .bind(timestamp(now))
            .execute(pool)
            .await?;
    Ok(done.rows_affected())
}

pub(super) async fn purge(pool: &SqlitePool, before: DateTime<Utc>) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM sessions WHERE status IN ('expired', 'closed') AND expires_at < ?")
        .bind(timestamp(before))
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

fn decode(row: &SqliteRow) -> Result<Session, StoreError> {
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
        context: codec::from_json(row.try_get("context")?, "sessions.context")?,
        compile_options: codec::from_opt_json(row.try_get("compile_options")?, "sessions.compile_options")?,
        function_language_title: row.try_get("function_language_title")?,
        timeout_ms: u64::try_from(timeout_ms).map_err(|e| corrupt("sessions.timeout_ms", e))?,
        retain: row.try_get("retain")?,
        status: SessionStatus::parse(&status).ok_or_else(|| corrupt("sessions.status", &status))?,
        created_at: codec::from_timestamp(row.try_get("created_at")?, "sessions.created_at")?,
        expires_at: codec::from_timestamp(row.try_get("expires_at")?, "sessions.expires_at")?,
        execution_count: row.try_get("execution_count")?,
        last_executed_at: row
            .try_get::<Option<i64>, _>("last_executed_at")?
            .map(|t| codec::from_timestamp(t, "sessions.last_executed_at"))
            .transpose()?,
    })
}
