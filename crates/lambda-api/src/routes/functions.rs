//! `GET /api/v1/functions` and `GET /api/v1/functions/{language_title}`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use chrono::SecondsFormat;
use lambda_core::{Function, FunctionFilter, FunctionKind, LambdaError, Language};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Caller;
use crate::wire::{ErrorResponse, FunctionDetail, FunctionEntry, FunctionList};
use crate::{ApiError, AppState};

/// Query strings arrive as text so that a bad value is our 400, not axum's.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `nodejs`, `python`, `rust` or `wasm`.
    language: Option<String>,
    /// Owner of dynamic functions.
    user_id: Option<String>,
    /// `predefined` or `dynamic`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    kind: Option<String>,
    /// 1-based page, default 1.
    #[param(value_type = Option<u32>, minimum = 1)]
    page: Option<String>,
    /// Entries per page, default 20, at most 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    per_page: Option<String>,
}

fn bad_query(name: &str, want: &str) -> ApiError {
    LambdaError::invalid_request(format!("query parameter `{name}` must be {want}"))
        .with("parameter", name)
        .into()
}

fn number(value: Option<&str>, name: &str, default: u32, max: u32) -> Result<u32, ApiError> {
    let want = format!("an integer from 1 to {max}");
    match value {
        None | Some("") => Ok(default),
        Some(v) => {
            v.parse::<u32>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| bad_query(name, &want))
        }
    }
}

impl ListQuery {
    fn filter(&self) -> Result<FunctionFilter, ApiError> {
        let language = match self.language.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(l) => Some(
                l.parse::<Language>()
                    .map_err(|_| bad_query("language", "one of nodejs, python, rust, wasm"))?,
            ),
        };
        let kind = match self.kind.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(k) => {
                Some(FunctionKind::parse(k).ok_or_else(|| bad_query("type", "`predefined` or `dynamic`"))?)
            }
        };
        Ok(FunctionFilter {
            language,
            user_id: self.user_id.clone().filter(|u| !u.is_empty()),
            kind,
            page: number(self.page.as_deref(), "page", 1, 1_000_000)?,
            per_page: number(self.per_page.as_deref(), "per_page", 20, 100)?,
        })
    }
}

fn entry(f: &Function) -> FunctionEntry {
    FunctionEntry {
        language: f.language.to_string(),
        title: f.title.clone(),
        language_title: f.language_title.clone(),
        description: f.description.clone(),
        kind: f.kind.as_str().to_owned(),
        user_id: f.user_id.clone(),
        created_at: f.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        updated_at: f.updated_at.to_rfc3339_opts(SecondsFormat::Millis, true),
    }
}

/// Registered functions, filtered and paged.
#[utoipa::path(
    get,
    path = "/api/v1/functions",
    tag = "functions",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of functions", body = FunctionList),
        (status = 400, description = "INVALID_REQUEST: bad query parameter", body = ErrorResponse),
        (status = 401, description = "UNAUTHORIZED", body = ErrorResponse),
        (status = 403, description = "FORBIDDEN: read:functions missing", body = ErrorResponse),
        (status = 429, description = "RATE_LIMITED", body = ErrorResponse),
        (status = 500, description = "INTERNAL_ERROR", body = ErrorResponse),
        (status = 503, description = "UNAVAILABLE", body = ErrorResponse),
    ),
    security(("bearerAuth" = []), ()),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<FunctionList>, ApiError> {
    caller.require_read_functions()?;
    let Query(query) = query.map_err(|e| LambdaError::invalid_request(format!("bad query string: {e}")))?;
    let filter = query.filter()?;
    let (total, functions) = state.store().list_functions(&filter).await?;
    Ok(Json(FunctionList {
        total,
        page: filter.page,
        per_page: filter.per_page,
        functions: functions.iter().map(entry).collect(),
    }))
}

/// One function with its schema, examples and script.
#[utoipa::path(
    get,
    path = "/api/v1/functions/{language_title}",
    tag = "functions",
    params(("language_title" = String, Path, description = "e.g. `nodejs-calculator`")),
    responses(
        (status = 200, description = "The function", body = FunctionDetail),
        (status = 401, description = "UNAUTHORIZED", body = ErrorResponse),
        (status = 403, description = "FORBIDDEN: read:functions missing", body = ErrorResponse),
        (status = 404, description = "NOT_FOUND", body = ErrorResponse),
        (status = 429, description = "RATE_LIMITED", body = ErrorResponse),
        (status = 500, description = "INTERNAL_ERROR", body = ErrorResponse),
        (status = 503, description = "UNAVAILABLE", body = ErrorResponse),
    ),
    security(("bearerAuth" = []), ()),
)]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(language_title): Path<String>,
) -> Result<Json<FunctionDetail>, ApiError> {
    caller.require_read_functions()?;
    let function = state
        .store()
        .get_function(&language_title)
        .await?
        .ok_or_else(|| LambdaError::not_found(format!("no function `{language_title}`")))?;
    Ok(Json(FunctionDetail {
        entry: entry(&function),
        schema: function.schema.clone().unwrap_or_else(|| json!({})),
        examples: function.examples.clone(),
        script_content: function.script_content.clone(),
        compile_options: function
            .language
            .is_compiled()
            .then(|| function.compile_options.clone().unwrap_or_else(|| json!({}))),
    }))
}
