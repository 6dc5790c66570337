//! How domain values are laid out in SQLite columns: timestamps as INTEGER
//! microseconds since the Unix epoch (PostgreSQL's timestamptz precision, so
//! both backends round-trip the same values), JSON as TEXT.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use lambda_core::Language;
use serde_json::Value;

use crate::{JsonText, StoreError};

pub(super) fn timestamp(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(super) fn from_timestamp(micros: i64, column: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| corrupt(column, "timestamp out of range"))
}

pub(super) fn json(value: &Value) -> String {
    value.to_string()
}

pub(super) fn from_json(text: &str, column: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(column, e))
}

pub(super) fn json_text(text: String, column: &str) -> Result<JsonText, StoreError> {
    JsonText::from_json(text).map_err(|e| corrupt(column, e))
}

pub(super) fn from_opt_json(text: Option<String>, column: &str) -> Result<Option<Value>, StoreError> {
    text.map(|t| from_json(&t, column)).transpose()
}

pub(super) fn language(text: &str, column: &str) -> Result<Language, StoreError> {
    Language::from_str(text).map_err(|e| corrupt(column, e))
}

pub(super) fn corrupt(column: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{column}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_to_the_microsecond() {
        let t = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("valid");
        assert_eq!(from_timestamp(timestamp(t), "t").ok(), Some(t));
        let before = DateTime::from_timestamp_micros(-1).expect("valid");
        assert!(timestamp(before) < timestamp(t));
    }

    #[test]
    fn bad_values_are_corrupt() {
        assert!(matches!(from_timestamp(i64::MAX, "t"), Err(StoreError::Corrupt(_))));
        assert!(matches!(from_json("{", "j"), Err(StoreError::Corrupt(_))));
        assert!(matches!(language("cobol", "l"), Err(StoreError::Corrupt(_))));
    }
}
