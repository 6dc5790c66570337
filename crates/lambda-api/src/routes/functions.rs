//! `GET /api/v1/functions` and `GET /api/v1/functions/{language_title}`.

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::SecondsFormat;
use lambda_core::{Function, FunctionFilter, FunctionKind, LambdaError, Language};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{ApiError, AppState};

/// Query strings arrive as text so that a bad value is our 400, not axum's.
#[derive(Deserialize)]
pub struct ListQuery {
    language: Option<String>,
    user_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    page: Option<String>,
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

fn entry(f: &Function) -> Value {
    json!({
        "language": f.language,
        "title": f.title,
        "language_title": f.language_title,
        "description": f.description,
        "type": f.kind.as_str(),
        "user_id": f.user_id,
        "created_at": f.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "updated_at": f.updated_at.to_rfc3339_opts(SecondsFormat::Millis, true),
    })
}

pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter = query.filter()?;
    let (total, functions) = state.store().list_functions(&filter).await?;
    Ok(Json(json!({
        "total": total,
        "page": filter.page,
        "per_page": filter.per_page,
        "functions": functions.iter().map(entry).collect::<Vec<_>>(),
    })))
}

pub async fn get_one(
    State(state): State<AppState>,
    Path(language_title): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let function = state
        .store()
        .get_function(&language_title)
        .await?
        .ok_or_else(|| LambdaError::not_found(format!("no function `{language_title}`")))?;
    let mut body = entry(&function);
    body["schema"] = function.schema.clone().unwrap_or_else(|| json!({}));
    body["examples"] = function.examples.clone();
    body["script_content"] = json!(function.script_content);
    if function.language.is_compiled() {
        body["compile_options"] = function.compile_options.clone().unwrap_or_else(|| json!({}));
    }
    Ok(Json(body))
}
