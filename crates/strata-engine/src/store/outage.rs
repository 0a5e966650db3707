//! The database breaker: once the database is known to be unreachable, requests that need a
//! connection fail at once (503 with `Retry-After`) instead of each holding a client for the
//! pool's whole acquire timeout while the pool retries connecting, and a probe looks for
//! recovery so the store serves again within about a second of the database's return,
//! without a restart.
//!
//! An acquire that waits longer than [`SUSPECT_AFTER`], or a connection lost mid-statement,
//! makes the store *suspect* the database: one probe opens a fresh connection of its own
//! (not through the pool) under [`PROBE_TIMEOUT`]. If that fails the breaker opens, and the
//! acquires already waiting give up with it; the probe then retries every [`PROBE_EVERY`]
//! until a connection succeeds, which closes the breaker. A probe that succeeds at once means
//! the wait was load, not an outage, and changes nothing.
//!
//! Must not import: the cache, HTTP types.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::error::EngineError;

/// How long an acquire waits before the store suspects the database.
pub const SUSPECT_AFTER: Duration = Duration::from_millis(250);
/// Longest a probe connection may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between failed probes.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Fewest seconds between two probes while the breaker is closed.
const CLOSED_PROBE_GAP: Duration = Duration::from_secs(1);

/// Opens a connection of its own and says whether it worked.
pub type Probe = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// The breaker in front of a database pool.
pub struct Outage {
    open: watch::Sender<bool>,
    since: Mutex<Option<Instant>>,
    last_probe: Mutex<Option<Instant>>,
    probing: AtomicBool,
    probe: Probe,
    trips: AtomicU64,
    fast_failures: AtomicU64,
}

impl std::fmt::Debug for Outage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outage")
            .field("open", &*self.open.borrow())
            .field("trips", &self.trips)
            .finish_non_exhaustive()
    }
}

/// What the breaker has seen, for statistics and metrics.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct OutageStats {
    /// Whether requests are being turned away because the database is unreachable.
    pub open: bool,
    /// For how long, when open.
    pub open_for_secs: Option<f64>,
    /// Times the breaker has opened since start.
    pub trips: u64,
    /// Requests failed at once while it was open.
    pub fast_failures: u64,
}

impl Outage {
    /// A closed breaker that probes with `probe`.
    pub fn new(probe: Probe) -> Arc<Self> {
        Arc::new(Self {
            open: watch::Sender::new(false),
            since: Mutex::new(None),
            last_probe: Mutex::new(None),
            probing: AtomicBool::new(false),
            probe,
            trips: AtomicU64::new(0),
            fast_failures: AtomicU64::new(0),
        })
    }

    /// `Err` at once while the database is known to be unreachable.
    pub fn check(&self) -> Result<(), EngineError> {
        if *self.open.borrow() {
            return Err(self.unavailable());
        }
        Ok(())
    }

    /// The error a request gets while the breaker is open (counted).
    pub fn unavailable(&self) -> EngineError {
        self.fast_failures.fetch_add(1, Ordering::Relaxed);
        let since = lock(&self.since).map_or(0.0, |t| t.elapsed().as_secs_f64());
        EngineError::Unavailable(format!(
            "the database is unreachable (for {since:.1} s); strata reconnects by itself \
             when it returns"
        ))
    }

    /// Resolves when the breaker opens (never, while it stays closed).
    pub async fn opened(&self) {
        let mut rx = self.open.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail while it is borrowed.
        let _ = rx.wait_for(|open| *open).await;
    }

    /// Starts a probe unless one is running (or, while closed, ran in the last second).
    pub fn suspect(self: &Arc<Self>) {
        {
            let mut last = lock(&self.last_probe);
            let closed = !*self.open.borrow();
            if closed && last.is_some_and(|t| t.elapsed() < CLOSED_PROBE_GAP) {
                return;
            }
            if self.probing.swap(true, Ordering::AcqRel) {
                return;
            }
            *last = Some(Instant::now());
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let ok = tokio::time::timeout(PROBE_TIMEOUT, (this.probe)())
                    .await
                    .unwrap_or(false);
                *lock(&this.last_probe) = Some(Instant::now());
                if ok {
                    this.close();
                    break;
                }
                this.trip();
                tokio::time::sleep(PROBE_EVERY).await;
            }
            this.probing.store(false, Ordering::Release);
        });
    }

    fn trip(&self) {
        let mut since = lock(&self.since);
        if since.is_none() {
            *since = Some(Instant::now());
            self.trips.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                "the database is unreachable: requests that need it are answered 503 at once \
                 until a probe connects again"
            );
            self.open.send_replace(true);
        }
    }

    fn close(&self) {
        let mut since = lock(&self.since);
        if let Some(t) = since.take() {
            tracing::warn!(
                after_secs = t.elapsed().as_secs_f64(),
                "the database is reachable again"
            );
            self.open.send_replace(false);
        }
    }

    /// The breaker's state and counters.
    pub fn stats(&self) -> OutageStats {
        let since = *lock(&self.since);
        OutageStats {
            open: since.is_some(),
            open_for_secs: since.map(|t| t.elapsed().as_secs_f64()),
            trips: self.trips.load(Ordering::Relaxed),
            fast_failures: self.fast_failures.load(Ordering::Relaxed),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(up: Arc<AtomicBool>) -> Arc<Outage> {
        Outage::new(Arc::new(move || {
            let up = up.load(Ordering::SeqCst);
            Box::pin(async move { up })
        }))
    }

    #[tokio::test]
    async fn a_failed_probe_opens_it_and_a_successful_one_closes_it() {
        let up = Arc::new(AtomicBool::new(false));
        let b = breaker(up.clone());
        assert!(b.check().is_ok());
        b.suspect();
        tokio::time::timeout(Duration::from_secs(2), b.opened())
            .await
            .expect("opens");
        assert!(matches!(b.check(), Err(EngineError::Unavailable(_))));
        assert_eq!(b.stats().trips, 1);
        assert_eq!(b.stats().fast_failures, 1);
        up.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(3);
        while b.check().is_err() {
            assert!(
                Instant::now() < deadline,
                "stays open after the database returns"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!b.stats().open);
    }

    #[tokio::test]
    async fn a_successful_probe_while_closed_changes_nothing() {
        let b = breaker(Arc::new(AtomicBool::new(true)));
        b.suspect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(b.check().is_ok());
        assert_eq!(b.stats().trips, 0);
    }
}
