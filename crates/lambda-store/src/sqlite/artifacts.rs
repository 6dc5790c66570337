//! The `artifacts` table: compiled modules by script hash.

use lambda_core::ScriptHash;
use sqlx::{Row, SqlitePool};

use super::codec::{self, corrupt, timestamp};
use crate::{Artifact, CompileStatus, StoreError};

pub(super) async fn get(pool: &SqlitePool, hash: &ScriptHash) -> Result<Option<Artifact>, StoreError> {
    let row = sqlx::query(
        "SELECT language, compile_status, compiled_artifact, compile_error, created_at \
         FROM artifacts WHERE script_hash = ?",
    )
    .bind(hash.to_hex())
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let status: String = row.try_get("compile_status")?;
    Ok(Some(Artifact {
        script_hash: *hash,
        language: codec::language(&row.try_get::<String, _>("language")?, "language")?,
        compile_status: CompileStatus::parse(&status).ok_or_else(|| corrupt("compile_status", status))?,
        bytes: row.try_get("compiled_artifact")?,
        compile_error: codec::from_opt_json(row.try_get("compile_error")?, "compile_error")?,
        created_at: codec::from_timestamp(row.try_get("created_at")?, "created_at")?,
    }))
}

pub(super) async fn put(pool: &SqlitePool, a: &Artifact) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO artifacts (script_hash, language, compile_status, compiled_artifact, compile_error, created_at) \
         VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT (script_hash) DO UPDATE SET language = excluded.language, \
         compile_status = excluded.compile_status, compiled_artifact = excluded.compiled_artifact, \
         compile_error = excluded.compile_error, created_at = excluded.created_at",
    )
    .bind(a.script_hash.to_hex())
    .bind(a.language.as_str())
    .bind(a.compile_status.as_str())
    .bind(&a.bytes)
    .bind(a.compile_error.as_ref().map(codec::json))
    .bind(timestamp(a.created_at))
    .execute(pool)
    .await?;
    Ok(())
}
