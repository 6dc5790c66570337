//! `POST /api/v1/execute/{request_id}`: the hot path. Session → cache →
//! runtime → response; logs and counters go to the pipeline beside it.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Request, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use lambda_core::{ErrorCode, LambdaError, Language, SessionStatus, canonical_json, write_canonical_json};
use lambda_runtime::{Invocation, InvokeError, InvokeOutcome, RuntimeMetrics};
use lambda_store::{ErrorLog, JsonText, LogEntry, RequestLog, SessionExecution};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::body::read_json;
use crate::error::error_body;
use crate::metrics::{CacheLabels, OutcomeLabels, RuntimeLabels, StartLabels};
use crate::schema::CheckError;
use crate::sessions::LiveSession;
use crate::wire::{ErrorResponse, ExecuteRequest, ExecuteResponse, ExecutionMetrics};
use crate::{ApiError, AppState};

/// `X-Cache-Control`, parsed.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CachePolicy {
    read: bool,
    write: bool,
    ttl: Option<Duration>,
}

fn cache_policy(headers: &HeaderMap) -> Result<CachePolicy, LambdaError> {
    let mut policy = CachePolicy { read: true, write: true, ttl: None };
    let Some(value) = headers.get("x-cache-control") else { return Ok(policy) };
    let bad = || {
        LambdaError::invalid_request("X-Cache-Control must be `no-cache`, `no-store` or `max-age=<seconds>`")
            .with("header", "X-Cache-Control")
    };
    for directive in value.to_str().map_err(|_| bad())?.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match directive.to_ascii_lowercase().as_str() {
            "no-cache" => policy.read = false,
            "no-store" => (policy.read, policy.write) = (false, false),
            d => {
                let secs = d.strip_prefix("max-age=").and_then(|n| n.parse::<u64>().ok()).ok_or_else(bad)?;
                policy.ttl = Some(Duration::from_secs(secs));
            }
        }
    }
    Ok(policy)
}

/// What the cache holds for one result. Written from borrowed parts, read
/// back owned; the script's answer stays JSON text both ways.
#[derive(Serialize, Deserialize)]
struct CachedResult<'a> {
    result: Cow<'a, RawValue>,
    execution_time: u64,
    #[serde(default, skip_serializing_if = "no_logs")]
    logs: Cow<'a, [String]>,
}

#[expect(clippy::ptr_arg, reason = "serde's skip_serializing_if hands over the field as it is")]
fn no_logs(logs: &Cow<'_, [String]>) -> bool {
    logs.is_empty()
}

/// `request_logs.request_payload`.
#[derive(Serialize)]
struct RequestPayload<'a> {
    params: &'a Value,
}

/// Results are keyed by script, owner, the canonical context and the
/// canonical params; the part every execute of a session shares is hashed once.
fn cache_key(live: &LiveSession, params: &Value) -> String {
    let seed = live.cache_seed.get_or_init(|| {
        let mut h = Sha256::new();
        h.update(live.session.script_hash.to_hex().as_bytes());
        h.update([0]);
        h.update(live.owner.as_bytes());
        h.update([0]);
        h.update(canonical_json(&live.session.context).as_bytes());
        h.update([0]);
        h
    });
    let mut h = seed.clone();
    let mut text = Vec::with_capacity(128);
    write_canonical_json(params, &mut text);
    h.update(&text);
    let mut hex = [0u8; 64];
    // 32 bytes always fit 64 hex digits.
    let _ = hex::encode_to_slice(h.finalize(), &mut hex);
    let mut key = String::with_capacity(CACHE_KEY_PREFIX.len() + hex.len());
    key.push_str(CACHE_KEY_PREFIX);
    key.extend(hex.iter().map(|&b| char::from(b)));
    key
}

const CACHE_KEY_PREFIX: &str = "result:";

