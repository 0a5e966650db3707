//! The remote tier over Redis: L2 values, the shared generation of every scope, the
//! invalidation bus (pub/sub with acknowledgements) and short locks for single-flight across
//! processes.
//!
//! Every call goes through one circuit breaker with a per-call timeout, so a Redis that is down
//! or slow costs a request at most one timeout before the breaker opens, and nothing after.
//!
//! Consistency. A generation bump is one Lua script: it moves `strata:gen:{scope}` to
//! `max(current + 1, now in microseconds)` (so generations never go backwards, even after
//! Redis restarts empty) and publishes the new value on `strata:inval`. Every process applies
//! the message to its generation map and acknowledges it on the sender's own channel; the
//! sender waits for as many acknowledgements as Redis counted receivers (bounded by
//! `ack_timeout`), so when a write returns, every connected process already reads the new
//! generation. A process that may have missed messages (its subscription reconnected, its
//! own heartbeat through the bus failed, or a bump could not be sent) marks itself unhealthy:
//! until the heartbeat succeeds again it serves tenant-scoped reads from the source, bypassing
//! L1 and L2; on recovery it forgets its generations, replays the bumps it could not send, and
//! only then trusts its caches again.
//!
//! Must not import: anything of strata's domain.

mod log;
mod rate;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::Notify;

use crate::breaker::Breaker;
use crate::codec;
use crate::generations::Generations;
pub use crate::settings::RedisSettings;

const FETCH_GEN: &str = r"
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
";

