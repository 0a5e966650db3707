//! Single-flight: the first caller to miss a key computes it; concurrent callers for the same
//! key wait for that result instead of computing it again. A leader that fails or is dropped
//! releases its followers, who then retry.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::watch;

type Slot = watch::Receiver<Option<Bytes>>;

#[derive(Default)]
pub(crate) struct Flights {
    inflight: Mutex<HashMap<String, Slot>>,
}

pub(crate) enum Role<'a> {
    Leader(LeaderGuard<'a>),
    Follower(Slot),
}

/// Held by the computing caller; dropping it without [`LeaderGuard::complete`] releases the
/// followers empty-handed.
pub(crate) struct LeaderGuard<'a> {
    flights: &'a Flights,
    key: String,
    tx: watch::Sender<Option<Bytes>>,
}

impl Flights {
    pub(crate) fn join_or_lead(&self, key: &str) -> Role<'_> {
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = map.get(key) {
            return Role::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.to_owned(), rx);
        Role::Leader(LeaderGuard {
            flights: self,
            key: key.to_owned(),
            tx,
        })
    }
}

impl LeaderGuard<'_> {
    pub(crate) fn complete(self, value: Bytes) {
        let _ = self.tx.send(Some(value));
        // Drop removes the slot.
    }
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        let mut map = self
            .flights
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.remove(&self.key);
    }
}

/// Waits for the leader's value; `None` when the leader failed or went away.
pub(crate) async fn wait(rx: &mut Slot) -> Option<Bytes> {
    loop {
        if let Some(v) = rx.borrow().clone() {
            return Some(v);
        }
        if rx.changed().await.is_err() {
            return rx.borrow().clone();
        }
    }
}