/// Runs a session's prepared script with new params.
#[utoipa::path(
    post,
    path = "/api/v1/execute/{request_id}",
    tag = "sessions",
    params(
        ("request_id" = String, Path, description = "The session id from initialize"),
        ("X-Cache-Control" = Option<String>, Header, description = "`no-cache` (do not read the cache), `no-store` (neither read nor write), `max-age=<seconds>` (TTL of this result)"),
    ),
    request_body = ExecuteRequest,
    responses(
        (status = 200, description = "The script's result", body = ExecuteResponse,
            headers(
                ("X-RateLimit-Limit" = u32, description = "Requests allowed per minute (when rate limits are active)"),
                ("X-RateLimit-Remaining" = u32, description = "Requests left in the current window"),
                ("X-RateLimit-Reset" = u64, description = "Seconds until the full quota is back"),
            )),
        (status = 400, description = "INVALID_REQUEST or INVALID_PARAMS", body = ErrorResponse),
        (status = 401, description = "UNAUTHORIZED", body = ErrorResponse),
        (status = 403, description = "FORBIDDEN: missing scope or another user's session", body = ErrorResponse),
        (status = 404, description = "NOT_FOUND: unknown, expired or closed session", body = ErrorResponse),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorResponse),
        (status = 429, description = "RATE_LIMITED (with Retry-After)", body = ErrorResponse,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 460, description = "RUNTIME_ERROR: the script threw", body = ErrorResponse),
        (status = 461, description = "COMPILE_ERROR", body = ErrorResponse),
        (status = 462, description = "RESOURCE_LIMIT", body = ErrorResponse),
        (status = 500, description = "INTERNAL_ERROR", body = ErrorResponse),
        (status = 503, description = "UNAVAILABLE", body = ErrorResponse),
        (status = 504, description = "TIMEOUT", body = ErrorResponse),
    ),
    security(("bearerAuth" = []), ()),
)]
pub async fn execute(
    State(state): State<AppState>,
    caller: Caller,
    Path(request_id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let mut seen = Seen::default();
    let outcome = run_execute(&state, &caller, &request_id, request, started, &mut seen).await;
    match outcome {
        Err(e) if !seen.logged => {
            log_refusal(&state, &caller, &request_id, seen, &e.error, started);
            Err(e)
        }
        outcome => outcome,
    }
}

/// What an execute got to know before it failed, for the request log of a
/// refusal: the contract logs every execute, successful or not.
#[derive(Default)]
struct Seen {
    live: Option<Arc<LiveSession>>,
    /// The serialized request payload, once the body was read.
    request: Option<JsonText>,
    /// Set once the execute queued its own log rows.
    logged: bool,
}

async fn run_execute(
    state: &AppState,
    caller: &Caller,
    request_id: &str,
    request: Request,
    started: Instant,
    seen: &mut Seen,
) -> Result<Response, ApiError> {
    // The request's own headers, moved rather than cloned (a `HeaderMap`
    // extractor clones them): a measurable share of a cached execute.
    let (Parts { headers, .. }, body) = request.into_parts();
    let not_found = || {
        ApiError::for_session(LambdaError::not_found(format!("no active session `{request_id}`")), request_id)
    };
    let found = state.sessions().get(state.store().as_ref(), request_id).await;
    let found =
        found.map_err(|e| ApiError { request_id: Some(request_id.to_owned()), ..ApiError::from(e) })?;
    let live = found.ok_or_else(not_found)?;
    seen.live = Some(live.clone());
    caller
        .require_execute(live.session.language)
        .map_err(|e| ApiError { request_id: Some(request_id.to_owned()), ..e })?;
    caller.require_owner(live.session.user_id.as_deref(), request_id)?;
    // An expired or used-up session is 404 whatever the request holds.
    if live.status(Utc::now()) != SessionStatus::Active {
        return Err(not_found());
    }
    let at_session = |e: LambdaError| ApiError::for_session(e, request_id);
    let policy = cache_policy(&headers).map_err(at_session)?;
    let body: ExecuteRequest = read_json(&headers, body, state.config().limits.max_body_bytes)
        .await
        .map_err(|e| ApiError::for_session(e.error, request_id))?;
    let params = match body.params {
        Value::Null => json!({}),
        params @ Value::Object(_) => params,
        _ => {
            let e = LambdaError::invalid_request("params must be a JSON object").with("field", "params");
            return Err(at_session(e));
        }
    };
    // Serialized before the params move into the invocation.
    let logged = state.config().db_logging.then(|| JsonText::of(&RequestPayload { params: &params }));
    if let Some(function) = &live.session.function_language_title {
        match state.schemas().check(state.store().as_ref(), function, &params).await {
            Ok(()) => {}
            Err(CheckError::Invalid(e)) => {
                seen.logged = true;
                log_execution(state, &live, logged, Err(&e), false, started, &RuntimeMetrics::default());
                return Err(at_session(e));
            }
            Err(CheckError::Store(e)) => {
                seen.request = logged;
                return Err(ApiError { request_id: Some(request_id.to_owned()), ..ApiError::from(e) });
            }
        }
    }
    if !state.sessions().claim(&live, Utc::now()).await {
        seen.request = logged;
        return Err(not_found());
    }
    // From here on every outcome queues its own log rows.
    seen.logged = true;
    let key = (policy.read || policy.write).then(|| cache_key(&live, &params));
    if let Some(key) = key.as_deref().filter(|_| policy.read)
        && let Some(hit) = cached(state, key).await
    {
        live.record_execution(Utc::now());
        let response = success_body(&live, hit.execution_time, true, &hit.result, &hit.logs, None);
        let reply = json_response(&response);
        log_execution(state, &live, logged, Ok(response), true, started, &RuntimeMetrics::default());
        return Ok(reply);
    }

    let invocation = Invocation {
        script: live.script.clone(),
        owner: live.owner.clone(),
        request_id: request_id.to_owned(),
        params,
        context: live.session.context.clone(),
        timeout: Duration::from_millis(live.session.timeout_ms),
    };
    let outcome = state.runtime().invoke(invocation).await;
    live.record_execution(Utc::now());
    match outcome {
        Ok(InvokeOutcome { result, logs, metrics }) => {
            record_run(state, live.session.language, "success", &metrics);
            let execution_time = metrics.wall_us / 1000;
            let result = JsonText::of(&result);
            if let Some(key) = key.as_deref().filter(|_| policy.write) {
                let ttl = policy.ttl.unwrap_or(state.config().cache_ttl);
                let entry = CachedResult {
                    result: Cow::Borrowed(result.raw()),
                    execution_time,
                    logs: Cow::Borrowed(&logs),
                };
                store_cached(state, key, &entry, ttl).await;
            }
            let figures = ExecutionMetrics {
                wall_us: metrics.wall_us,
                cold_start: metrics.cold_start,
                cpu_us: metrics.cpu_us,
                peak_memory_bytes: metrics.peak_memory_bytes,
            };
            let response = success_body(&live, execution_time, false, result.raw(), &logs, Some(figures));
            let reply = json_response(&response);
            log_execution(state, &live, logged, Ok(response), false, started, &metrics);
            Ok(reply)
        }
        Err(InvokeError { mut error, logs, metrics }) => {
            record_run(state, live.session.language, error.code.as_str(), &metrics);
            if !logs.is_empty() {
                error.details.insert("logs".into(), json!(logs));
            }
            log_execution(state, &live, logged, Err(&error), false, started, &metrics);
            Err(ApiError::for_session(error, request_id))
        }
    }
}

/// A 200 whose body is the text the request log keeps too.
fn json_response(body: &JsonText) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body.as_str().to_owned()).into_response()
}

