//! `public.request_logs`, `public.error_logs` and the session counters,
//! written in batches by the log pipeline.

use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, QueryBuilder, Row, Transaction};

use super::codec;
use crate::batch::{self, ROWS_PER_INSERT, Tally};
use crate::{ErrorLog, LogEntry, RequestLog, StoreError};

/// All or nothing: the pipeline retries a failed batch whole. Rows go in
/// multi-row `INSERT`s in arrival order; each session's counter is updated
/// once per batch.
pub(super) async fn write(pool: &PgPool, batch: &[LogEntry]) -> Result<(), StoreError> {
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

async fn insert_requests(tx: &mut Transaction<'_, Postgres>, rows: &[&RequestLog]) -> Result<(), StoreError> {
    let mut q = QueryBuilder::<Postgres>::new(
        "INSERT INTO public.request_logs (request_id, language_title, user_id, status_code, duration_ms, \
         cached, request_payload, response_payload, runtime_metrics, error_code, created_at) ",
    );
    q.push_values(rows, |mut b, r| {
        b.push_bind(codec::text(&r.request_id))
            .push_bind(codec::text(&r.language_title))
            .push_bind(codec::opt_text(r.user_id.as_deref()))
            .push_bind(i32::from(r.status_code))
            .push_bind(r.duration_ms)
            .push_bind(r.cached)
            .push_bind(codec::json_text(&r.request_payload))
            .push_bind(codec::json_text(&r.response_payload))
            .push_bind(codec::json_text(&r.runtime_metrics))
            .push_bind(codec::opt_text(r.error_code.as_deref()))
            .push_bind(r.created_at);
    });
    q.build().execute(&mut **tx).await?;
    Ok(())
}

async fn insert_errors(tx: &mut Transaction<'_, Postgres>, rows: &[&ErrorLog]) -> Result<(), StoreError> {
    let mut q = QueryBuilder::<Postgres>::new(
        "INSERT INTO public.error_logs (request_id, language_title, error_code, message, details, created_at) ",
    );
    q.push_values(rows, |mut b, e| {
        b.push_bind(codec::text(&e.request_id))
            .push_bind(codec::text(&e.language_title))
            .push_bind(codec::text(&e.error_code))
            .push_bind(codec::text(&e.message))
            .push_bind(codec::json(&e.details))
            .push_bind(e.created_at);
    });
    q.build().execute(&mut **tx).await?;
    Ok(())
}

/// Batches may arrive out of order after a spill, and from several
/// controllers, hence the GREATEST; the increment is atomic per row, so
/// counters from every controller add up. A session purged meanwhile simply
/// matches no row.
async fn count_executions(tx: &mut Transaction<'_, Postgres>, t: &Tally<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE meta.sessions SET execution_count = execution_count + $1, \
         last_executed_at = GREATEST(last_executed_at, $2), \
         status = CASE WHEN $3 THEN 'closed' ELSE status END \
         WHERE request_id = $4",
    )
    .bind(t.count)
    .bind(t.last_executed_at)
    .bind(t.close)
    .bind(codec::text(t.request_id))
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
        request_payload: row.try_get::<Value, _>("request_payload")?.into(),
        response_payload: row.try_get::<Value, _>("response_payload")?.into(),
        runtime_metrics: row.try_get::<Value, _>("runtime_metrics")?.into(),
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
