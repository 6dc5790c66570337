//! `request_logs`, `error_logs` and the session counters, written in batches
//! by the log pipeline.

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use super::codec::{self, timestamp};
use crate::{ErrorLog, LogEntry, RequestLog, SessionExecution, StoreError};

/// All or nothing: the pipeline retries a failed batch whole.
pub(super) async fn write(pool: &SqlitePool, batch: &[LogEntry]) -> Result<(), StoreError> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    for entry in batch {
        match entry {
            LogEntry::Request(r) => insert_request(&mut tx, r).await?,
            LogEntry::Error(e) => insert_error(&mut tx, e).await?,
            LogEntry::Execution(x) => count_execution(&mut tx, x).await?,
        }
    }
    tx.commit().await?;
    Ok(())
}

async fn insert_request(tx: &mut Transaction<'_, Sqlite>, r: &RequestLog) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO request_logs (request_id, language_title, user_id, status_code, duration_ms, cached, \
         request_payload, response_payload, runtime_metrics, error_code, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&r.request_id)
    .bind(&r.language_title)
    .bind(&r.user_id)
    .bind(i64::from(r.status_code))
    .bind(r.duration_ms)
    .bind(r.cached)
    .bind(codec::json(&r.request_payload))
    .bind(codec::json(&r.response_payload))
    .bind(codec::json(&r.runtime_metrics))
    .bind(&r.error_code)
    .bind(timestamp(r.created_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_error(tx: &mut Transaction<'_, Sqlite>, e: &ErrorLog) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO error_logs (request_id, language_title, error_code, message, details, created_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&e.request_id)
    .bind(&e.language_title)
    .bind(&e.error_code)
    .bind(&e.message)
    .bind(codec::json(&e.details))
    .bind(timestamp(e.created_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Batches may arrive out of order after a spill, hence the max. A session
/// purged meanwhile simply matches no row.
async fn count_execution(tx: &mut Transaction<'_, Sqlite>, x: &SessionExecution) -> Result<(), StoreError> {
    let at = timestamp(x.executed_at);
    sqlx::query(
        "UPDATE sessions SET execution_count = execution_count + 1, \
         last_executed_at = MAX(COALESCE(last_executed_at, ?), ?), \
         status = CASE WHEN ? THEN 'closed' ELSE status END \
         WHERE request_id = ?",
    )
    .bind(at)
    .bind(at)
    .bind(x.close)
    .bind(&x.request_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn request_logs(pool: &SqlitePool, request_id: &str) -> Result<Vec<RequestLog>, StoreError> {
    let rows = sqlx::query(
        "SELECT request_id, language_title, user_id, status_code, duration_ms, cached, request_payload, \
         response_payload, runtime_metrics, error_code, created_at \
         FROM request_logs WHERE request_id = ? ORDER BY id",
    )
    .bind(request_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(decode_request).collect()
}

pub(super) async fn error_logs(pool: &SqlitePool, request_id: &str) -> Result<Vec<ErrorLog>, StoreError> {
    let rows = sqlx::query(
        "SELECT request_id, language_title, error_code, message, details, created_at \
         FROM error_logs WHERE request_id = ? ORDER BY id",
    )
    .bind(request_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(decode_error).collect()
}

fn decode_request(row: &SqliteRow) -> Result<RequestLog, StoreError> {
    let status_code: i64 = row.try_get("status_code")?;
    Ok(RequestLog {
        request_id: row.try_get("request_id")?,
        language_title: row.try_get("language_title")?,
        user_id: row.try_get("user_id")?,
        status_code: u16::try_from(status_code).map_err(|e| codec::corrupt("request_logs.status_code", e))?,
        duration_ms: row.try_get("duration_ms")?,
        cached: row.try_get("cached")?,
        request_payload: codec::from_json(row.try_get("request_payload")?, "request_logs.request_payload")?,
        response_payload: codec::from_json(
            row.try_get("response_payload")?,
            "request_logs.response_payload",
        )?,
        runtime_metrics: codec::from_json(row.try_get("runtime_metrics")?, "request_logs.runtime_metrics")?,
        error_code: row.try_get("error_code")?,
        created_at: codec::from_timestamp(row.try_get("created_at")?, "request_logs.created_at")?,
    })
}

fn decode_error(row: &SqliteRow) -> Result<ErrorLog, StoreError> {
    Ok(ErrorLog {
        request_id: row.try_get("request_id")?,
        language_title: row.try_get("language_title")?,
        error_code: row.try_get("error_code")?,
        message: row.try_get("message")?,
        details: codec::from_json(row.try_get("details")?, "error_logs.details")?,
        created_at: codec::from_timestamp(row.try_get("created_at")?, "error_logs.created_at")?,
    })
}
