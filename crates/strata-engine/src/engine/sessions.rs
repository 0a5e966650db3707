//! The session service: a tenant's visits with an idle timeout learned from the tenant's
//! pace (see [`crate::session`]). A memory add or search that names a session touches it off
//! the request path; a sweep in every process ends sessions idle past their timeout; each
//! start and end is an event subscribers of this process receive.
//!
//! Holds only what it uses: the store, the cache policy (a session's reads are cached in the
//! `user_session` kind and every change invalidates them), the event channel, and the
//! tracker of writes that must finish even if their caller goes away.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Writes, paged};
use crate::error::{EngineError, Result};
use crate::ids::TenantId;
use crate::model::Page;
use crate::policy::{CachePolicy, Changed};
use crate::session::{NewSession, Session, SessionSettings, Timeout};
use crate::store::Store;
use crate::validate;

/// `POST /v1/sessions`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartSession {
    /// Its id, 1-128 characters (default: a new UUID).
    pub id: Option<String>,
    /// A JSON object kept with it.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// Also warm the tenant's memories for searching (see `POST /v1/memories/preload`).
    #[serde(default)]
    pub preload: bool,
}

/// A session as the API shows it: stored fields, state and the timeout explained.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    /// The session.
    #[serde(flatten)]
    pub session: Session,
    /// `active` or `ended`.
    pub state: &'static str,
    /// When it ends if no request comes first; null once ended.
    pub expires_at: Option<DateTime<Utc>>,
    /// The tenant's current idle timeout and why.
    pub timeout: Timeout,
}

/// A session started or ended, for this process's subscribers.
#[derive(Debug, Clone)]
pub struct SessionEvent {
    /// Whose.
    pub owner: TenantId,
    /// `started`, `closed` (by the caller) or `expired` (idle).
    pub kind: &'static str,
    /// The session then.
    pub session: Session,
}

/// The session service (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct SessionService {
    pub(super) store: Arc<dyn Store>,
    pub(super) policy: CachePolicy,
    pub(super) settings: SessionSettings,
    pub(super) events: broadcast::Sender<SessionEvent>,
    pub(super) writes: Arc<Writes>,
}

impl SessionService {
    /// Starts a session for the owner.
    pub async fn start(&self, owner: &TenantId, req: StartSession) -> Result<SessionView> {
        let id = match req.id {
            Some(id) => {
                validate::label("id", &id, 128)?;
                id
            }
            None => uuid::Uuid::now_v7().to_string(),
        };
        let metadata = match req.metadata {
            Some(m) => validate::metadata(m)?,
            None => serde_json::json!({}),
        };
        let habits = self.store.session_habits(owner).await?;
        let timeout = habits.timeout(&self.settings);
        let new = NewSession {
            id: id.clone(),
            metadata,
            at: Utc::now(),
            timeout: std::time::Duration::from_secs_f64(timeout.secs),
        };
        let session = self
            .store
            .create_session(owner, &new)
            .await?
            .ok_or_else(|| EngineError::invalid("id", format!("session {id:?} already exists")))?;
        self.changed(owner, "started", &session).await;
        Ok(self.view(session, timeout))
    }

    /// One session of the owner's.
    pub async fn get(&self, owner: &TenantId, id: &str) -> Result<SessionView> {
        let session = self.find(owner, id).await?;
        let timeout = self
            .store
            .session_habits(owner)
            .await?
            .timeout(&self.settings);
        Ok(self.view(session, timeout))
    }

