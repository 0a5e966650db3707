//! Pool instrumentation shared by the SQL backends: every connection a store method uses is
//! taken through [`PoolMeter::acquire`], which counts the callers waiting and times the wait,
//! so pool pressure is visible before it turns into 503s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};

use crate::error::Result;

/// A snapshot of a connection pool.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStats {
    /// Most connections the pool may open.
    pub max_size: u32,
    /// Connections open now (idle + in use).
    pub size: u32,
    /// Open connections nobody holds.
    pub idle: u32,
    /// Connections held by a caller.
    pub in_use: u32,
    /// Callers waiting for a connection right now.
    pub waiters: u64,
    /// Connections handed out since start.
    pub acquired: u64,
    /// Acquires that gave up after the acquire timeout (answered 503).
    pub timeouts: u64,
    /// Mean wait for a connection, in milliseconds.
    pub acquire_mean_ms: f64,
    /// Longest wait for a connection since start, in milliseconds.
    pub acquire_max_ms: f64,
    /// The breaker in front of a server database (PostgreSQL); none for SQLite.
    pub outage: Option<super::outage::OutageStats>,
}

/// One caller counted as waiting while this lives.
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn new(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counters around one pool's acquires.
#[derive(Debug, Default)]
pub struct PoolMeter {
    waiting: AtomicU64,
    acquired: AtomicU64,
    timeouts: AtomicU64,
    wait_us_total: AtomicU64,
    wait_us_max: AtomicU64,
}

impl PoolMeter {
    /// Takes a connection from `pool`, counting and timing the wait.
    pub async fn acquire<DB: Database>(&self, pool: &Pool<DB>) -> Result<PoolConnection<DB>> {
        let started = Instant::now();
        let conn = {
            // Decremented on drop: a caller that goes away while waiting stops counting.
            let _waiting = Waiting::new(&self.waiting);
            pool.acquire().await
        };
        let waited = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        match conn {
            Ok(c) => {
                self.acquired.fetch_add(1, Ordering::Relaxed);
                self.wait_us_total.fetch_add(waited, Ordering::Relaxed);
                self.wait_us_max.fetch_max(waited, Ordering::Relaxed);
                Ok(c)
            }
            Err(e) => {
                if matches!(e, sqlx::Error::PoolTimedOut) {
                    self.timeouts.fetch_add(1, Ordering::Relaxed);
                }
                Err(e.into())
            }
        }
    }

    /// The pool's state and these counters.
    pub fn stats<DB: Database>(&self, pool: &Pool<DB>) -> PoolStats {
        let size = pool.size();
        let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
        let acquired = self.acquired.load(Ordering::Relaxed);
        let total = Duration::from_micros(self.wait_us_total.load(Ordering::Relaxed));
        PoolStats {
            max_size: pool.options().get_max_connections(),
            size,
            idle,
            in_use: size.saturating_sub(idle),
            waiters: self.waiting.load(Ordering::Relaxed),
            acquired,
            timeouts: self.timeouts.load(Ordering::Relaxed),
            acquire_mean_ms: if acquired == 0 {
                0.0
            } else {
                total.as_secs_f64() * 1000.0 / acquired as f64
            },
            acquire_max_ms: self.wait_us_max.load(Ordering::Relaxed) as f64 / 1000.0,
            outage: None,
        }
    }
}
