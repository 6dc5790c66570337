//! Registered functions: predefined (shipped or operator-registered) and dynamic.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Language;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FunctionKind {
    Predefined,
    Dynamic,
}

impl FunctionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Predefined => "predefined",
            Self::Dynamic => "dynamic",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "predefined" => Some(Self::Predefined),
            "dynamic" => Some(Self::Dynamic),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Function {
    pub language_title: String,
    pub language: Language,
    pub title: String,
    pub description: String,
    pub kind: FunctionKind,
    /// Owner of a dynamic function.
    pub user_id: Option<String>,
    pub script_content: String,
    /// `{"params": <JSON Schema>, "result": <JSON Schema>}`.
    pub schema: Option<Value>,
    pub examples: Value,
    pub compile_options: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Filters and paging of `GET /api/v1/functions`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FunctionFilter {
    pub language: Option<Language>,
    pub user_id: Option<String>,
    pub kind: Option<FunctionKind>,
    /// 1-based.
    pub page: u32,
    pub per_page: u32,
}
