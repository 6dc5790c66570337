//! `POST /api/v1/initialize`: validate and prepare a script once, store the session.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use chrono::Utc;
use lambda_core::{
    ErrorCode, Function, FunctionKind, LambdaError, LanguageTitle, ScriptHash, Session, SessionStatus,
    valid_client_request_id,
};
use lambda_runtime::PrepareRequest;
use serde_json::{Map, Value, json};

use crate::auth::Caller;
use crate::body::read_json;
use crate::metrics::RuntimeLabels;
use crate::sessions::LiveSession;
use crate::wire::{ErrorResponse, InitializeRequest, InitializeResponse};
use crate::{ApiError, AppState};

/// The parts of `context` the platform reads; the whole object goes to the script.
struct ContextOptions {
    user_id: Option<String>,
    timeout_ms: Option<u64>,
    retain: bool,
    compile_options: Option<Value>,
}

fn context_options(context: &Map<String, Value>) -> Result<ContextOptions, LambdaError> {
    let bad = |field: &str, want: &str| {
        LambdaError::invalid_request(format!("context.{field} must be {want}"))
            .with("field", format!("context.{field}"))
    };
    let user_id = match context.get("user_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => Some(s.clone()),
        Some(_) => return Err(bad("user_id", "a non-empty string of at most 256 characters")),
    };
    let timeout_ms = match context.get("timeout_ms") {
        None | Some(Value::Null) => None,
        Some(v) => {
            Some(v.as_u64().filter(|&ms| ms > 0).ok_or_else(|| bad("timeout_ms", "a positive integer"))?)
        }
    };
    let retain = match context.get("retain_session") {
        None | Some(Value::Null) => true,
        Some(v) => v.as_bool().ok_or_else(|| bad("retain_session", "a boolean"))?,
    };
    let compile_options = match context.get("compile_options") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => return Err(bad("compile_options", "an object")),
    };
    Ok(ContextOptions { user_id, timeout_ms, retain, compile_options })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, LambdaError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str().map_err(|_| {
                LambdaError::invalid_request(format!("{name} is not valid ASCII")).with("header", name)
            })
        })
        .transpose()
}

/// Validates and prepares a script once and stores the session.
#[utoipa::path(
    post,
    path = "/api/v1/initialize",
    tag = "sessions",
    params(
        ("Language-Title" = String, Header, description = "`<language>-<title>`, e.g. `nodejs-calculator`; languages: nodejs (also `js-`), python, rust, wasm",
            pattern = "^[A-Za-z0-9][A-Za-z0-9._]*-[A-Za-z0-9._-]+$", max_length = 128),
        ("X-Request-ID" = Option<String>, Header, description = "Client-chosen session id; a retry with the same script returns the same session",
            pattern = "^[A-Za-z0-9._-]{1,64}$"),
    ),
    request_body = InitializeRequest,
    responses(
        (status = 200, description = "Session created", body = InitializeResponse),
        (status = 400, description = "INVALID_REQUEST", body = ErrorResponse),
        (status = 401, description = "UNAUTHORIZED", body = ErrorResponse),
        (status = 403, description = "FORBIDDEN", body = ErrorResponse),
        (status = 404, description = "NOT_FOUND: no function registered under this title", body = ErrorResponse),
        (status = 409, description = "CONFLICT: X-Request-ID already used", body = ErrorResponse),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorResponse),
        (status = 429, description = "RATE_LIMITED", body = ErrorResponse),
        (status = 461, description = "COMPILE_ERROR", body = ErrorResponse),
        (status = 500, description = "INTERNAL_ERROR", body = ErrorResponse),
        (status = 503, description = "UNAVAILABLE", body = ErrorResponse),
        (status = 504, description = "TIMEOUT while preparing", body = ErrorResponse),
    ),
    security(("bearerAuth" = []), ()),
)]
pub async fn initialize(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<InitializeResponse>, ApiError> {
    let config = state.config();
    let raw_title = header(&headers, "language-title")?.ok_or_else(|| {
        LambdaError::invalid_request("the Language-Title header is required").with("header", "Language-Title")
    })?;
    let title = config.languages.parse(raw_title.trim())?;
    caller.require_execute(title.language())?;
    let client_id = header(&headers, "x-request-id")?.map(str::trim);
    if let Some(id) = client_id.filter(|id| !valid_client_request_id(id)) {
        return Err(LambdaError::invalid_request(format!(
            "X-Request-ID `{id}` must match [A-Za-z0-9._-]{{1,64}}"
        ))
        .with("header", "X-Request-ID")
        .into());
    }
    // A body may carry the script plus its context: allow both bounds.
    let body_limit = config.limits.max_script_bytes.saturating_add(config.limits.max_body_bytes);
    let body: InitializeRequest = read_json(&headers, body, body_limit).await?;
    let context = match body.context {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(LambdaError::invalid_request("context must be a JSON object")
                .with("field", "context")
                .into());
        }
    };
    let mut options = context_options(&context)?;
    if caller.is_enforced() {
        // With auth on, the owner is the token's subject, never `context.user_id`.
        options.user_id = caller.user_id.clone();
    }

    let (script, function_language_title) = resolve_script(&state, &title, body.script_content).await?;
    let compile_options = if title.language().is_compiled() { options.compile_options.clone() } else { None };
    let hash = ScriptHash::compute(title.language(), &script, compile_options.as_ref());

    let context = Value::Object(context);
    let asked = Asked { user_id: options.user_id.as_deref(), title: &title, context: &context, hash };
    if let Some(id) = client_id
        && let Some(existing) = state.sessions().get(state.store().as_ref(), id).await?
    {
        return idempotent_retry(&existing, &asked);
    }

    let now = Utc::now();
    let limits = &config.limits;
    let session = Session {
        request_id: client_id.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned),
        language_title: title.as_str().to_owned(),
        language: title.language(),
        user_id: options.user_id.clone(),
        script_content: script,
        script_hash: hash,
        context,
        compile_options: compile_options.clone(),
        function_language_title,
        timeout_ms: u64::try_from(limits.effective_timeout(options.timeout_ms).as_millis())
            .unwrap_or(u64::MAX),
        retain: options.retain,
        status: SessionStatus::Active,
        created_at: now,
        expires_at: now + limits.session_expiry,
        execution_count: 0,
        last_executed_at: None,
    };
    let live = LiveSession::new(session);
    state
        .runtime()
        .prepare(PrepareRequest { script: live.script.clone(), owner: live.owner.clone() })
        .await
        .map_err(|e| ApiError::for_session(e, &live.session.request_id))?;

    match state.store().insert_session(&live.session).await {
        Ok(()) => {}
        Err(lambda_store::StoreError::Conflict(_)) => {
            // Lost a race with a concurrent initialize using the same X-Request-ID.
            let existing = state.sessions().get(state.store().as_ref(), &live.session.request_id).await?;
            return match existing {
                Some(existing) => {
                    let session = &live.session;
                    let asked = Asked {
                        user_id: session.user_id.as_deref(),
                        title: &title,
                        context: &session.context,
                        hash,
                    };
                    idempotent_retry(&existing, &asked)
                }
                None => Err(LambdaError::new(ErrorCode::Conflict, "X-Request-ID is already in use").into()),
            };
        }
        Err(e) => return Err(e.into()),
    }
    if live.session.function_language_title.is_none() {
        register_dynamic(&state, &title, &live.session).await;
    }
    let live = state.sessions().insert(live.session).await;
    state
        .metrics()
        .sessions_created
        .get_or_create(&RuntimeLabels { runtime: title.language().as_str().into() })
        .inc();
    Ok(Json(initialized_body(&live)))
}

