//! `ApiError`: a [`LambdaError`] on its way to the client as the contract's
//! JSON error body. The status comes from the catalogue in `lambda-core`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lambda_core::{ErrorCode, LambdaError};
use serde_json::json;

use crate::wire::{ErrorObject, ErrorResponse};

/// Handlers return `Result<_, ApiError>`.
#[derive(Debug)]
pub struct ApiError {
    pub error: LambdaError,
    /// The session's id, when the request concerns a known one.
    pub request_id: Option<String>,
}

impl ApiError {
    pub fn for_session(error: LambdaError, request_id: &str) -> Self {
        Self { error, request_id: Some(request_id.to_owned()) }
    }

    pub fn code(&self) -> ErrorCode {
        self.error.code
    }
}

impl From<LambdaError> for ApiError {
    fn from(error: LambdaError) -> Self {
        Self { error, request_id: None }
    }
}

impl From<lambda_store::StoreError> for ApiError {
    fn from(e: lambda_store::StoreError) -> Self {
        use lambda_store::StoreError;
        let error = match e {
            StoreError::Conflict(what) => LambdaError::new(ErrorCode::Conflict, what),
            StoreError::Unavailable(why) => {
                tracing::warn!(error = %why, "storage unavailable");
                LambdaError::unavailable("storage is unavailable, retry later")
            }
            StoreError::Corrupt(why) => {
                tracing::error!(error = %why, "corrupt row in storage");
                LambdaError::internal("stored data could not be read")
            }
        };
        error.into()
    }
}

/// The error body of every endpoint: `{request_id?, error: {code, message, details}}`.
pub fn error_body(error: &LambdaError, request_id: Option<&str>) -> serde_json::Value {
    let body = ErrorResponse {
        request_id: request_id.map(str::to_owned),
        error: ErrorObject {
            code: error.code.as_str().to_owned(),
            message: error.message.clone(),
            details: error.details.clone(),
        },
    };
    serde_json::to_value(body).unwrap_or_else(|_| json!({"error": {"code": "INTERNAL_ERROR"}}))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.error.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response =
            (status, Json(error_body(&self.error, self.request_id.as_deref()))).into_response();
        // Handlers and middleware read the code back for metrics.
        response.extensions_mut().insert(self.error.code);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_runtime_statuses_are_valid_http() {
        for code in ErrorCode::ALL {
            assert!(StatusCode::from_u16(code.http_status()).is_ok(), "{code}");
        }
    }

    #[test]
    fn body_shape() {
        let e = LambdaError::new(ErrorCode::RuntimeError, "boom").with("line", 3);
        assert_eq!(
            error_body(&e, Some("r1")),
            json!({"request_id": "r1", "error": {"code": "RUNTIME_ERROR", "message": "boom", "details": {"line": 3}}})
        );
        assert_eq!(error_body(&e, None).get("request_id"), None);
    }
}
