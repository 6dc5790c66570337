//! A session: one prepared script, executed many times until it expires.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Language, ScriptHash};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    Active,
    Expired,
    /// A single-use session (`retain_session: false`) after its execute.
    Closed,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "expired" => Some(Self::Expired),
            "closed" => Some(Self::Closed),
            _ => None,
        }
    }
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub request_id: String,
    pub language_title: String,
    pub language: Language,
    /// Owner; `None` for anonymous callers.
    pub user_id: Option<String>,
    pub script_content: String,
    pub script_hash: ScriptHash,
    /// The caller's `context`, passed to every execution unchanged.
    pub context: Value,
    pub compile_options: Option<Value>,
    /// Set when the session runs a registered function's own script: its
    /// `schema.params` then binds execute's `params`.
    pub function_language_title: Option<String>,
    pub timeout_ms: u64,
    pub retain: bool,
    pub status: SessionStatus,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub execution_count: i64,
    pub last_executed_at: Option<DateTime<Utc>>,
}

impl Session {
    /// The status a client sees now: an active session past its expiry is expired.
    pub fn status_at(&self, now: DateTime<Utc>) -> SessionStatus {
        match self.status {
            SessionStatus::Active if now >= self.expires_at => SessionStatus::Expired,
            s => s,
        }
    }
}

/// `X-Request-ID`: `[A-Za-z0-9._-]{1,64}`.
pub fn valid_client_request_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_syntax() {
        assert!(valid_client_request_id("abc-1.2_3"));
        assert!(valid_client_request_id(&"a".repeat(64)));
        assert!(!valid_client_request_id(""));
        assert!(!valid_client_request_id(&"a".repeat(65)));
        assert!(!valid_client_request_id("a b"));
        assert!(!valid_client_request_id("a/b"));
    }
}
