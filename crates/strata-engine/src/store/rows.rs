//! Row decoding and small helpers shared by the SQLite and PostgreSQL stores: both keep the
//! same columns with the same types (text ids, integer milliseconds, JSON as text), so one
//! decoder serves both.
//!
//! Must not import: a particular backend.

use chrono::{DateTime, TimeZone, Utc};
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::error::{EngineError, Result};
use crate::ids::TenantId;
use crate::memory::Memory;
use crate::model::{Document, DocumentStatus, Job, JobStatus, MediaType};

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(v: i64) -> Result<DateTime<Utc>> {
    Utc.timestamp_millis_opt(v)
        .single()
        .ok_or_else(|| EngineError::Internal(format!("bad timestamp {v}")))
}

pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(format!("corrupt {what} in database: {e}"))
}

/// The `id` and `score` columns of a ranked row.
pub(crate) fn scored_of<'r, R>(row: &'r R) -> Result<(u64, f32)>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    f64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok((
        row.try_get::<i64, _>("id")? as u64,
        row.try_get::<f64, _>("score")? as f32,
    ))
}

/// The `owner` column of a row, validated.
pub(crate) fn owner_of<'r, R>(row: &'r R) -> Result<TenantId>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
{
    let owner: String = row.try_get("owner")?;
    TenantId::from_stored(&owner).map_err(|e| corrupt("owner", e))
}

pub(crate) fn document_from_row<'r, R>(row: &'r R) -> Result<Document>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
{
    let id: String = row.try_get("id")?;
    let media: String = row.try_get("media_type")?;
    let metadata: String = row.try_get("metadata")?;
    let status: String = row.try_get("status")?;
    let tags: Option<String> = row.try_get("tags")?;
    let job_id: Option<String> = row.try_get("job_id")?;
    Ok(Document {
        id: id.parse().map_err(|e| corrupt("document id", e))?,
        title: row.try_get("title")?,
        filename: row.try_get("filename")?,
        media_type: MediaType::from_mime(&media).ok_or_else(|| corrupt("media type", &media))?,
        byte_size: row.try_get::<i64, _>("byte_size")? as u64,
        sha256: row.try_get("sha256")?,
        tags: match tags {
            Some(t) => serde_json::from_str(&t).map_err(|e| corrupt("tags", e))?,
            None => Vec::new(),
        },
        metadata: serde_json::from_str(&metadata).map_err(|e| corrupt("metadata", e))?,
        status: DocumentStatus::parse(&status).map_err(|e| corrupt("status", e))?,
        error: row.try_get("error")?,
        chunk_count: row.try_get::<i64, _>("chunk_count")? as u32,
        job_id: job_id
            .map(|j| j.parse().map_err(|e| corrupt("job id", e)))
            .transpose()?,
        created_at: from_ms(row.try_get("created_at")?)?,
        updated_at: from_ms(row.try_get("updated_at")?)?,
    })
}

pub(crate) fn memory_from_row<'r, R>(row: &'r R) -> Result<Memory>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    f64: Decode<'r, R::Database> + Type<R::Database>,
{
    let id: String = row.try_get("id")?;
    let metadata: String = row.try_get("metadata")?;
    let superseded_by: Option<String> = row.try_get("superseded_by")?;
    let occurred_at: Option<i64> = row.try_get("occurred_at")?;
    let last_accessed_at: Option<i64> = row.try_get("last_accessed_at")?;
    Ok(Memory {
        id: id.parse().map_err(|e| corrupt("memory id", e))?,
        text: row.try_get("text")?,
        importance: row.try_get::<f64, _>("importance")? as f32,
        metadata: serde_json::from_str(&metadata).map_err(|e| corrupt("metadata", e))?,
        session: row.try_get("session")?,
        key: row.try_get("key")?,
        occurred_at: occurred_at.map(from_ms).transpose()?,
        created_at: from_ms(row.try_get("created_at")?)?,
        updated_at: from_ms(row.try_get("updated_at")?)?,
        superseded_by: superseded_by
            .map(|s| s.parse().map_err(|e| corrupt("memory id", e)))
            .transpose()?,
        access_count: row.try_get::<i64, _>("access_count")? as u64,
        last_accessed_at: last_accessed_at.map(from_ms).transpose()?,
    })
}

pub(crate) fn job_from_row<'r, R>(row: &'r R) -> Result<(TenantId, Job)>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
{
    let id: String = row.try_get("id")?;
    let payload: String = row.try_get("payload")?;
    let payload: serde_json::Value =
        serde_json::from_str(&payload).map_err(|e| corrupt("job payload", e))?;
    let status: String = row.try_get("status")?;
    let stage: Option<String> = row.try_get("stage")?;
    let stages: String = row.try_get("stages")?;
    let finished: Option<i64> = row.try_get("finished_at")?;
    let job = Job {
        id: id.parse().map_err(|e| corrupt("job id", e))?,
        kind: row.try_get("kind")?,
        subject: row.try_get("subject")?,
        document_id: payload["document_id"]
            .as_str()
            .map(|d| d.parse().map_err(|e| corrupt("document id", e)))
            .transpose()?,
        status: JobStatus::parse(&status).map_err(|e| corrupt("job status", e))?,
        stage,
        stages: serde_json::from_str(&stages).map_err(|e| corrupt("stages", e))?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
        error: row.try_get("error")?,
        created_at: from_ms(row.try_get("created_at")?)?,
        updated_at: from_ms(row.try_get("updated_at")?)?,
        finished_at: finished.map(from_ms).transpose()?,
    };
    Ok((owner_of(row)?, job))
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}
