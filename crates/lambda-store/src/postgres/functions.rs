//! `meta.functions`: insert-if-free, lookup, filtered and paged listing.

use lambda_core::{Function, FunctionFilter, FunctionKind};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use super::codec::{self, corrupt};
use crate::StoreError;

const COLUMNS: &str = "language_title, language, title, description, kind, user_id, script_content, \
     schema, examples, compile_options, created_at, updated_at";

/// Both seeding and registration insert only where the title is free, so a
/// seed never overwrites an operator's edit and two initializes racing on a
/// new title (on two controllers) register it once.
pub(super) async fn insert_if_free(pool: &PgPool, f: &Function) -> Result<bool, StoreError> {
    let sql = format!(
        "INSERT INTO meta.functions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (language_title) DO NOTHING"
    );
    let done = sqlx::query(&sql)
        .bind(codec::text(&f.language_title))
        .bind(f.language.as_str())
        .bind(codec::text(&f.title))
        .bind(codec::text(&f.description))
        .bind(f.kind.as_str())
        .bind(codec::opt_text(f.user_id.as_deref()))
        .bind(codec::text(&f.script_content))
        .bind(codec::opt_json(f.schema.as_ref()))
        .bind(codec::json(&f.examples))
        .bind(codec::opt_json(f.compile_options.as_ref()))
        .bind(f.created_at)
        .bind(f.updated_at)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn get(pool: &PgPool, language_title: &str) -> Result<Option<Function>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM meta.functions WHERE language_title = $1");
    let row = sqlx::query(&sql).bind(language_title).fetch_optional(pool).await?;
    row.as_ref().map(decode).transpose()
}

pub(super) async fn list(pool: &PgPool, filter: &FunctionFilter) -> Result<(u64, Vec<Function>), StoreError> {
    let per_page = i64::from(filter.per_page);
    let offset = i64::from(filter.page.max(1) - 1) * per_page;
    // One snapshot so that the total and the page agree.
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;

    let mut count = QueryBuilder::<Postgres>::new("SELECT COUNT(*) FROM meta.functions");
    push_filter(&mut count, filter);
    let total: i64 = count.build_query_scalar().fetch_one(&mut *tx).await?;

    let mut page = QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM meta.functions"));
    push_filter(&mut page, filter);
    page.push(" ORDER BY language_title LIMIT ").push_bind(per_page).push(" OFFSET ").push_bind(offset);
    let rows = page.build().fetch_all(&mut *tx).await?;
    tx.commit().await?;

    let total = u64::try_from(total).map_err(|e| corrupt("functions count", e))?;
    let functions = rows.iter().map(decode).collect::<Result<_, _>>()?;
    Ok((total, functions))
}

fn push_filter(q: &mut QueryBuilder<'_, Postgres>, filter: &FunctionFilter) {
    q.push(" WHERE TRUE");
    if let Some(language) = filter.language {
        q.push(" AND language = ").push_bind(language.as_str());
    }
    if let Some(user_id) = &filter.user_id {
        q.push(" AND user_id = ").push_bind(user_id.clone());
    }
    if let Some(kind) = filter.kind {
        q.push(" AND kind = ").push_bind(kind.as_str());
    }
}

fn decode(row: &PgRow) -> Result<Function, StoreError> {
    let kind: String = row.try_get("kind")?;
    Ok(Function {
        language_title: row.try_get("language_title")?,
        language: codec::language(row.try_get("language")?, "functions.language")?,
        title: row.try_get("title")?,
        description: row.try_get("description")?,
        kind: FunctionKind::parse(&kind).ok_or_else(|| corrupt("functions.kind", &kind))?,
        user_id: row.try_get("user_id")?,
        script_content: row.try_get("script_content")?,
        schema: row.try_get::<Option<Value>, _>("schema")?,
        examples: row.try_get("examples")?,
        compile_options: row.try_get::<Option<Value>, _>("compile_options")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
