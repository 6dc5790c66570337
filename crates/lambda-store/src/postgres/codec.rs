//! How domain values are laid out in PostgreSQL columns: timestamps as
//! timestamptz, JSON as jsonb, hashes as hex text.
//!
//! PostgreSQL stores no NUL character, neither in `text` nor in a `jsonb`
//! string (SQLSTATE 22021 / 22P05), where SQLite stores anything. A NUL that
//! a user's script or params carry would make a whole log batch fail, so
//! text and JSON are written with each NUL replaced by U+FFFD: lossy only
//! for that one character, which no legitimate title, script or log needs.

use std::borrow::Cow;
use std::str::FromStr;

use lambda_core::Language;
use serde_json::Value;
use sqlx::types::Json;

use crate::{JsonText, StoreError};

const REPLACEMENT: &str = "\u{FFFD}";

pub(super) fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') { Cow::Owned(s.replace('\0', REPLACEMENT)) } else { Cow::Borrowed(s) }
}

pub(super) fn opt_text(s: Option<&str>) -> Option<Cow<'_, str>> {
    s.map(text)
}

/// A jsonb parameter without NULs.
pub(super) fn json(value: &Value) -> Json<Cow<'_, Value>> {
    if has_nul(value) { Json(Cow::Owned(strip_nul(value))) } else { Json(Cow::Borrowed(value)) }
}

/// A jsonb parameter from text the execute path serialized: bound as is
/// unless it escapes a NUL (`\u0000`, or a false alarm on an escaped
/// backslash), which goes the [`json`] way.
pub(super) fn json_text(text: &JsonText) -> Json<Cow<'_, JsonText>> {
    if text.as_str().contains("\\u0000") {
        Json(Cow::Owned(JsonText::of(&strip_nul(&text.to_value()))))
    } else {
        Json(Cow::Borrowed(text))
    }
}

pub(super) fn opt_json(value: Option<&Value>) -> Option<Json<Cow<'_, Value>>> {
    value.map(json)
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn strip_nul(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(text(s).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(strip_nul).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (text(k).into_owned(), strip_nul(v))).collect())
        }
        other => other.clone(),
    }
}

pub(super) fn language(text: &str, column: &str) -> Result<Language, StoreError> {
    Language::from_str(text).map_err(|e| corrupt(column, e))
}

pub(super) fn corrupt(column: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{column}: {why}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nul_characters_are_replaced_and_the_rest_kept() {
        assert!(matches!(text("plain"), Cow::Borrowed("plain")));
        assert_eq!(text("a\0b"), "a\u{FFFD}b");
        let clean = json!({"a": [1, "x"], "b": null});
        assert!(matches!(json(&clean).0, Cow::Borrowed(_)));
        let dirty = json!({"k\0": ["v\0", {"n": 1.5}]});
        assert_eq!(*json(&dirty).0, json!({"k\u{FFFD}": ["v\u{FFFD}", {"n": 1.5}]}));
        let clean = JsonText::of(&json!({"a": "\\u0000 is text"}));
        assert_eq!(json_text(&clean).0.to_value(), json!({"a": "\\u0000 is text"}));
        let dirty = JsonText::of(&json!({"a": "x\0y"}));
        let plain = JsonText::of(&json!({"a": [1, "x"]}));
        assert!(matches!(json_text(&plain).0, Cow::Borrowed(_)));
        assert_eq!(json_text(&dirty).0.to_value(), json!({"a": "x\u{FFFD}y"}));
    }
}
