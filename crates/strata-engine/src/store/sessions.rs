//! The sessions aggregate: a tenant's sessions and the tenant's learned pace between
//! requests; its SQL written once for both backends (see [`super::queue`] for how).
//!
//! A touch is a guarded update (it applies only if the session is still active and was last
//! seen when the caller read it), with the tenant's habits written in the same transaction,
//! so two touches racing never learn the same gap twice. Ending is idempotent: only an active
//! session ends, once, whoever ends it (a caller, or the sweep of any process).
//!
//! Must not import: HTTP types, the cache, the job runner.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::ids::TenantId;
use crate::session::{Habits, NewSession, Session};

/// Columns of a session row, in the order [`session_from_row`] reads them.
macro_rules! session_columns {
    () => {
        "id, metadata, started_at, last_seen_at, requests, timeout_ms, ended_at, end_reason"
    };
}

pub(crate) use session_columns;

/// Sessions and habits.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Starts a session; `None` (nothing written) when the owner already has one with its id.
    async fn create_session(&self, owner: &TenantId, new: &NewSession) -> Result<Option<Session>>;

    /// One session of the owner's.
    async fn get_session(&self, owner: &TenantId, id: &str) -> Result<Option<Session>>;

    /// Up to `limit` of the owner's sessions (active ones only, when asked), by id descending,
    /// strictly before `before`.
    async fn list_sessions(
        &self,
        owner: &TenantId,
        active_only: bool,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Session>>;

    /// The owner's habits (default when none are known).
    async fn session_habits(&self, owner: &TenantId) -> Result<Habits>;

    /// Records a request at `at` on an active session last seen at `seen`, with its new
    /// timeout, and writes `habits` (when a gap was learned) in the same transaction. False
    /// (nothing written) when the session ended or another touch came first.
    async fn touch_session(
        &self,
        owner: &TenantId,
        id: &str,
        seen: DateTime<Utc>,
        at: DateTime<Utc>,
        timeout_ms: i64,
        habits: Option<&Habits>,
    ) -> Result<bool>;

    /// Ends an active session; the session as ended, `None` when it was not active.
    async fn end_session(
        &self,
        owner: &TenantId,
        id: &str,
        at: DateTime<Utc>,
        reason: &str,
    ) -> Result<Option<Session>>;

    /// Ends every active session idle past its timeout at `now` (as of the moment it timed
    /// out); the sessions ended, with their owners.
    async fn expire_sessions(&self, now: DateTime<Utc>) -> Result<Vec<(TenantId, Session)>>;
}

/// Reads a session row.
pub(crate) fn session_from_row<'r, R>(row: &'r R) -> Result<Session>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    use super::rows::{corrupt, from_ms};
    let metadata: String = row.try_get("metadata")?;
    let ended_at: Option<i64> = row.try_get("ended_at")?;
    Ok(Session {
        id: row.try_get("id")?,
        metadata: serde_json::from_str(&metadata).map_err(|e| corrupt("metadata", e))?,
        started_at: from_ms(row.try_get("started_at")?)?,
        last_seen_at: from_ms(row.try_get("last_seen_at")?)?,
        requests: row.try_get::<i64, _>("requests")? as u64,
        timeout_secs: row.try_get::<i64, _>("timeout_ms")? as f64 / 1000.0,
        ended_at: ended_at.map(from_ms).transpose()?,
        end_reason: row.try_get("end_reason")?,
    })
}

