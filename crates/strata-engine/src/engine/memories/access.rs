//! Access recording off the request path: a search hands its hits to a bounded channel and
//! returns; a background task sums them per tenant and memory and writes each tenant's batch
//! in one transaction, at most every [`FLUSH_EVERY`] (sooner when [`FLUSH_AT`] hits wait),
//! updating the working sets held here at the same time. When the channel is full (the
//! database far behind) hits are dropped and counted rather than slowing searches down.
//!
//! Access counts are statistics: they do not invalidate cached reads, so a cached
//! `GET /v1/memories/{id}` may show a count up to the memory kind's TTL old, and another
//! process's working set sees them when it is next rebuilt.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ids::{MemoryId, TenantId};
use crate::memory::working::WorkingSets;
use crate::store::Store;

/// Longest a recorded hit waits before it is written.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Hits waiting that trigger a write at once.
const FLUSH_AT: usize = 4096;
/// Searches' hit lists the channel holds.
const CAPACITY: usize = 8192;

type Hits = (TenantId, Vec<MemoryId>, DateTime<Utc>);

/// The sending side, and what is waiting to be written (see the module doc).
#[derive(Clone)]
pub struct AccessRecorder {
    tx: mpsc::Sender<Hits>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Hits>>>,
    dropped: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl Default for AccessRecorder {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(CAPACITY);
        Self {
            tx,
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
            dropped: Arc::default(),
            written: Arc::default(),
        }
    }
}

impl AccessRecorder {
    /// Queues one search's hits; never waits.
    pub fn record(&self, owner: &TenantId, ids: Vec<MemoryId>, at: DateTime<Utc>) {
        if self.tx.try_send((owner.clone(), ids, at)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Hit lists dropped because the writer was behind, and hits written.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.dropped.load(Ordering::Relaxed),
            self.written.load(Ordering::Relaxed),
        )
    }

    /// Writes batches until `shutdown`, then what is left.
    pub fn spawn(
        &self,
        store: Arc<dyn Store>,
        sets: Arc<WorkingSets>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        let this = self.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = shutdown.cancelled() => break,
                }
                this.flush(store.as_ref(), &sets).await;
            }
            this.flush(store.as_ref(), &sets).await;
        });
    }

    /// Writes every hit waiting now, one transaction per tenant.
    pub async fn flush(&self, store: &dyn Store, sets: &WorkingSets) {
        loop {
            let mut batch: HashMap<TenantId, (HashMap<MemoryId, u32>, DateTime<Utc>)> =
                HashMap::new();
            let mut n = 0;
            {
                let mut rx = self.rx.lock().await;
                while n < FLUSH_AT {
                    let Ok((owner, ids, at)) = rx.try_recv() else {
                        break;
                    };
                    let (counts, last) = batch.entry(owner).or_insert_with(|| (HashMap::new(), at));
                    *last = (*last).max(at);
                    for id in ids {
                        *counts.entry(id).or_default() += 1;
                        n += 1;
                    }
                }
            }
            if batch.is_empty() {
                return;
            }
            for (owner, (counts, at)) in batch {
                let hits: Vec<(MemoryId, u32)> = counts.into_iter().collect();
                match store.record_access(&owner, &hits, at).await {
                    Ok(()) => {
                        if let Some(set) = sets.held(&owner) {
                            set.accessed(&hits, at);
                        }
                        self.written.fetch_add(hits.len() as u64, Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!(error = %e, "could not record memory accesses"),
                }
            }
            if n < FLUSH_AT {
                return;
            }
        }
    }
}
