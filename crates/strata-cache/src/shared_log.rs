//! Shared logs across processes (Redis only): one process leads a name and appends entries
//! as it makes them; others read them from the start while they grow. The LLM gateway
//! streams an upstream answer this way to identical requests that reached other instances.
//!
//! Must not import: anything of the domain; entries are bytes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::remote::Remote;

/// What [`Cache::claim_log`](crate::Cache::claim_log) found.
pub enum Claim {
    /// This process leads: append, then release.
    Lead(LogLeader),
    /// Another process leads: read.
    Follow(LogReader),
    /// No Redis, or it cannot say: the caller works alone.
    Unavailable,
}

/// The lead of a shared log.
pub struct LogLeader {
    remote: Arc<Remote>,
    name: String,
    token: String,
    lease: Duration,
    ttl: Duration,
}

impl LogLeader {
    /// Appends entries and renews the lease; `false` when the lead was lost (the lease ran
    /// out) or Redis did not take them: readers elsewhere will not see them.
    pub async fn append(&self, entries: Vec<Bytes>) -> bool {
        self.remote
            .log_append(&self.name, &self.token, self.lease, self.ttl, entries)
            .await
    }

    /// Appends the last entries and gives up the lead in one step, so no reader sees the
    /// end while the lead is still held; `false` when the lead was already lost.
    pub async fn close(&self, entries: Vec<Bytes>) -> bool {
        self.remote
            .log_close(&self.name, &self.token, self.ttl, entries)
            .await
    }

    /// How many processes read the log within the last two seconds (0 when Redis cannot say).
    pub async fn readers(&self) -> u64 {
        self.remote.log_readers(&self.name).await.unwrap_or(0)
    }

    /// Gives up the lead (appends after it fail); the entries stay readable until their
    /// time to live ends.
    pub async fn release(&self) {
        self.remote.log_release(&self.name, &self.token).await;
    }
}

/// A reader of a shared log, at an offset.
pub struct LogReader {
    remote: Arc<Remote>,
    name: String,
    token: String,
    offset: usize,
}

/// One read of a shared log.
pub struct Read {
    /// Entries appended since the last read.
    pub entries: Vec<Bytes>,
    /// Whether a leader still holds the log.
    pub led: bool,
}

impl LogReader {
    /// The entries appended since the last read; `None` when Redis cannot say.
    pub async fn read(&mut self) -> Option<Read> {
        let (entries, led) = self
            .remote
            .log_read(&self.name, self.offset, &self.token)
            .await?;
        self.offset += entries.len();
        Some(Read { entries, led })
    }
}

impl crate::Cache {
    /// Claims the lead of the shared log `name` (lease renewed by every append; entries kept
    /// `ttl` after the last), or follows the process that holds it.
    pub async fn claim_log(&self, name: &str, lease: Duration, ttl: Duration) -> Claim {
        let Some(remote) = self.inner.remote.as_ref() else {
            return Claim::Unavailable;
        };
        match remote.log_claim(name, lease).await {
            None => Claim::Unavailable,
            Some(Some(token)) => Claim::Lead(LogLeader {
                remote: remote.clone(),
                name: name.to_owned(),
                token,
                lease,
                ttl,
            }),
            Some(None) => Claim::Follow(LogReader {
                remote: remote.clone(),
                name: name.to_owned(),
                token: remote.reader_token(),
                offset: 0,
            }),
        }
    }
}
