//! The durable job queue's storage: one aggregate, its SQL written once for both backends.
//!
//! A job is a kind, an owner, an optional subject and a JSON payload. The queue knows
//! nothing of what a kind does: it stores, claims, leases, fences, retries and finishes
//! jobs. The subject is an opaque key (`document:{id}`) by which the aggregate a job works
//! on cancels that subject's unfinished jobs in its own transaction (`CANCEL_SUBJECT`);
//! the payload is what the kind needs to run.
//!
//! Rules every implementation keeps:
//! - a claim issues a fresh lease token (a fencing token) and counts the attempt; every
//!   write under a lease succeeds only while that lease is held (`LEASE_HELD` in the same
//!   transaction), so a worker that lost its lease can never overwrite its successor's work;
//! - only the kinds the claiming process runs are claimed (an older process never takes a
//!   newer kind).
//!
//! **How an aggregate is written once**: its operations are one trait ([`JobQueue`]); its
//! SQL is written in `$N` placeholders, which PostgreSQL binds and SQLite binds by number
//! too, inside one macro body (`queue_sql!`) that is instantiated for each backend's store
//! type; what really differs (here only PostgreSQL's `FOR UPDATE SKIP LOCKED`) is a macro
//! argument. Every store type offers `conn()` (a metered pooled connection) and `begin()`
//! (a write transaction: `BEGIN IMMEDIATE` on SQLite), which is all the body needs.
//!
//! Must not import: HTTP types, the cache, anything of a particular kind (documents).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::Result;
use crate::ids::{JobId, TenantId};
use crate::model::{Job, JobFilter, StageProgress};

/// Columns of a job row, in the order [`super::rows::job_from_row`] reads them.
pub(crate) const JOB_COLUMNS: &str = "id, owner, kind, subject, payload, status, stage, stages, \
     attempts, max_attempts, error, created_at, updated_at, finished_at";

/// Inserts a queued job: `$1` id, `$2` owner, `$3` kind, `$4` subject, `$5` payload (JSON
/// text), `$6` max attempts, `$7` now (ms), `$8` run after (ms). For use inside another
/// aggregate's transaction (a document and its ingestion job are inserted together).
pub(crate) const ENQUEUE: &str = "INSERT INTO jobs (id, owner, kind, subject, payload, status, \
     stages, attempts, max_attempts, run_after, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, 'queued', '[]', 0, $6, $8, $7, $7)";

/// Cancels a subject's unfinished jobs and revokes their leases (a worker still busy with
/// one stops at its next fenced write): `$1` subject, `$2` now (ms), `$3` why.
pub(crate) const CANCEL_SUBJECT: &str = "UPDATE jobs SET status = 'cancelled', \
     lease_token = NULL, lease_expires_at = NULL, error = $3, updated_at = $2, finished_at = $2 \
     WHERE subject = $1 AND status IN ('queued', 'running')";

/// Checks a lease inside a write transaction and refreshes `updated_at`; one row affected
/// means the lease is held: `$1` now (ms), `$2` job id, `$3` lease token.
pub(crate) const LEASE_HELD: &str = "UPDATE jobs SET updated_at = $1 \
     WHERE id = $2 AND lease_token = $3 AND status = 'running'";

/// A job to put on the queue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Its id.
    pub id: JobId,
    /// Whose it is.
    pub owner: TenantId,
    /// Which [`crate::jobs::JobKind`] runs it.
    pub kind: &'static str,
    /// What it works on, as the owning aggregate names it (`document:{id}`), if anything.
    pub subject: Option<String>,
    /// What the kind needs to run it.
    pub payload: Value,
    /// Claims before it fails for good.
    pub max_attempts: u32,
    /// Not before this time.
    pub run_after: DateTime<Utc>,
}

/// Proof that a worker holds a job. Writes under a lease fail with `Ok(false)` /
/// [`LeaseLost`](crate::jobs::JobError::LeaseLost) once another worker has taken the job over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The job.
    pub job_id: JobId,
    /// The fencing token issued at claim time.
    pub token: String,
}

/// A job a worker has just claimed.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    /// The job as it was claimed (attempts already incremented).
    pub job: Job,
    /// The job's owner.
    pub owner: TenantId,
    /// The lease to present on every write.
    pub lease: Lease,
    /// What the kind needs to run it.
    pub payload: Value,
}

