//! Validation of execute `params` against a registered function's
//! `schema.params`, with compiled validators cached per function.

use std::sync::Arc;
use std::time::Duration;

use jsonschema::Validator;
use lambda_core::{ErrorCode, LambdaError};
use lambda_store::{Store, StoreError};
use serde_json::Value;

/// Compiled validators by function `language_title`; `None` = no params schema.
pub struct SchemaCache {
    validators: moka::future::Cache<String, Arc<Option<Validator>>>,
}

impl SchemaCache {
    pub fn new() -> Self {
        // A short TTL picks up schema changes of operator-registered functions.
        let validators =
            moka::future::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(60)).build();
        Self { validators }
    }

    async fn validator(
        &self,
        store: &dyn Store,
        language_title: &str,
    ) -> Result<Arc<Option<Validator>>, StoreError> {
        if let Some(v) = self.validators.get(language_title).await {
            return Ok(v);
        }
        let function = store.get_function(language_title).await?;
        let schema = function.and_then(|f| f.schema).and_then(|s| s.get("params").cloned());
        let validator = schema.and_then(|s| match jsonschema::validator_for(&s) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(function = language_title, error = %e, "params schema does not compile; not validating");
                None
            }
        });
        let validator = Arc::new(validator);
        self.validators.insert(language_title.to_owned(), validator.clone()).await;
        Ok(validator)
    }

    /// 400 `INVALID_PARAMS` naming the failing path when `params` do not match.
    pub async fn check(
        &self,
        store: &dyn Store,
        language_title: &str,
        params: &Value,
    ) -> Result<(), CheckError> {
        let validator = self.validator(store, language_title).await.map_err(CheckError::Store)?;
        let Some(validator) = validator.as_ref() else { return Ok(()) };
        let errors: Vec<Value> = validator
            .iter_errors(params)
            .take(10)
            .map(|e| serde_json::json!({ "path": e.instance_path().to_string(), "message": e.to_string() }))
            .collect();
        let Some(first) = errors.first() else { return Ok(()) };
        let path = first["path"].as_str().unwrap_or_default().to_owned();
        let message = format!(
            "params do not match the schema of {language_title}: {} at `{}`",
            first["message"].as_str().unwrap_or_default(),
            if path.is_empty() { "/" } else { &path }
        );
        Err(CheckError::Invalid(
            LambdaError::new(ErrorCode::InvalidParams, message).with("path", path).with("errors", errors),
        ))
    }
}

pub enum CheckError {
    Invalid(LambdaError),
    Store(StoreError),
}