    /// A page of the owner's sessions (active ones only, when asked), by id descending.
    pub async fn list(
        &self,
        owner: &TenantId,
        active_only: bool,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<SessionView>> {
        let timeout = self
            .store
            .session_habits(owner)
            .await?
            .timeout(&self.settings);
        let page = paged(
            limit,
            cursor,
            &[if active_only { "active" } else { "" }],
            |before: Option<String>, limit| async move {
                self.store
                    .list_sessions(owner, active_only, before.as_deref(), limit)
                    .await
            },
            |s: &Session| s.id.clone(),
        )
        .await?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|s| self.view(s, timeout.clone()))
                .collect(),
            next_cursor: page.next_cursor,
        })
    }

    /// Ends an active session (the caller closed it).
    pub async fn end(&self, owner: &TenantId, id: &str) -> Result<SessionView> {
        let session = match self
            .store
            .end_session(owner, id, Utc::now(), "closed")
            .await?
        {
            Some(s) => {
                self.changed(owner, "closed", &s).await;
                s
            }
            // Already ended: answer what it is.
            None => self.find(owner, id).await?,
        };
        let timeout = self
            .store
            .session_habits(owner)
            .await?
            .timeout(&self.settings);
        Ok(self.view(session, timeout))
    }

    /// Records a request on the owner's session `id`, off the caller's path: learns the gap
    /// since the last one, moves its timeout, or ends it if it had already timed out. A name
    /// that is not one of the owner's sessions is only a label of memories, and is ignored.
    pub fn touch(&self, owner: &TenantId, id: &str) {
        let (this, owner, id) = (self.clone(), owner.clone(), id.to_owned());
        let at = Utc::now();
        self.writes.spawn(async move {
            if let Err(e) = this.touch_now(&owner, &id, at).await {
                tracing::debug!(error = %e, "could not record a session's request");
            }
        });
    }

    async fn touch_now(&self, owner: &TenantId, id: &str, at: DateTime<Utc>) -> Result<()> {
        // A touch that loses a race with another reads again; three losses in a row mean
        // the session is busier than its statistics need.
        for _ in 0..3 {
            let Some(s) = self.store.get_session(owner, id).await? else {
                return Ok(());
            };
            if s.ended_at.is_some() {
                return Ok(());
            }
            let gap = (at - s.last_seen_at).num_milliseconds() as f64 / 1000.0;
            if gap > s.timeout_secs {
                let ended_at = s.last_seen_at
                    + chrono::Duration::milliseconds((s.timeout_secs * 1000.0) as i64);
                if let Some(ended) = self.store.end_session(owner, id, ended_at, "idle").await? {
                    self.changed(owner, "expired", &ended).await;
                }
                return Ok(());
            }
            let mut habits = self.store.session_habits(owner).await?;
            let learned = gap > 0.0;
            if learned {
                habits.observe(gap);
            }
            let timeout = habits.timeout(&self.settings);
            let timeout_ms = (timeout.secs * 1000.0) as i64;
            let habits = learned.then_some(&habits);
            if self
                .store
                .touch_session(owner, id, s.last_seen_at, at, timeout_ms, habits)
                .await?
            {
                self.policy.changed(owner, Changed::Sessions).await;
                return Ok(());
            }
        }
        Ok(())
    }

    /// Session starts and ends in this process, as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }

    /// The settings in force.
    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    /// Ends idle sessions every `sweep_every` until `shutdown`.
    pub fn spawn_sweeper(&self, tracker: &TaskTracker, shutdown: &CancellationToken) {
        let (this, shutdown) = (self.clone(), shutdown.clone());
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(this.settings.sweep_every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = shutdown.cancelled() => return,
                }
                match this.store.expire_sessions(Utc::now()).await {
                    Ok(ended) => {
                        for (owner, s) in ended {
                            this.changed(&owner, "expired", &s).await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not end idle sessions"),
                }
            }
        });
    }

    async fn find(&self, owner: &TenantId, id: &str) -> Result<Session> {
        self.store
            .get_session(owner, id)
            .await?
            .ok_or_else(|| EngineError::not_found(crate::ids::IdKind::Session, id))
    }

    async fn changed(&self, owner: &TenantId, kind: &'static str, session: &Session) {
        self.policy.changed(owner, Changed::Sessions).await;
        let _ = self.events.send(SessionEvent {
            owner: owner.clone(),
            kind,
            session: session.clone(),
        });
    }

    fn view(&self, session: Session, timeout: Timeout) -> SessionView {
        let active = session.ended_at.is_none();
        let expires_at = active.then(|| {
            session.last_seen_at
                + chrono::Duration::milliseconds((session.timeout_secs * 1000.0) as i64)
        });
        SessionView {
            state: if active { "active" } else { "ended" },
            expires_at,
            timeout,
            session,
        }
    }
}