/// Bumps the generation of several scopes in one round trip: KEYS are the scopes' generation keys
/// then the channel; ARGV the clock, the message prefix, then the scopes. One message per
/// scope, all with the same nonce, so each subscriber acknowledges every one; returns the new
/// generations followed by the total number of receivers.
const BUMP_GENS: &str = r"
local out = {}
local total = 0
local chan = KEYS[#KEYS]
for i = 1, #KEYS - 1 do
  local cur = tonumber(redis.call('GET', KEYS[i]) or '0')
  local nxt = string.format('%.0f', math.max(cur + 1, tonumber(ARGV[1])))
  redis.call('SET', KEYS[i], nxt)
  total = total + redis.call('PUBLISH', chan, ARGV[2] .. ' ' .. nxt .. ' ' .. ARGV[i + 2])
  out[i] = nxt
end
out[#out + 1] = tostring(total)
return out
";

const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

#[derive(Default)]
struct Counters {
    gets: AtomicU64,
    sets: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    skipped: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    lock_waits: AtomicU64,
    ack_timeouts: AtomicU64,
    resyncs: AtomicU64,
}

/// The remote tier's counters.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteStats {
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// Times the breaker has opened.
    pub breaker_opened: u64,
    /// Whether this process currently trusts its caches for tenant data (bus connected and
    /// heartbeat answered).
    pub bus_healthy: bool,
    /// L2 reads and writes attempted.
    pub gets: u64,
    /// L2 writes.
    pub sets: u64,
    /// Commands that failed.
    pub errors: u64,
    /// Commands that timed out.
    pub timeouts: u64,
    /// Commands not sent because the breaker was open.
    pub skipped: u64,
    /// Encoded bytes read from L2.
    pub bytes_read: u64,
    /// Encoded bytes written to L2.
    pub bytes_written: u64,
    /// Times this process waited for another's computation.
    pub lock_waits: u64,
    /// Invalidations not acknowledged by every process within the timeout.
    pub ack_timeouts: u64,
    /// Times the process resynchronised its generations after a possible gap.
    pub resyncs: u64,
    /// Bumps waiting to be sent to Redis.
    pub pending_bumps: usize,
}

struct AckWait {
    got: AtomicU64,
    notify: Notify,
}

pub(crate) enum Lock {
    Held(String),
    Busy,
}

pub(crate) struct Remote {
    pool: Pool,
    subscriber: SubscriberClient,
    breaker: Breaker,
    settings: RedisSettings,
    instance: String,
    /// `{namespace}:`, the start of every key and channel name.
    prefix: String,
    inval_channel: String,
    ack_channel: String,
    gens: Arc<Generations>,
    acks: Mutex<HashMap<u64, Arc<AckWait>>>,
    next_nonce: AtomicU64,
    healthy: AtomicBool,
    pong: AtomicU64,
    pong_notify: Notify,
    counters: Counters,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn instance_id() -> String {
    let seed = format!(
        "{}-{}-{:?}",
        std::process::id(),
        now_micros(),
        std::thread::current().id()
    );
    blake3::hash(seed.as_bytes()).to_hex()[..16].to_owned()
}

impl Remote {
    /// Builds the clients and starts connecting; a Redis that is not reachable yet is not an
    /// error (the process starts degraded and recovers by itself).
    pub(crate) fn connect(
        settings: RedisSettings,
        gens: Arc<Generations>,
    ) -> Result<Arc<Self>, String> {
        RedisSettings::check_namespace(&settings.namespace)?;
        let mut config = Config::from_url(settings.url.expose())
            .map_err(|e| format!("STRATA_REDIS_URL: {e}"))?;
        config.fail_fast = false;
        let mut builder = Builder::from_config(config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(2);
                c.internal_command_timeout = Duration::from_secs(2);
                c.max_command_attempts = 1;
                c.tcp.nodelay = Some(true);
            })
            .with_performance_config(|p| {
                p.default_command_timeout = settings.op_timeout * 4;
            })
            .set_policy(ReconnectPolicy::new_constant(0, 200));
        let pool = builder
            .build_pool(settings.pool_size.max(1))
            .map_err(|e| format!("redis pool: {e}"))?;
        let subscriber = builder
            .build_subscriber_client()
            .map_err(|e| format!("redis subscriber: {e}"))?;
        let instance = instance_id();
        let remote = Arc::new(Self {
            pool,
            subscriber,
            breaker: Breaker::new(settings.failures_to_open, settings.open_for),
            prefix: format!("{}:", settings.namespace),
            inval_channel: format!("{}:inval", settings.namespace),
            ack_channel: format!("{}:ack:{instance}", settings.namespace),
            instance,
            settings,
            gens,
            acks: Mutex::default(),
            next_nonce: AtomicU64::new(1),
            healthy: AtomicBool::new(false),
            pong: AtomicU64::new(0),
            pong_notify: Notify::new(),
            counters: Counters::default(),
        });
        // Detached: the connection tasks live as long as the clients.
        drop(remote.pool.connect_pool());
        drop(remote.subscriber.connect());
        Ok(remote)
    }

    /// Starts the bus listener and the heartbeat; returns their handles.
    pub(crate) fn start(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        let sub = self.subscriber.clone();
        let channels = vec![self.inval_channel.clone(), self.ack_channel.clone()];
        tasks.push(tokio::spawn(async move {
            // The first subscription; later ones follow every reconnection below.
            loop {
                if sub.wait_for_connect().await.is_ok()
                    && sub.subscribe(channels.clone()).await.is_ok()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
        let this = self.clone();
        let mut messages = self.subscriber.message_rx();
        let mut reconnects = self.subscriber.reconnect_rx();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = messages.recv() => match m {
                        Ok(m) => this.on_message(&m.channel, m.value),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "invalidation bus lagged; resynchronising");
                            this.mark_unhealthy();
                        }
                        Err(_) => break,
                    },
                    r = reconnects.recv() => match r {
                        // A new connection may have missed messages: trust nothing until the
                        // heartbeat has gone round and the generations are fetched again.
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            this.mark_unhealthy();
                            let sub = this.subscriber.clone();
                            let channels = [this.inval_channel.clone(), this.ack_channel.clone()];
                            tokio::spawn(async move {
                                if let Err(e) = sub.subscribe(channels.to_vec()).await {
                                    tracing::debug!(error = %e, "subscribe after reconnect failed");
                                }
                            });
                        }
                        Err(_) => break,
                    },
                }
            }
        }));
        let this = self.clone();
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            let mut tick = tokio::time::interval(this.settings.heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                seq += 1;
                let ok = this.heartbeat(seq).await;
                let healthy = this.healthy.load(Ordering::Acquire);
                if ok && !healthy {
                    this.resync().await;
                } else if !ok && healthy {
                    tracing::warn!(
                        breaker = this.breaker.state_name(),
                        "redis unreachable: tenant reads bypass the cache until it returns"
                    );
                    this.mark_unhealthy();
                }
            }
        }));
        tasks
    }

    fn on_message(&self, channel: &str, value: Value) {
        let Some(text) = value.as_string() else {
            return;
        };
        if channel == self.ack_channel {
            if let Ok(nonce) = text.parse::<u64>() {
                let w = self
                    .acks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&nonce)
                    .cloned();
                if let Some(w) = w {
                    w.got.fetch_add(1, Ordering::AcqRel);
                    w.notify.notify_waiters();
                }
            }
            return;
        }
        if channel != self.inval_channel {
            return;
        }
        let mut parts = text.splitn(5, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("ping"), Some(origin), Some(seq)) if origin == self.instance => {
                if let Ok(seq) = seq.parse::<u64>() {
                    self.pong.fetch_max(seq, Ordering::AcqRel);
                    self.pong_notify.notify_waiters();
                }
            }
            (Some("inv"), Some(origin), Some(nonce)) => {
                let (Some(generation), Some(scope)) = (
                    parts.next().and_then(|g| g.parse::<u64>().ok()),
                    parts.next(),
                ) else {
                    return;
                };
                self.gens.observe(scope, generation);
                let channel = format!("{}ack:{origin}", self.prefix);
                let nonce = nonce.to_owned();
                let pool = self.pool.clone();
                let timeout = self.settings.op_timeout;
                tokio::spawn(async move {
                    let sent: Result<Result<i64, _>, _> =
                        tokio::time::timeout(timeout, pool.next().publish(channel, nonce)).await;
                    if !matches!(sent, Ok(Ok(_))) {
                        tracing::debug!("invalidation acknowledgement not sent");
                    }
                });
            }
            _ => {}
        }
    }

    async fn heartbeat(&self, seq: u64) -> bool {
        let msg = format!("ping {} {seq}", self.instance);
        if self
            .guarded(
                self.pool
                    .next()
                    .publish::<i64, _, _>(self.inval_channel.as_str(), msg),
            )
            .await
            .is_none()
        {
            return false;
        }
        let deadline = tokio::time::Instant::now() + self.settings.op_timeout;
        reach(&self.pong, &self.pong_notify, seq, deadline).await
    }

    fn mark_unhealthy(&self) {
        self.healthy.store(false, Ordering::Release);
    }

    /// A bump could not reach Redis: other processes do not know of it, so this one stops
    /// trusting shared state until the heartbeat recovers and the bump is replayed.
    pub(crate) fn mark_unhealthy_after_failed_bump(&self) {
        tracing::warn!("an invalidation could not be published; it is replayed when redis returns");
        self.mark_unhealthy();
    }

    async fn resync(&self) {
        self.gens.forget_all();
        let pending = self.gens.take_pending();
        if !pending.is_empty() {
            let scopes: Vec<&str> = pending.iter().map(String::as_str).collect();
            if self.bump(&scopes).await.is_none() {
                for scope in &pending {
                    self.gens.add_pending(scope);
                }
                return;
            }
        }
        self.counters.resyncs.fetch_add(1, Ordering::Relaxed);
        self.healthy.store(true, Ordering::Release);
        tracing::info!("redis reachable: caches trusted again");
    }

    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    async fn guarded<T, F>(&self, call: F) -> Option<T>
    where
        F: Future<Output = Result<T, fred::error::Error>>,
    {
        if !self.breaker.allow() {
            self.counters.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        match tokio::time::timeout(self.settings.op_timeout, call).await {
            Ok(Ok(v)) => {
                self.breaker.success();
                Some(v)
            }
            Ok(Err(e)) => {
                self.breaker.failure();
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "redis command failed");
                None
            }
            Err(_) => {
                self.breaker.failure();
                self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// The shared generation of `scope` (created on first use); `None` when Redis cannot say.
    pub(crate) async fn fetch_generation(&self, scope: &str) -> Option<u64> {
        let key = format!("{}gen:{scope}", self.prefix);
        let v: String = self
            .guarded(
                self.pool
                    .next()
                    .eval(FETCH_GEN, key, now_micros().to_string()),
            )
            .await?;
        v.parse().ok()
    }

    /// Bumps every scope's shared generation in one script and waits until every subscribed
    /// process has applied all of them (or `ack_timeout`): one round trip and one wait however
    /// many scopes a write touches. `None` when Redis could not be told.
    pub(crate) async fn bump(&self, scopes: &[&str]) -> Option<Vec<u64>> {
        let nonce = self.next_nonce.fetch_add(1, Ordering::Relaxed);
        let wait = Arc::new(AckWait {
            got: AtomicU64::new(0),
            notify: Notify::new(),
        });
        self.acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(nonce, wait.clone());
        let mut keys: Vec<String> = scopes
            .iter()
            .map(|s| format!("{}gen:{s}", self.prefix))
            .collect();
        keys.push(self.inval_channel.clone());
        let mut args = Vec::with_capacity(scopes.len() + 2);
        args.push(now_micros().to_string());
        args.push(format!("inv {} {nonce}", self.instance));
        args.extend(scopes.iter().map(|s| (*s).to_owned()));
        let result: Option<Vec<String>> = self
            .guarded(self.pool.next().eval(BUMP_GENS, keys, args))
            .await;
        // The new generations, then the number of receivers; a reply of another shape counts
        // as Redis not told (and still reaches the clean-up below).
        let parsed = result.and_then(|mut values| {
            if values.len() != scopes.len() + 1 {
                return None;
            }
            let receivers = values.pop()?.parse::<u64>().unwrap_or(0);
            let generations: Vec<u64> = values
                .iter()
                .map(|g| g.parse::<u64>().ok())
                .collect::<Option<_>>()?;
            Some((generations, receivers))
        });
        let outcome = match parsed {
            Some((generations, receivers)) => {
                for (scope, g) in scopes.iter().zip(&generations) {
                    self.gens.observe(scope, *g);
                }
                let deadline = tokio::time::Instant::now() + self.settings.ack_timeout;
                if !reach(&wait.got, &wait.notify, receivers, deadline).await {
                    self.counters.ack_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        ?scopes,
                        expected = receivers,
                        got = wait.got.load(Ordering::Acquire),
                        "not every process acknowledged an invalidation in time"
                    );
                }
                Some(generations)
            }
            None => None,
        };
        self.acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&nonce);
        outcome
    }

    /// Reads an L2 value. `None` when absent or Redis is unavailable.
    pub(crate) async fn get(&self, key: &str) -> Option<Bytes> {
        self.counters.gets.fetch_add(1, Ordering::Relaxed);
        let raw: Option<Bytes> = self.guarded(self.pool.next().get(key)).await?;
        let raw = raw?;
        self.counters
            .bytes_read
            .fetch_add(raw.len() as u64, Ordering::Relaxed);
        codec::decode(&raw)
    }

    /// Writes an L2 value with a time to live.
    pub(crate) async fn set(&self, key: &str, value: &[u8], ttl: Duration) {
        let encoded = codec::encode(value, self.settings.compress_above);
        let len = encoded.len() as u64;
        let px = Expiration::PX(ttl.as_millis().max(1) as i64);
        let done: Option<()> = self
            .guarded(
                self.pool
                    .next()
                    .set(key, Bytes::from(encoded), Some(px), None, false),
            )
            .await;
        if done.is_some() {
            self.counters.sets.fetch_add(1, Ordering::Relaxed);
            self.counters
                .bytes_written
                .fetch_add(len, Ordering::Relaxed);
        }
    }

    /// Tries to take the computation lock of `key` for this process. `None` when Redis is
    /// unavailable (the caller computes).
    pub(crate) async fn try_lock(&self, key: &str) -> Option<Lock> {
        let token = format!("{}:{}", self.instance, now_micros());
        let px = Expiration::PX(self.settings.lock_ttl.as_millis().max(1) as i64);
        let got: Option<String> = self
            .guarded(self.pool.next().set(
                self.lock_key(key),
                token.as_str(),
                Some(px),
                Some(SetOptions::NX),
                false,
            ))
            .await?;
        Some(match got {
            Some(_) => Lock::Held(token),
            None => Lock::Busy,
        })
    }

    /// Releases a lock this process holds (no-op if it expired and someone else holds it).
    pub(crate) async fn unlock(&self, key: &str, token: &str) {
        let _: Option<i64> = self
            .guarded(
                self.pool
                    .next()
                    .eval(UNLOCK, self.lock_key(key), token.to_owned()),
            )
            .await;
    }

    /// Waits (bounded by `lock_wait`) for another process to publish `key` to L2.
    pub(crate) async fn wait_for(&self, key: &str) -> Option<Bytes> {
        self.counters.lock_waits.fetch_add(1, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + self.settings.lock_wait;
        let mut pause = Duration::from_millis(2);
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(pause).await;
            if let Some(v) = self.get(key).await {
                return Some(v);
            }
            pause = (pause * 2).min(Duration::from_millis(25));
        }
        None
    }

    /// Deletes every L2 key matching `pattern` (SCAN + UNLINK); returns how many.
    pub(crate) async fn delete_matching(&self, pattern: &str, keep: impl Fn(&str) -> bool) -> u64 {
        let client = self.pool.next().clone();
        let mut keys = client.scan_buffered(pattern, Some(1000), None);
        let mut batch: Vec<Key> = Vec::new();
        let mut removed = 0u64;
        while let Some(k) = keys.next().await {
            let Ok(k) = k else {
                break;
            };
            if k.as_str().is_some_and(&keep) {
                continue;
            }
            batch.push(k);
            if batch.len() >= 500 {
                removed += self.unlink(std::mem::take(&mut batch)).await;
            }
        }
        if !batch.is_empty() {
            removed += self.unlink(batch).await;
        }
        removed
    }

    async fn unlink(&self, keys: Vec<Key>) -> u64 {
        let n: Option<i64> = self.guarded(self.pool.next().unlink(keys)).await;
        n.unwrap_or(0).max(0) as u64
    }

    /// The lock of a value key: `{namespace}:lock:{the key without its namespace}`.
    fn lock_key(&self, key: &str) -> String {
        let rest = key.strip_prefix(self.prefix.as_str()).unwrap_or(key);
        format!("{}lock:{rest}", self.prefix)
    }

    pub(crate) fn stats(&self) -> RemoteStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RemoteStats {
            breaker: self.breaker.state_name(),
            breaker_opened: self.breaker.times_opened(),
            bus_healthy: self.healthy(),
            gets: l(&c.gets),
            sets: l(&c.sets),
            errors: l(&c.errors),
            timeouts: l(&c.timeouts),
            skipped: l(&c.skipped),
            bytes_read: l(&c.bytes_read),
            bytes_written: l(&c.bytes_written),
            lock_waits: l(&c.lock_waits),
            ack_timeouts: l(&c.ack_timeouts),
            resyncs: l(&c.resyncs),
            pending_bumps: self.gens.pending_len(),
        }
    }

    /// The round trip of a `PING`, sent outside the breaker (a health probe must see Redis
    /// itself, not the breaker's memory of it).
    pub(crate) async fn ping(&self) -> Result<Duration, String> {
        let started = std::time::Instant::now();
        let ping = self.pool.next().ping::<String>(None);
        match tokio::time::timeout(self.settings.op_timeout, ping).await {
            Ok(Ok(_)) => Ok(started.elapsed()),
            Ok(Err(e)) => Err(e.details().to_owned()),
            Err(_) => Err(format!("no answer within {:?}", self.settings.op_timeout)),
        }
    }

    /// Waits until the bus is healthy or `within` passes; returns whether it is.
    pub(crate) async fn ready(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while !self.healthy() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.healthy()
    }

    pub(crate) async fn quit(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.subscriber.quit()).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.pool.quit()).await;
    }
}

/// Waits until `counter` reaches `target` (woken by `notify`) or `deadline` passes; returns
/// whether it did. The waiter registers before each check, so a wake-up between the check
/// and the wait is never lost.
async fn reach(
    counter: &AtomicU64,
    notify: &Notify,
    target: u64,
    deadline: tokio::time::Instant,
) -> bool {
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if counter.load(Ordering::Acquire) >= target {
            return true;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return counter.load(Ordering::Acquire) >= target;
        }
    }
}
