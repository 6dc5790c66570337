//! `GET /api/v1/sessions/{request_id}`.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, SecondsFormat, Utc};
use lambda_core::LambdaError;
use serde_json::{Value, json};

use crate::{ApiError, AppState};

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub async fn get_session(
    State(state): State<AppState>,
    Path(request_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let live = state.sessions().get(state.store().as_ref(), &request_id).await?.ok_or_else(|| {
        ApiError::for_session(LambdaError::not_found(format!("no session `{request_id}`")), &request_id)
    })?;
    let s = &live.session;
    Ok(Json(json!({
        "request_id": s.request_id,
        "language_title": s.language_title,
        "status": live.status(Utc::now()).as_str(),
        "created_at": ts(s.created_at),
        "expires_at": ts(s.expires_at),
        "execution_count": live.execution_count(),
        "last_executed_at": live.last_executed_at().map(ts),
        "script_hash": s.script_hash.to_hex(),
        "timeout_ms": s.timeout_ms,
        "retain_session": s.retain,
    })))
}