/// A running job whose worker lost its lease with no attempt left: it fails without running
/// again, after its kind has had its say ([`crate::jobs::JobKind::abandoned`]).
#[derive(Debug, Clone)]
pub struct Abandoned {
    /// The job.
    pub id: JobId,
    /// Its kind.
    pub kind: String,
    /// Its owner.
    pub owner: TenantId,
    /// Its payload.
    pub payload: Value,
}

/// How a job attempt ended, as the queue records it.
#[derive(Debug, Clone)]
pub enum JobOutcome {
    /// Done.
    Succeeded,
    /// A transient failure: queued again, not before `retry_at`, if attempts remain;
    /// failed for good (`... (attempts exhausted)`) otherwise.
    Retry {
        /// Why.
        error: String,
        /// Earliest time of the next attempt.
        retry_at: DateTime<Utc>,
    },
    /// Failed for good.
    Failed {
        /// Why.
        error: String,
    },
}

/// The queue's storage (see the module doc).
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Puts a job on the queue.
    async fn enqueue(&self, job: &NewJob) -> Result<()>;

    /// One job of the owner's.
    async fn get_job(&self, owner: &TenantId, id: JobId) -> Result<Option<Job>>;

    /// One job by id, whatever its owner (for progress fan-out inside the server).
    async fn get_job_any_owner(&self, id: JobId) -> Result<Option<(TenantId, Job)>>;

    /// Up to `limit` of the owner's jobs, newest first, strictly older than `before`.
    async fn list_jobs(
        &self,
        owner: &TenantId,
        filter: &JobFilter,
        before: Option<JobId>,
        limit: u32,
    ) -> Result<Vec<Job>>;

    /// Running jobs of these kinds whose lease expired with no attempt left.
    async fn abandoned_jobs(&self, kinds: &[&str], now: DateTime<Utc>) -> Result<Vec<Abandoned>>;

    /// Fails an abandoned job for good; `false` when it is no longer abandoned (another
    /// process failed it first, or its owner deleted what it worked on).
    async fn fail_abandoned(&self, id: JobId, now: DateTime<Utc>) -> Result<bool>;

    /// Claims the oldest runnable job of these kinds: queued and due, or running with an
    /// expired lease and attempts left.
    async fn claim_job(
        &self,
        kinds: &[&str],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<ClaimedJob>>;

    /// Extends a lease; `false` when it is no longer held.
    async fn heartbeat(&self, lease: &Lease, lease_until: DateTime<Utc>) -> Result<bool>;

    /// Records the current stage and per-stage progress; `false` when the lease is lost.
    async fn record_progress(
        &self,
        lease: &Lease,
        stage: &str,
        stages: &[StageProgress],
    ) -> Result<bool>;

    /// Ends an attempt; `false` when the lease is lost.
    async fn finish_job(&self, lease: &Lease, outcome: &JobOutcome) -> Result<bool>;

    /// Returns a claimed job to the queue without counting the attempt (shutdown).
    async fn release_job(&self, lease: &Lease) -> Result<bool>;

    /// How many unfinished jobs there are, by kind and [`QueueDepth::state`], across every
    /// process (reads only the queued and running rows, through `jobs_runnable`).
    async fn queue_depth(&self, now: DateTime<Utc>) -> Result<Vec<QueueDepth>>;
}

/// Unfinished jobs of one kind in one state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueueDepth {
    /// The job kind.
    pub kind: String,
    /// `queued` (due now), `delayed` (waiting for a retry's backoff) or `running`.
    pub state: String,
    /// How many.
    pub jobs: u64,
}

