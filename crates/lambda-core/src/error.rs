//! The error catalogue of the public contract, in exactly one place.
//!
//! Policy: every failure that reaches a client is a [`LambdaError`] carrying an
//! [`ErrorCode`]. The code decides the HTTP status (and, later, the gRPC
//! status); nothing else in the code base names a status number. Faults of
//! user code use the 460–462 range, client mistakes the 4xx range, and only a
//! fault of the platform itself is `INTERNAL_ERROR`.

use serde::Serialize;
use serde_json::{Map, Value};

/// Error codes of `spec/API.md`, each with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidRequest,
    InvalidParams,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    PayloadTooLarge,
    RateLimited,
    RuntimeError,
    CompileError,
    ResourceLimit,
    InternalError,
    Unavailable,
    Timeout,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 14] = [
        Self::InvalidRequest,
        Self::InvalidParams,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::Conflict,
        Self::PayloadTooLarge,
        Self::RateLimited,
        Self::RuntimeError,
        Self::CompileError,
        Self::ResourceLimit,
        Self::InternalError,
        Self::Unavailable,
        Self::Timeout,
    ];

    /// HTTP status of this code (the contract's table).
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidRequest | Self::InvalidParams => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::Conflict => 409,
            Self::PayloadTooLarge => 413,
            Self::RateLimited => 429,
            Self::RuntimeError => 460,
            Self::CompileError => 461,
            Self::ResourceLimit => 462,
            Self::InternalError => 500,
            Self::Unavailable => 503,
            Self::Timeout => 504,
        }
    }

    /// The wire name, e.g. `RUNTIME_ERROR`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "INVALID_REQUEST",
            Self::InvalidParams => "INVALID_PARAMS",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::Conflict => "CONFLICT",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::RateLimited => "RATE_LIMITED",
            Self::RuntimeError => "RUNTIME_ERROR",
            Self::CompileError => "COMPILE_ERROR",
            Self::ResourceLimit => "RESOURCE_LIMIT",
            Self::InternalError => "INTERNAL_ERROR",
            Self::Unavailable => "UNAVAILABLE",
            Self::Timeout => "TIMEOUT",
        }
    }

    /// True for faults of the user's script (the 460–499 range).
    pub fn is_user_code_fault(self) -> bool {
        (460..500).contains(&self.http_status())
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure as the client sees it: code, human message, structured details.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct LambdaError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Map<String, Value>,
}

impl LambdaError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), details: Map::new() }
    }

    /// Adds one `details` entry.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// A platform fault. The message is for operators; keep user data out of it.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InternalError, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_contract() {
        let table: Vec<(&str, u16)> = ErrorCode::ALL.iter().map(|c| (c.as_str(), c.http_status())).collect();
        assert_eq!(
            table,
            vec![
                ("INVALID_REQUEST", 400),
                ("INVALID_PARAMS", 400),
                ("UNAUTHORIZED", 401),
                ("FORBIDDEN", 403),
                ("NOT_FOUND", 404),
                ("CONFLICT", 409),
                ("PAYLOAD_TOO_LARGE", 413),
                ("RATE_LIMITED", 429),
                ("RUNTIME_ERROR", 460),
                ("COMPILE_ERROR", 461),
                ("RESOURCE_LIMIT", 462),
                ("INTERNAL_ERROR", 500),
                ("UNAVAILABLE", 503),
                ("TIMEOUT", 504),
            ]
        );
    }

    #[test]
    fn serde_name_matches_as_str() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).ok(), Some(Value::from(code.as_str())));
        }
    }

    #[test]
    fn user_faults_are_the_runtime_range() {
        assert!(ErrorCode::RuntimeError.is_user_code_fault());
        assert!(ErrorCode::ResourceLimit.is_user_code_fault());
        assert!(!ErrorCode::Timeout.is_user_code_fault());
        assert!(!ErrorCode::InternalError.is_user_code_fault());
    }
}
