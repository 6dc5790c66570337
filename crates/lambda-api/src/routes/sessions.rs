//! `GET /api/v1/sessions/{request_id}`.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, SecondsFormat, Utc};
use lambda_core::LambdaError;

use crate::auth::Caller;
use crate::wire::{ErrorResponse, SessionResponse};
use crate::{ApiError, AppState};

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A session's status and counters. Expired and closed sessions stay readable until purged.
#[utoipa::path(
    get,
    path = "/api/v1/sessions/{request_id}",
    tag = "sessions",
    params(("request_id" = String, Path, description = "The session id from initialize")),
    responses(
        (status = 200, description = "The session", body = SessionResponse),
        (status = 401, description = "UNAUTHORIZED", body = ErrorResponse),
        (status = 403, description = "FORBIDDEN: missing scope or another user's session", body = ErrorResponse),
        (status = 404, description = "NOT_FOUND", body = ErrorResponse),
        (status = 500, description = "INTERNAL_ERROR", body = ErrorResponse),
        (status = 503, description = "UNAVAILABLE", body = ErrorResponse),
    ),
    security(("bearerAuth" = []), ()),
)]
pub async fn get_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(request_id): Path<String>,
) -> Result<Json<SessionResponse>, ApiError> {
    let live = state.sessions().get(state.store().as_ref(), &request_id).await?.ok_or_else(|| {
        ApiError::for_session(LambdaError::not_found(format!("no session `{request_id}`")), &request_id)
    })?;
    let s = &live.session;
    caller.require_execute(s.language).map_err(|e| ApiError { request_id: Some(request_id.clone()), ..e })?;
    caller.require_owner(s.user_id.as_deref(), &request_id)?;
    Ok(Json(SessionResponse {
        request_id: s.request_id.clone(),
        language_title: s.language_title.clone(),
        status: live.status(Utc::now()).as_str().to_owned(),
        created_at: ts(s.created_at),
        expires_at: ts(s.expires_at),
        execution_count: live.execution_count(),
        last_executed_at: live.last_executed_at().map(ts),
        script_hash: s.script_hash.to_hex(),
        timeout_ms: s.timeout_ms,
        retain_session: s.retain,
    }))
}