/// [`SessionStore`] over one backend's store type (`conn()` and `begin()`).
macro_rules! sessions_sql {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::sessions::SessionStore for $store {
            async fn create_session(
                &self,
                owner: &$crate::ids::TenantId,
                new: &$crate::session::NewSession,
            ) -> $crate::error::Result<Option<$crate::session::Session>> {
                let at = $crate::store::rows::ms(new.at);
                let done = sqlx::query(
                    "INSERT INTO sessions (owner, id, metadata, started_at, last_seen_at, \
                     requests, timeout_ms) VALUES ($1, $2, $3, $4, $4, 0, $5) \
                     ON CONFLICT (owner, id) DO NOTHING",
                )
                .bind(owner.as_str())
                .bind(&new.id)
                .bind(new.metadata.to_string())
                .bind(at)
                .bind(new.timeout.as_millis() as i64)
                .execute(&mut *self.conn().await?)
                .await?;
                if done.rows_affected() == 0 {
                    return Ok(None);
                }
                self.get_session(owner, &new.id).await
            }

            async fn get_session(
                &self,
                owner: &$crate::ids::TenantId,
                id: &str,
            ) -> $crate::error::Result<Option<$crate::session::Session>> {
                let sql = concat!(
                    "SELECT ",
                    $crate::store::sessions::session_columns!(),
                    " FROM sessions WHERE owner = $1 AND id = $2"
                );
                let row = sqlx::query(sql)
                    .bind(owner.as_str())
                    .bind(id)
                    .fetch_optional(&mut *self.conn().await?)
                    .await?;
                row.as_ref()
                    .map($crate::store::sessions::session_from_row)
                    .transpose()
            }

            async fn list_sessions(
                &self,
                owner: &$crate::ids::TenantId,
                active_only: bool,
                before: Option<&str>,
                limit: u32,
            ) -> $crate::error::Result<Vec<$crate::session::Session>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(concat!(
                    "SELECT ",
                    $crate::store::sessions::session_columns!(),
                    " FROM sessions WHERE owner = "
                ));
                qb.push_bind(owner.as_str());
                if active_only {
                    qb.push(" AND ended_at IS NULL");
                }
                if let Some(before) = before {
                    qb.push(" AND id < ").push_bind(before);
                }
                qb.push(" ORDER BY id DESC LIMIT ")
                    .push_bind(i64::from(limit));
                let rows = qb.build().fetch_all(&mut *self.conn().await?).await?;
                rows.iter()
                    .map($crate::store::sessions::session_from_row)
                    .collect()
            }

            async fn session_habits(
                &self,
                owner: &$crate::ids::TenantId,
            ) -> $crate::error::Result<$crate::session::Habits> {
                use sqlx::Row as _;
                let row = sqlx::query(
                    "SELECT gaps, log_mean, log_var FROM session_habits WHERE owner = $1",
                )
                .bind(owner.as_str())
                .fetch_optional(&mut *self.conn().await?)
                .await?;
                Ok(match row {
                    Some(r) => $crate::session::Habits {
                        gaps: r.try_get::<i64, _>("gaps")? as u64,
                        log_mean: r.try_get("log_mean")?,
                        log_var: r.try_get("log_var")?,
                    },
                    None => $crate::session::Habits::default(),
                })
            }

            async fn touch_session(
                &self,
                owner: &$crate::ids::TenantId,
                id: &str,
                seen: chrono::DateTime<chrono::Utc>,
                at: chrono::DateTime<chrono::Utc>,
                timeout_ms: i64,
                habits: Option<&$crate::session::Habits>,
            ) -> $crate::error::Result<bool> {
                use $crate::store::rows::ms;
                let mut tx = self.begin().await?;
                let done = sqlx::query(
                    "UPDATE sessions SET last_seen_at = $1, requests = requests + 1, \
                     timeout_ms = $2 WHERE owner = $3 AND id = $4 AND ended_at IS NULL \
                     AND last_seen_at = $5",
                )
                .bind(ms(at).max(ms(seen)))
                .bind(timeout_ms)
                .bind(owner.as_str())
                .bind(id)
                .bind(ms(seen))
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                if let Some(h) = habits {
                    sqlx::query(
                        "INSERT INTO session_habits (owner, gaps, log_mean, log_var) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (owner) DO UPDATE SET \
                         gaps = excluded.gaps, log_mean = excluded.log_mean, \
                         log_var = excluded.log_var",
                    )
                        .bind(owner.as_str())
                        .bind(h.gaps as i64)
                        .bind(h.log_mean)
                        .bind(h.log_var)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn end_session(
                &self,
                owner: &$crate::ids::TenantId,
                id: &str,
                at: chrono::DateTime<chrono::Utc>,
                reason: &str,
            ) -> $crate::error::Result<Option<$crate::session::Session>> {
                let sql = concat!(
                    "UPDATE sessions SET ended_at = $1, end_reason = $2 \
                     WHERE owner = $3 AND id = $4 AND ended_at IS NULL RETURNING ",
                    $crate::store::sessions::session_columns!()
                );
                let row = sqlx::query(sql)
                    .bind($crate::store::rows::ms(at))
                    .bind(reason)
                    .bind(owner.as_str())
                    .bind(id)
                    .fetch_optional(&mut *self.conn().await?)
                    .await?;
                row.as_ref()
                    .map($crate::store::sessions::session_from_row)
                    .transpose()
            }

            async fn expire_sessions(
                &self,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::error::Result<Vec<($crate::ids::TenantId, $crate::session::Session)>>
            {
                use sqlx::Row as _;
                let sql = concat!(
                    "UPDATE sessions SET ended_at = last_seen_at + timeout_ms, end_reason = 'idle' \
                     WHERE ended_at IS NULL AND last_seen_at + timeout_ms < $1 RETURNING owner, ",
                    $crate::store::sessions::session_columns!()
                );
                let rows = sqlx::query(sql)
                    .bind($crate::store::rows::ms(now))
                    .fetch_all(&mut *self.conn().await?)
                    .await?;
                rows.iter()
                    .map(|r| {
                        let owner: String = r.try_get("owner")?;
                        Ok((
                            $crate::ids::TenantId::from_stored(&owner).map_err(|e| {
                                $crate::store::rows::corrupt("session owner", e.to_string())
                            })?,
                            $crate::store::sessions::session_from_row(r)?,
                        ))
                    })
                    .collect()
            }
        }
    };
}

pub(crate) use sessions_sql;
