//! `request_logs`, `error_logs` and the session counters, written in batches
//! by the log pipeline.

use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};

use super::codec::{self, timestamp};
use crate::batch::{self, ROWS_PER_INSERT, Tally};
use crate::{ErrorLog, LogEntry, RequestLog, StoreError};

/// All or nothing: the pipeline retries a failed batch whole. Rows go in
/// multi-row `INSERT`s in arrival order; each session's counter is updated
/// once per batch.
pub(super) async fn write(pool: &SqlitePool, batch: &[LogEntry]) -> Result<(), StoreError> {
    if batch.is_empty() {
        return Ok(());
    }
    let grouped = batch::group(batch);
    let mut tx = pool.begin().await?;
    for chunk in grouped.requests.chunks(ROWS_PER_INSERT) {
        insert_requests(&mut tx, chunk).await?;
    }
    for chunk in grouped.errors.chunks(ROWS_PER_INSERT) {
        insert_errors(&mut tx, chunk).await?;
    }
    for tally in &grouped.tallies {
        count_executions(&mut tx, tally).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn insert_requests(tx: &mut Transaction<'_, Sqlite>, rows: &[&RequestLog]) -> Result<(), StoreError> {
    let mut q = QueryBuilder::<Sqlite>::new(
        "INSERT INTO request_logs (request_id, language_title, user_id, status_code, duration_ms, cached, \
         request_payload, response_payload, runtime_metrics, error_code, created_at) ",
    );
    q.push_values(rows, |mut b, r| {
        b.push_bind(&r.request_id)
            .push_bind(&r.language_title)
            .push_bind(&r.user_id)
            .push_bind(i64::from(r.status_code))
            .push_bind(r.duration_ms)
            .push_bind(r.cached)
            .push_bind(r.request_payload.as_str())
            .push_bind(r.response_payload.as_str())
            .push_bind(r.runtime_metrics.as_str())
            .push_bind(&r.error_code)
            .push_bind(timestamp(r.created_at));
    });
    q.build().execute(&mut **tx).await?;
    Ok(())
}

async fn insert_errors(tx: &mut Transaction<'_, Sqlite>, rows: &[&ErrorLog]) -> Result<(), StoreError> {
    let mut q = QueryBuilder::<Sqlite>::new(
        "INSERT INTO error_logs (request_id, language_title, error_code, message, details, created_at) ",
    );
    q.push_values(rows, |mut b, e| {
        b.push_bind(&e.request_id)
            .push_bind(&e.language_title)
            .push_bind(&e.error_code)
            .push_bind(&e.message)
            .push_bind(codec::json(&e.details))
            .push_bind(timestamp(e.created_at));
    });
    q.build().execute(&mut **tx).await?;
    Ok(())
}

/// Batches may arrive out of order after a spill, hence the max. A session
/// purged meanwhile simply matches no row.
async fn count_executions(tx: &mut Transaction<'_, Sqlite>, t: &Tally<'_>) -> Result<(), StoreError> {
    let at = timestamp(t.last_executed_at);
    sqlx::query(
        "UPDATE sessions SET execution_count = execution_count + ?, \
         last_executed_at = MAX(COALESCE(last_executed_at, ?), ?), \
         status = CASE WHEN ? THEN 'closed' ELSE status END \
         WHERE request_id = ?",
    )
    .bind(t.count)
    .bind(at)
    .bind(at)
    .bind(t.close)
    .bind(t.request_id)
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
        request_payload: codec::json_text(row.try_get("request_payload")?, "request_logs.request_payload")?,
        response_payload: codec::json_text(
            row.try_get("response_payload")?,
            "request_logs.response_payload",
        )?,
        runtime_metrics: codec::json_text(row.try_get("runtime_metrics")?, "request_logs.runtime_metrics")?,
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