/// The 200 body, serialized once: it goes both to the client and to the
/// request log.
fn success_body(
    live: &LiveSession,
    execution_time: u64,
    cached: bool,
    result: &RawValue,
    logs: &[String],
    metrics: Option<ExecutionMetrics>,
) -> JsonText {
    JsonText::of(&ExecuteResponse {
        request_id: &live.session.request_id,
        language_title: &live.session.language_title,
        execution_time,
        cached,
        result,
        logs: (!logs.is_empty()).then_some(logs),
        metrics,
    })
}

async fn cached(state: &AppState, key: &str) -> Option<CachedResult<'static>> {
    let hit = match state.cache().get(key).await {
        Ok(hit) => hit.and_then(|bytes| serde_json::from_slice::<CachedResult>(&bytes).ok()),
        Err(e) => {
            tracing::warn!(error = %e, "result cache read failed; running uncached");
            None
        }
    };
    let result = if hit.is_some() { "hit" } else { "miss" };
    state.metrics().cache.get_or_create(&CacheLabels { result: result.into() }).inc();
    hit
}

async fn store_cached(state: &AppState, key: &str, value: &CachedResult<'_>, ttl: Duration) {
    let Ok(bytes) = serde_json::to_vec(value) else { return };
    if let Err(e) = state.cache().set(key, Arc::from(bytes), ttl).await {
        tracing::warn!(error = %e, "result cache write failed");
    }
}

fn record_run(state: &AppState, language: Language, outcome: &'static str, metrics: &RuntimeMetrics) {
    let m = state.metrics();
    let runtime = language.as_str();
    m.executions.get_or_create(&OutcomeLabels { runtime: runtime.into(), outcome: outcome.into() }).inc();
    m.execution_duration
        .get_or_create(&RuntimeLabels { runtime: runtime.into() })
        .observe(metrics.wall_us as f64 / 1e6);
    let kind = if metrics.cold_start { "cold" } else { "warm" };
    m.starts.get_or_create(&StartLabels { runtime: runtime.into(), kind: kind.into() }).inc();
}