/// The job queue over one backend's store type: `$store` has `conn()` and `begin()`, `$db`
/// is its `sqlx::Database`, `$skip_locked` what a claim's row lock adds to its subquery.
macro_rules! queue_sql {
    ($store:ty, $db:ty, skip_locked = $skip_locked:literal) => {
        #[async_trait::async_trait]
        impl $crate::store::queue::JobQueue for $store {
            async fn enqueue(&self, job: &$crate::store::queue::NewJob) -> $crate::error::Result<()> {
                enqueue_in(&mut *self.conn().await?, job).await
            }

            async fn get_job(
                &self,
                owner: &$crate::ids::TenantId,
                id: $crate::ids::JobId,
            ) -> $crate::error::Result<Option<$crate::model::Job>> {
                let sql = format!(
                    "SELECT {} FROM jobs WHERE owner = $1 AND id = $2",
                    $crate::store::queue::JOB_COLUMNS
                );
                let row = sqlx::query(&sql)
                    .bind(owner.as_str())
                    .bind(id.to_string())
                    .fetch_optional(&mut *self.conn().await?)
                    .await?;
                Ok(row
                    .as_ref()
                    .map($crate::store::rows::job_from_row)
                    .transpose()?
                    .map(|(_, j)| j))
            }

            async fn get_job_any_owner(
                &self,
                id: $crate::ids::JobId,
            ) -> $crate::error::Result<Option<($crate::ids::TenantId, $crate::model::Job)>> {
                let sql = format!(
                    "SELECT {} FROM jobs WHERE id = $1",
                    $crate::store::queue::JOB_COLUMNS
                );
                let row = sqlx::query(&sql)
                    .bind(id.to_string())
                    .fetch_optional(&mut *self.conn().await?)
                    .await?;
                row.as_ref().map($crate::store::rows::job_from_row).transpose()
            }

            async fn list_jobs(
                &self,
                owner: &$crate::ids::TenantId,
                filter: &$crate::model::JobFilter,
                before: Option<$crate::ids::JobId>,
                limit: u32,
            ) -> $crate::error::Result<Vec<$crate::model::Job>> {
                let sql = format!(
                    "SELECT {} FROM jobs WHERE owner = $1 \
                     AND (CAST($2 AS TEXT) IS NULL OR status = $2) \
                     AND (CAST($3 AS TEXT) IS NULL OR id < $3) \
                     ORDER BY id DESC LIMIT $4",
                    $crate::store::queue::JOB_COLUMNS
                );
                let rows = sqlx::query(&sql)
                    .bind(owner.as_str())
                    .bind(filter.status.map(|s| s.as_str()))
                    .bind(before.map(|b| b.to_string()))
                    .bind(i64::from(limit))
                    .fetch_all(&mut *self.conn().await?)
                    .await?;
                rows.iter()
                    .map(|r| $crate::store::rows::job_from_row(r).map(|(_, j)| j))
                    .collect()
            }

            async fn abandoned_jobs(
                &self,
                kinds: &[&str],
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::error::Result<Vec<$crate::store::queue::Abandoned>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(
                    "SELECT id, kind, owner, payload FROM jobs WHERE status = 'running' \
                     AND attempts >= max_attempts AND lease_expires_at < ",
                );
                qb.push_bind($crate::store::rows::ms(now));
                push_kinds(&mut qb, kinds);
                let rows = qb.build().fetch_all(&mut *self.conn().await?).await?;
                rows.iter()
                    .map(|r| {
                        use sqlx::Row as _;
                        let id: String = r.try_get("id")?;
                        let payload: String = r.try_get("payload")?;
                        Ok($crate::store::queue::Abandoned {
                            id: id
                                .parse()
                                .map_err(|e| $crate::store::rows::corrupt("job id", e))?,
                            kind: r.try_get("kind")?,
                            owner: $crate::store::rows::owner_of(r)?,
                            payload: serde_json::from_str(&payload)
                                .map_err(|e| $crate::store::rows::corrupt("payload", e))?,
                        })
                    })
                    .collect()
            }

            async fn fail_abandoned(
                &self,
                id: $crate::ids::JobId,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::error::Result<bool> {
                let res = sqlx::query(
                    "UPDATE jobs SET status = 'failed', lease_token = NULL, \
                     lease_expires_at = NULL, \
                     error = COALESCE(error, 'worker lost its lease') || ' (attempts exhausted)', \
                     updated_at = $2, finished_at = $2 \
                     WHERE id = $1 AND status = 'running' AND attempts >= max_attempts \
                     AND lease_expires_at < $2",
                )
                .bind(id.to_string())
                .bind($crate::store::rows::ms(now))
                .execute(&mut *self.conn().await?)
                .await?;
                Ok(res.rows_affected() == 1)
            }

            async fn claim_job(
                &self,
                kinds: &[&str],
                now: chrono::DateTime<chrono::Utc>,
                lease_until: chrono::DateTime<chrono::Utc>,
            ) -> $crate::error::Result<Option<$crate::store::queue::ClaimedJob>> {
                let now_ms = $crate::store::rows::ms(now);
                let token = uuid::Uuid::now_v7().to_string();
                let mut qb = sqlx::QueryBuilder::<$db>::new(
                    "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_token = ",
                );
                qb.push_bind(token.clone())
                    .push(", lease_expires_at = ")
                    .push_bind($crate::store::rows::ms(lease_until))
                    .push(", updated_at = ")
                    .push_bind(now_ms)
                    .push(
                        ", error = NULL WHERE id = (SELECT id FROM jobs \
                         WHERE ((status = 'queued' AND run_after <= ",
                    )
                    .push_bind(now_ms)
                    .push(") OR (status = 'running' AND attempts < max_attempts AND lease_expires_at < ")
                    .push_bind(now_ms)
                    .push("))");
                push_kinds(&mut qb, kinds);
                qb.push(" ORDER BY run_after, id LIMIT 1")
                    .push($skip_locked)
                    .push(") RETURNING ")
                    .push($crate::store::queue::JOB_COLUMNS);
                let mut tx = self.begin().await?;
                let row = qb.build().fetch_optional(&mut *tx).await?;
                tx.commit().await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let payload = {
                    use sqlx::Row as _;
                    let p: String = row.try_get("payload")?;
                    serde_json::from_str(&p)
                        .map_err(|e| $crate::store::rows::corrupt("payload", e))?
                };
                let (owner, job) = $crate::store::rows::job_from_row(&row)?;
                Ok(Some($crate::store::queue::ClaimedJob {
                    lease: $crate::store::queue::Lease { job_id: job.id, token },
                    job,
                    owner,
                    payload,
                }))
            }

            async fn heartbeat(
                &self,
                lease: &$crate::store::queue::Lease,
                lease_until: chrono::DateTime<chrono::Utc>,
            ) -> $crate::error::Result<bool> {
                let res = sqlx::query(
                    "UPDATE jobs SET lease_expires_at = $3 \
                     WHERE id = $1 AND lease_token = $2 AND status = 'running'",
                )
                .bind(lease.job_id.to_string())
                .bind(&lease.token)
                .bind($crate::store::rows::ms(lease_until))
                .execute(&mut *self.conn().await?)
                .await?;
                Ok(res.rows_affected() == 1)
            }

            async fn record_progress(
                &self,
                lease: &$crate::store::queue::Lease,
                stage: &str,
                stages: &[$crate::model::StageProgress],
            ) -> $crate::error::Result<bool> {
                let stages = serde_json::to_string(stages)
                    .map_err(|e| $crate::error::EngineError::Internal(e.to_string()))?;
                let res = sqlx::query(
                    "UPDATE jobs SET stage = $3, stages = $4, updated_at = $5 \
                     WHERE id = $1 AND lease_token = $2 AND status = 'running'",
                )
                .bind(lease.job_id.to_string())
                .bind(&lease.token)
                .bind(stage)
                .bind(stages)
                .bind($crate::store::rows::ms(chrono::Utc::now()))
                .execute(&mut *self.conn().await?)
                .await?;
                Ok(res.rows_affected() == 1)
            }

            async fn finish_job(
                &self,
                lease: &$crate::store::queue::Lease,
                outcome: &$crate::store::queue::JobOutcome,
            ) -> $crate::error::Result<bool> {
                use $crate::store::queue::JobOutcome;
                let (status, error, run_after) = match outcome {
                    JobOutcome::Succeeded => ("succeeded", None, None),
                    JobOutcome::Failed { error } => ("failed", Some(error.as_str()), None),
                    JobOutcome::Retry { error, retry_at } => (
                        "queued",
                        Some(error.as_str()),
                        Some($crate::store::rows::ms(*retry_at)),
                    ),
                };
                // A retry with no attempt left fails for good, here as in the runner.
                let res = sqlx::query(
                    "UPDATE jobs SET \
                     status = CASE WHEN $3 = 'queued' AND attempts >= max_attempts \
                         THEN 'failed' ELSE $3 END, \
                     error = CASE WHEN $3 = 'queued' AND attempts >= max_attempts \
                         THEN $4 || ' (attempts exhausted)' ELSE $4 END, \
                     finished_at = CASE WHEN $3 = 'queued' AND attempts < max_attempts \
                         THEN NULL ELSE $6 END, \
                     lease_token = NULL, lease_expires_at = NULL, \
                     run_after = COALESCE(CAST($5 AS BIGINT), run_after), updated_at = $6 \
                     WHERE id = $1 AND lease_token = $2 AND status = 'running'",
                )
                .bind(lease.job_id.to_string())
                .bind(&lease.token)
                .bind(status)
                .bind(error)
                .bind(run_after)
                .bind($crate::store::rows::ms(chrono::Utc::now()))
                .execute(&mut *self.conn().await?)
                .await?;
                Ok(res.rows_affected() == 1)
            }

            async fn queue_depth(
                &self,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::error::Result<Vec<$crate::store::queue::QueueDepth>> {
                let rows: Vec<(String, String, i64)> = sqlx::query_as(
                    "SELECT kind, CASE WHEN status = 'running' THEN 'running' \
                     WHEN run_after <= $1 THEN 'queued' ELSE 'delayed' END AS state, COUNT(*) \
                     FROM jobs WHERE status IN ('queued', 'running') \
                     GROUP BY 1, 2 ORDER BY 1, 2",
                )
                .bind($crate::store::rows::ms(now))
                .fetch_all(&mut *self.conn().await?)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(kind, state, n)| $crate::store::queue::QueueDepth {
                        kind,
                        state,
                        jobs: u64::try_from(n).unwrap_or(0),
                    })
                    .collect())
            }

            async fn release_job(
                &self,
                lease: &$crate::store::queue::Lease,
            ) -> $crate::error::Result<bool> {
                let now = $crate::store::rows::ms(chrono::Utc::now());
                let res = sqlx::query(
                    "UPDATE jobs SET status = 'queued', \
                     attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, \
                     lease_token = NULL, lease_expires_at = NULL, run_after = $3, updated_at = $3 \
                     WHERE id = $1 AND lease_token = $2 AND status = 'running'",
                )
                .bind(lease.job_id.to_string())
                .bind(&lease.token)
                .bind(now)
                .execute(&mut *self.conn().await?)
                .await?;
                Ok(res.rows_affected() == 1)
            }
        }

        /// Inserts a queued job on `conn`: inside another aggregate's transaction (a
        /// document and its ingestion job are inserted together), or alone.
        async fn enqueue_in(
            conn: &mut <$db as sqlx::Database>::Connection,
            job: &$crate::store::queue::NewJob,
        ) -> $crate::error::Result<()> {
            sqlx::query($crate::store::queue::ENQUEUE)
                .bind(job.id.to_string())
                .bind(job.owner.as_str())
                .bind(job.kind)
                .bind(job.subject.as_deref())
                .bind(job.payload.to_string())
                .bind(i64::from(job.max_attempts))
                .bind($crate::store::rows::ms(chrono::Utc::now()))
                .bind($crate::store::rows::ms(job.run_after))
                .execute(&mut *conn)
                .await?;
            Ok(())
        }

        /// Checks a lease inside a write transaction (of any aggregate whose writes are fenced
        /// by it) and refreshes the job's `updated_at`: `true` while the lease is held.
        async fn lease_held(
            conn: &mut <$db as sqlx::Database>::Connection,
            lease: &$crate::store::queue::Lease,
        ) -> $crate::error::Result<bool> {
            let res = sqlx::query($crate::store::queue::LEASE_HELD)
                .bind($crate::store::rows::ms(chrono::Utc::now()))
                .bind(lease.job_id.to_string())
                .bind(&lease.token)
                .execute(&mut *conn)
                .await?;
            Ok(res.rows_affected() == 1)
        }

        /// Appends ` AND kind IN (...)` with the kinds bound.
        fn push_kinds(qb: &mut sqlx::QueryBuilder<'_, $db>, kinds: &[&str]) {
            if kinds.is_empty() {
                qb.push(" AND FALSE");
                return;
            }
            qb.push(" AND kind IN (");
            let mut sep = qb.separated(", ");
            for k in kinds {
                sep.push_bind(k.to_string());
            }
            qb.push(")");
        }
    };
}

pub(crate) use queue_sql;
