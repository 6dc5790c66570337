//! The JSON shapes of the contract. Handlers build exactly these types, and
//! the OpenAPI document is generated from them, so the two cannot drift.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Body of `POST /api/v1/initialize`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct InitializeRequest {
    /// Passed to every execution unchanged. Read by the platform: `timeout_ms`
    /// (positive integer), `retain_session` (boolean), `user_id` (string, the
    /// owner when auth is off), `compile_options` (object, compiled languages).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
    /// The script; absent = the registered function of this `Language-Title`.
    #[serde(default)]
    pub script_content: Option<String>,
}

/// 200 of initialize.
#[derive(Debug, Serialize, ToSchema)]
pub struct InitializeResponse {
    pub request_id: String,
    /// Always `initialized`.
    pub status: String,
    /// RFC 3339 UTC.
    pub expires_at: String,
    pub language_title: String,
    /// sha256 of language, script and compile options (hex).
    pub script_hash: String,
    pub timeout_ms: u64,
    pub retain_session: bool,
}

/// Body of `POST /api/v1/execute/{request_id}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ExecuteRequest {
    /// A JSON object, the script's `params`; absent or null = `{}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: Value,
}

/// Resource figures of one execution.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionMetrics {
    /// Wall time in the runtime, microseconds.
    pub wall_us: u64,
    /// No warm worker held the script; one was prepared for this call.
    pub cold_start: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
}

/// 200 of execute. Borrows its parts: the execute path serializes it once,
/// straight from the session, the runtime's answer or a cached one.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecuteResponse<'a> {
    pub request_id: &'a str,
    pub language_title: &'a str,
    /// Milliseconds in the runtime; for a cached answer, the original run's.
    pub execution_time: u64,
    pub cached: bool,
    /// What the script returned: any JSON value.
    #[schema(value_type = Value)]
    pub result: &'a RawValue,
    /// Console/stdout lines of the run (bounded), when there were any.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub logs: Option<&'a [String]>,
    /// Absent on cached answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<ExecutionMetrics>,
}

/// `GET /api/v1/sessions/{request_id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionResponse {
    pub request_id: String,
    pub language_title: String,
    /// `active`, `expired` or `closed`.
    pub status: String,
    pub created_at: String,
    pub expires_at: String,
    pub execution_count: i64,
    pub last_executed_at: Option<String>,
    pub script_hash: String,
    pub timeout_ms: u64,
    pub retain_session: bool,
}

/// One entry of the function list.
#[derive(Debug, Serialize, ToSchema)]
pub struct FunctionEntry {
    pub language: String,
    pub title: String,
    pub language_title: String,
    pub description: String,
    /// `predefined` or `dynamic`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Owner of a dynamic function.
    pub user_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// `GET /api/v1/functions`.
#[derive(Debug, Serialize, ToSchema)]
pub struct FunctionList {
    pub total: u64,
    pub page: u32,
    pub per_page: u32,
    pub functions: Vec<FunctionEntry>,
}

/// `GET /api/v1/functions/{language_title}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct FunctionDetail {
    #[serde(flatten)]
    pub entry: FunctionEntry,
    /// `{"params": <JSON Schema>, "result": <JSON Schema>}`.
    #[schema(value_type = Object)]
    pub schema: Value,
    #[schema(value_type = Vec<Object>)]
    pub examples: Value,
    pub script_content: String,
    /// Compiled languages only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub compile_options: Option<Value>,
}

/// `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    /// `ok`, `degraded` or `unavailable`.
    pub status: String,
    pub version: String,
    /// `controller`, `storage`, `cache`, `postgres`, `redis`, `runtimes`, … each
    /// `ok`, `disabled`, `unavailable` or a backend name.
    #[schema(value_type = Object)]
    pub components: Value,
}

/// The error object of every failure.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorObject {
    /// One of the contract's codes, e.g. `RUNTIME_ERROR`.
    pub code: String,
    pub message: String,
    #[schema(value_type = Object)]
    pub details: Map<String, Value>,
}

/// Body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    /// The session's id, when the request concerns a known one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub error: ErrorObject,
}