/// Queues the execute's log rows and counter update; never waits for storage.
/// An execute refused before it ran (bad params) is logged but not counted.
/// `request` is the serialized request payload, `None` when request logging
/// is off.
fn log_execution(
    state: &AppState,
    live: &LiveSession,
    request: Option<JsonText>,
    outcome: Result<JsonText, &LambdaError>,
    cached: bool,
    started: Instant,
    metrics: &RuntimeMetrics,
) {
    let now = Utc::now();
    let session = &live.session;
    let logs = state.logs();
    let ran = !matches!(outcome, Err(e) if e.code == ErrorCode::InvalidParams);
    if ran {
        logs.submit(LogEntry::Execution(SessionExecution {
            request_id: session.request_id.clone(),
            executed_at: now,
            close: !session.retain,
        }));
    }
    let Some(request) = request else { return };
    let row = RowOf {
        request_id: &session.request_id,
        language_title: &session.language_title,
        user_id: session.user_id.as_deref(),
    };
    queue_request_log(state, row, request, outcome, cached, started, metrics);
}

/// The log rows of an execute refused before it ran: an unknown or used-up
/// session, another user's, a bad header or body, storage down.
fn log_refusal(
    state: &AppState,
    caller: &Caller,
    request_id: &str,
    seen: Seen,
    error: &LambdaError,
    started: Instant,
) {
    if !state.config().db_logging {
        return;
    }
    let session = seen.live.as_ref().map(|live| &live.session);
    let row = RowOf {
        request_id,
        language_title: session.map_or("", |s| s.language_title.as_str()),
        user_id: caller.user_id.as_deref().or(session.and_then(|s| s.user_id.as_deref())),
    };
    let request = seen.request.unwrap_or_else(|| JsonText::of(&Value::Null));
    queue_request_log(state, row, request, Err(error), false, started, &RuntimeMetrics::default());
}

/// Who a request log row is about.
#[derive(Clone, Copy)]
struct RowOf<'a> {
    request_id: &'a str,
    language_title: &'a str,
    user_id: Option<&'a str>,
}

/// One `request_logs` row, and an `error_logs` row for a failure.
fn queue_request_log(
    state: &AppState,
    row: RowOf<'_>,
    request: JsonText,
    outcome: Result<JsonText, &LambdaError>,
    cached: bool,
    started: Instant,
    metrics: &RuntimeMetrics,
) {
    let now = Utc::now();
    let logs = state.logs();
    let error = outcome.as_ref().err().copied();
    let (status_code, response) = match outcome {
        Ok(body) => (200, body),
        Err(e) => (e.code.http_status(), JsonText::of(&error_body(e, Some(row.request_id)))),
    };
    logs.submit(LogEntry::Request(RequestLog {
        request_id: row.request_id.to_owned(),
        language_title: row.language_title.to_owned(),
        user_id: row.user_id.map(str::to_owned),
        status_code,
        duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        cached,
        request_payload: request,
        response_payload: response,
        runtime_metrics: JsonText::of(metrics),
        error_code: error.map(|e| e.code.as_str().to_owned()),
        created_at: now,
    }));
    if let Some(error) = error {
        logs.submit(LogEntry::Error(ErrorLog {
            request_id: row.request_id.to_owned(),
            language_title: row.language_title.to_owned(),
            error_code: error.code.as_str().to_owned(),
            message: error.message.clone(),
            details: Value::Object(error.details.clone()),
            created_at: now,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn policy(value: &str) -> Result<CachePolicy, lambda_core::ErrorCode> {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-cache-control",
            HeaderValue::from_str(value).map_err(|_| lambda_core::ErrorCode::InvalidRequest)?,
        );
        cache_policy(&headers).map_err(|e| e.code)
    }

    #[test]
    fn parses_cache_control() {
        assert_eq!(policy("no-cache"), Ok(CachePolicy { read: false, write: true, ttl: None }));
        assert_eq!(policy("no-store"), Ok(CachePolicy { read: false, write: false, ttl: None }));
        assert_eq!(
            policy("max-age=30"),
            Ok(CachePolicy { read: true, write: true, ttl: Some(Duration::from_secs(30)) })
        );
        assert_eq!(
            policy("No-Cache, max-age=5"),
            Ok(CachePolicy { read: false, write: true, ttl: Some(Duration::from_secs(5)) })
        );
        assert!(policy("max-age=-1").is_err());
        assert!(policy("forever").is_err());
        assert_eq!(cache_policy(&HeaderMap::new()), Ok(CachePolicy { read: true, write: true, ttl: None }));
    }
}