/// The session's script: the body's, or the registered function's.
async fn resolve_script(
    state: &AppState,
    title: &LanguageTitle,
    script_content: Option<String>,
) -> Result<(String, Option<String>), ApiError> {
    let max = state.config().limits.max_script_bytes;
    match script_content {
        Some(script) if script.len() > max => Err(LambdaError::new(
            ErrorCode::PayloadTooLarge,
            format!("script_content is {} bytes, more than MAX_SCRIPT_SIZE ({max} bytes)", script.len()),
        )
        .with("limit_bytes", max)
        .into()),
        Some(script) if script.trim().is_empty() => {
            Err(LambdaError::invalid_request("script_content is empty")
                .with("field", "script_content")
                .into())
        }
        Some(script) => Ok((script, None)),
        None => match state.store().get_function(title.as_str()).await? {
            Some(function) => Ok((function.script_content, Some(function.language_title))),
            None => Err(LambdaError::not_found(format!(
                "no function is registered as `{title}`; send script_content to initialize your own"
            ))
            .into()),
        },
    }
}

/// What an initialize asks for, to tell a retry from another request that
/// reuses its X-Request-ID.
struct Asked<'a> {
    user_id: Option<&'a str>,
    title: &'a LanguageTitle,
    context: &'a Value,
    hash: ScriptHash,
}

/// The same request again (same caller, title, script and context) gets the
/// session it created, while that session is still active. Anything else
/// that reuses the id is a conflict.
fn idempotent_retry(existing: &LiveSession, asked: &Asked<'_>) -> Result<Json<InitializeResponse>, ApiError> {
    let session = &existing.session;
    let same = session.user_id.as_deref() == asked.user_id
        && session.script_hash == asked.hash
        && session.language_title == asked.title.as_str()
        && session.context == *asked.context;
    let conflict =
        |e: LambdaError| ApiError::for_session(e.with("header", "X-Request-ID"), &session.request_id);
    if !same {
        return Err(conflict(LambdaError::new(
            ErrorCode::Conflict,
            "X-Request-ID is already used by another session",
        )));
    }
    match existing.status(Utc::now()) {
        SessionStatus::Active => Ok(Json(initialized_body(existing))),
        status => {
            let status = status.as_str();
            let message = format!("X-Request-ID names a session that is {status}; initialize with a new id");
            Err(conflict(LambdaError::new(ErrorCode::Conflict, message).with("status", status)))
        }
    }
}

/// A user's script under a free title becomes a dynamic function; a taken
/// title is left as it is. A failure here does not fail the initialize.
async fn register_dynamic(state: &AppState, title: &LanguageTitle, session: &Session) {
    let function = Function {
        language_title: title.as_str().to_owned(),
        language: title.language(),
        title: title.title().to_owned(),
        description: String::new(),
        kind: FunctionKind::Dynamic,
        user_id: session.user_id.clone(),
        script_content: session.script_content.clone(),
        schema: None,
        examples: json!([]),
        compile_options: session.compile_options.clone(),
        created_at: session.created_at,
        updated_at: session.created_at,
    };
    if let Err(e) = state.store().register_function(&function).await {
        tracing::warn!(function = %title, error = %e, "could not register dynamic function");
    }
}

fn initialized_body(live: &LiveSession) -> InitializeResponse {
    let s = &live.session;
    InitializeResponse {
        request_id: s.request_id.clone(),
        status: "initialized".to_owned(),
        expires_at: s.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        language_title: s.language_title.clone(),
        script_hash: s.script_hash.to_hex(),
        timeout_ms: s.timeout_ms,
        retain_session: s.retain,
    }
}
