//! [`RedisSettings`]: how the cache reaches Redis, with the defaults of every knob stated
//! once, here.
//!
//! Must not import: anything of strata's domain.

use std::time::Duration;

/// The namespace of [`RedisSettings::new`].
pub(crate) const DEFAULT_NAMESPACE: &str = "strata";

/// How strata-cache talks to Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: crate::SecretUrl,
    /// Connections in the pool (commands are pipelined on each).
    pub pool_size: usize,
    /// Longest wait for one command before it counts as a failure.
    pub op_timeout: Duration,
    /// Consecutive failures that open the circuit breaker.
    pub failures_to_open: u32,
    /// How long the breaker stays open before it lets one probe through.
    pub open_for: Duration,
    /// Values at least this long are lz4-compressed in L2 (when that saves space).
    pub compress_above: usize,
    /// Lifetime of a cross-process single-flight lock (a dead holder frees it after this).
    pub lock_ttl: Duration,
    /// Longest a process waits for another's computation before computing itself.
    pub lock_wait: Duration,
    /// Longest a write waits for the other processes to acknowledge an invalidation.
    pub ack_timeout: Duration,
    /// Interval of the heartbeat through the invalidation bus.
    pub heartbeat: Duration,
    /// The first part of every key and channel (`{namespace}:gen:{scope}`,
    /// `{namespace}:inval`, ...): deployments that share one Redis stay apart only with
    /// different namespaces, because pub/sub channels are global to a Redis server, whatever
    /// database number the URL selects. 1 to 64 ASCII letters, digits, `-`, `_` or `.`.
    pub namespace: String,
}

impl RedisSettings {
    /// Settings with the defaults for `url`.
    pub fn new(url: impl Into<crate::SecretUrl>) -> Self {
        Self {
            url: url.into(),
            pool_size: 4,
            op_timeout: Duration::from_millis(100),
            failures_to_open: 3,
            open_for: Duration::from_secs(1),
            compress_above: 512,
            lock_ttl: Duration::from_secs(10),
            lock_wait: Duration::from_secs(2),
            ack_timeout: Duration::from_millis(500),
            heartbeat: Duration::from_millis(250),
            namespace: DEFAULT_NAMESPACE.to_owned(),
        }
    }

    /// Checks [`RedisSettings::namespace`]; the error says what is wrong with it.
    pub fn check_namespace(namespace: &str) -> Result<(), String> {
        let ok = (1..=64).contains(&namespace.len())
            && namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "redis namespace {namespace:?}: use 1 to 64 ASCII letters, digits, '-', '_' or '.'"
            ))
        }
    }
}
