//! Reading JSON bodies with a size bound, answering the contract's errors
//! (413 `PAYLOAD_TOO_LARGE`, 400 `INVALID_REQUEST` with line/column) instead
//! of axum's plain-text rejections.

use axum::body::Body;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_LENGTH;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use lambda_core::{ErrorCode, LambdaError};
use serde::de::DeserializeOwned;

use crate::ApiError;

fn too_large(limit: usize) -> ApiError {
    LambdaError::new(ErrorCode::PayloadTooLarge, format!("request body is larger than {limit} bytes"))
        .with("limit_bytes", limit)
        .into()
}

/// Reads at most `limit` bytes and parses them; an empty body parses as `{}`.
pub async fn read_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    let declared =
        headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large(limit));
    }
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large(limit)),
        Err(e) => {
            return Err(LambdaError::invalid_request(format!("could not read request body: {e}")).into());
        }
    };
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
    serde_json::from_slice(text).map_err(|e| {
        LambdaError::invalid_request(format!("malformed JSON body: {e}"))
            .with("line", e.line())
            .with("column", e.column())
            .into()
    })
}
