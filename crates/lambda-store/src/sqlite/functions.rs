//! The `functions` table: insert-if-free, lookup, filtered and paged listing.

use lambda_core::{Function, FunctionFilter, FunctionKind};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use super::codec::{self, corrupt, timestamp};
use crate::StoreError;

const COLUMNS: &str = "language_title, language, title, description, kind, user_id, script_content, \
     schema, examples, compile_options, created_at, updated_at";

/// Both seeding and registration insert only where the title is free, so a
/// seed never overwrites an operator's edit and two initializes racing on a
/// new title register it once.
pub(super) async fn insert_if_free(pool: &SqlitePool, f: &Function) -> Result<bool, StoreError> {
    let sql = format!(
        "INSERT INTO functions ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (language_title) DO NOTHING"
    );
    let done = sqlx::query(&sql)
        .bind(&f.language_title)
        .bind(f.language.as_str())
        .bind(&f.title)
        .bind(&f.description)
        .bind(f.kind.as_str())
        .bind(&f.user_id)
        .bind(&f.script_content)
        .bind(f.schema.as_ref().map(codec::json))
        .bind(codec::json(&f.examples))
        .bind(f.compile_options.as_ref().map(codec::json))
        .bind(timestamp(f.created_at))
        .bind(timestamp(f.updated_at))
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn get(pool: &SqlitePool, language_title: &str) -> Result<Option<Function>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM functions WHERE language_title = ?");
    let row = sqlx::query(&sql).bind(language_title).fetch_optional(pool).await?;
    row.as_ref().map(decode).transpose()
}

pub(super) async fn list(
    pool: &SqlitePool,
    filter: &FunctionFilter,
) -> Result<(u64, Vec<Function>), StoreError> {
    let per_page = i64::from(filter.per_page);
    let offset = i64::from(filter.page.max(1) - 1) * per_page;
    // One read transaction so that the total and the page agree.
    let mut tx = pool.begin().await?;

    let mut count = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM functions");
    push_filter(&mut count, filter);
    let total: i64 = count.build_query_scalar().fetch_one(&mut *tx).await?;

    let mut page = QueryBuilder::<Sqlite>::new(format!("SELECT {COLUMNS} FROM functions"));
    push_filter(&mut page, filter);
    page.push(" ORDER BY language_title LIMIT ").push_bind(per_page).push(" OFFSET ").push_bind(offset);
    let rows = page.build().fetch_all(&mut *tx).await?;
    tx.commit().await?;

    let total = u64::try_from(total).map_err(|e| corrupt("functions count", e))?;
    let functions = rows.iter().map(decode).collect::<Result<_, _>>()?;
    Ok((total, functions))
}

fn push_filter(q: &mut QueryBuilder<'_, Sqlite>, filter: &FunctionFilter) {
    q.push(" WHERE 1 = 1");
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

fn decode(row: &SqliteRow) -> Result<Function, StoreError> {
    let kind: String = row.try_get("kind")?;
    Ok(Function {
        language_title: row.try_get("language_title")?,
        language: codec::language(row.try_get("language")?, "functions.language")?,
        title: row.try_get("title")?,
        description: row.try_get("description")?,
        kind: FunctionKind::parse(&kind).ok_or_else(|| corrupt("functions.kind", &kind))?,
        user_id: row.try_get("user_id")?,
        script_content: row.try_get("script_content")?,
        schema: codec::from_opt_json(row.try_get("schema")?, "functions.schema")?,
        examples: codec::from_json(row.try_get("examples")?, "functions.examples")?,
        compile_options: codec::from_opt_json(row.try_get("compile_options")?, "functions.compile_options")?,
        created_at: codec::from_timestamp(row.try_get("created_at")?, "functions.created_at")?,
        updated_at: codec::from_timestamp(row.try_get("updated_at")?, "functions.updated_at")?,
    })
}
