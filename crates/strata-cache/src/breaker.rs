//! A circuit breaker around the remote tier: after `failures_to_open` consecutive failures
//! (errors or timeouts) it opens and every call is skipped for `open_for`; then one probe is
//! let through (half-open): success closes it, failure opens it again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

pub(crate) struct Breaker {
    state: Mutex<State>,
    failures_to_open: u32,
    open_for: Duration,
    opened: AtomicU64,
}

impl Breaker {
    pub(crate) fn new(failures_to_open: u32, open_for: Duration) -> Self {
        Self {
            state: Mutex::new(State::Closed { failures: 0 }),
            failures_to_open: failures_to_open.max(1),
            open_for,
            opened: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a call may go to the remote now. In the half-open state only the caller that
    /// moved it there gets `true`.
    pub(crate) fn allow(&self) -> bool {
        let mut s = self.lock();
        match *s {
            State::Closed { .. } => true,
            State::Open { until } if Instant::now() >= until => {
                *s = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => false,
        }
    }

    pub(crate) fn success(&self) {
        *self.lock() = State::Closed { failures: 0 };
    }

    pub(crate) fn failure(&self) {
        let mut s = self.lock();
        let open = match *s {
            State::Closed { failures } => failures + 1 >= self.failures_to_open,
            State::HalfOpen => true,
            State::Open { .. } => false,
        };
        if open {
            *s = State::Open {
                until: Instant::now() + self.open_for,
            };
            self.opened.fetch_add(1, Ordering::Relaxed);
        } else if let State::Closed { failures } = *s {
            *s = State::Closed {
                failures: failures + 1,
            };
        }
    }

    /// `closed`, `open` or `half_open`.
    pub(crate) fn state_name(&self) -> &'static str {
        match *self.lock() {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen => "half_open",
        }
    }

    /// How many times it has opened.
    pub(crate) fn times_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_probes_once() {
        let b = Breaker::new(3, Duration::from_millis(30));
        b.failure();
        b.failure();
        b.success();
        b.failure();
        b.failure();
        assert!(b.allow(), "a success resets the count");
        b.failure();
        assert_eq!(b.state_name(), "open");
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow(), "the first caller after the pause probes");
        assert!(!b.allow(), "only one probe at a time");
        b.failure();
        assert_eq!(b.state_name(), "open");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow());
        b.success();
        assert_eq!(b.state_name(), "closed");
        assert!(b.allow());
        assert_eq!(b.times_opened(), 2);
    }
}
