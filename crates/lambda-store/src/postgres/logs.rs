//! `public.request_logs`, `public.error_logs` and the session counters,
//! written in batches by the log pipeline.

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row, Transaction};

use super::codec;
use crate::{ErrorLog, LogEntry, RequestLog, SessionExecution, StoreError};

/// All or nothing: the pipeline retries a failed batch whole.
pub(super) async fn write(pool: &PgPool, batch: &[LogEntry]) -> Result<(), StoreError> {
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

async fn insert_request(tx: &mut Transaction<'_, Postgres>, r: &RequestLog) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO public.request_logs (request_id, language_title, user_id, status_code, duration_ms, \
         cached, request_payload, response_payload, runtime_metrics, error_code, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(codec::text(&r.request_id))
    .bind(codec::text(&r.language_title))
    .bind(codec::opt_text(r.user_id.as_deref()))
    .bind(i32::from(r.status_code))
    .bind(r.duration_ms)
    .bind(r.cached)
    .bind(codec::json(&r.request_payload))
    .bind(codec::json(&r.response_payload))
    .bind(codec::json(&r.runtime_metrics))
    .bind(codec::opt_text(r.error_code.as_deref()))
    .bind(r.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_error(tx: &mut Transaction<'_, Postgres>, e: &ErrorLog) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO public.error_logs (request_id, language_title, error_code, message, details, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(codec::text(&e.request_id))
    .bind(codec::text(&e.language_title))
    .bind(codec::text(&e.error_code))
    .bind(codec::text(&e.message))
    .bind(codec::json(&e.details))
    .bind(e.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Batches may arrive out of order after a spill, and from several
/// controllers, hence the GREATEST; the increment is atomic per row, so
/// counters from every controller add up. A session purged meanwhile simply
/// matches no row.
async fn count_execution(tx: &mut Transaction<'_, Postgres>, x: &SessionExecution) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE meta.sessions SET execution_count = execution_count + 1, \
         last_executed_at = GREATEST(last_executed_at, $1), \
         status = CASE WHEN $2 THEN 'closed' ELSE status END \
         WHERE request_id = $3",
    )
    .bind(x.executed_at)
    .bind(x.close)
    .bind(codec::text(&x.request_id))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn request_logs(pool: &PgPool, request_id: &str) -> Result<Vec<RequestLog>, StoreError> {
    let rows = sqlx::query(
        "SELECT request_id, language_title, user_id, status_code, duration_ms, cached, request_payload, \
         response_payload, runtime_metrics, error_code, created_at \
         FROM public.request_logs WHERE request_id = $1 ORDER BY id",
    )
    .bind(request_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(decode_request).collect()
}

pub(super) async fn error_logs(pool: &PgPool, request_id: &str) -> Result<Vec<ErrorLog>, StoreError> {
    let rows = sqlx::query(
        "SELECT request_id, language_title, error_code, message, details, created_at \
         FROM public.error_logs WHERE request_id = $1 ORDER BY id",
    )
    .bind(request_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(decode_error).collect()
}

fn decode_request(row: &PgRow) -> Result<RequestLog, StoreError> {
    let status_code: i32 = row.try_get("status_code")?;
    Ok(RequestLog {
        request_id: row.try_get("request_id")?,
        language_title: row.try_get("language_title")?,
        user_id: row.try_get("user_id")?,
        status_code: u16::try_from(status_code).map_err(|e| codec::corrupt("request_logs.status_code", e))?,
        duration_ms: row.try_get("duration_ms")?,
        cached: row.try_get("cached")?,
        request_payload: row.try_get("request_payload")?,
        response_payload: row.try_get("response_payload")?,
        runtime_metrics: row.try_get("runtime_metrics")?,
        error_code: row.try_get("error_code")?,
        created_at: row.try_get("created_at")?,
    })
}

fn decode_error(row: &PgRow) -> Result<ErrorLog, StoreError> {
    Ok(ErrorLog {
        request_id: row.try_get("request_id")?,
        language_title: row.try_get("language_title")?,
        error_code: row.try_get("error_code")?,
        message: row.try_get("message")?,
        details: row.try_get("details")?,
        created_at: row.try_get("created_at")?,
    })
}
