//! `meta.artifacts`: compiled modules by script hash.

use lambda_core::ScriptHash;
use serde_json::Value;
use sqlx::{PgPool, Row};

use super::codec::{self, corrupt};
use crate::{Artifact, CompileStatus, StoreError};

pub(super) async fn get(pool: &PgPool, hash: &ScriptHash) -> Result<Option<Artifact>, StoreError> {
    let row = sqlx::query(
        "SELECT language, compile_status, compiled_artifact, compile_error, created_at \
         FROM meta.artifacts WHERE script_hash = $1",
    )
    .bind(hash.to_hex())
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let status: String = row.try_get("compile_status")?;
    Ok(Some(Artifact {
        script_hash: *hash,
        language: codec::language(row.try_get("language")?, "artifacts.language")?,
        compile_status: CompileStatus::parse(&status).ok_or_else(|| corrupt("compile_status", status))?,
        bytes: row.try_get("compiled_artifact")?,
        compile_error: row.try_get::<Option<Value>, _>("compile_error")?,
        created_at: row.try_get("created_at")?,
    }))
}

pub(super) async fn put(pool: &PgPool, a: &Artifact) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO meta.artifacts (script_hash, language, compile_status, compiled_artifact, compile_error, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (script_hash) DO UPDATE SET language = excluded.language, \
         compile_status = excluded.compile_status, compiled_artifact = excluded.compiled_artifact, \
         compile_error = excluded.compile_error, created_at = excluded.created_at",
    )
    .bind(a.script_hash.to_hex())
    .bind(a.language.as_str())
    .bind(a.compile_status.as_str())
    .bind(&a.bytes)
    .bind(codec::opt_json(a.compile_error.as_ref()))
    .bind(a.created_at)
    .execute(pool)
    .await?;
    Ok(())
}
