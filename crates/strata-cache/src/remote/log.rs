//! Shared logs: an append-only list of entries per name that one process leads (a leased
//! claim) and any process reads from any offset while it grows, so a computation's output
//! streams to waiters in other processes as it is made. Readers announce themselves (a
//! sorted set of reader tokens scored by when they lapse), so a leader whose own waiters
//! left can tell whether anyone elsewhere still reads.
//!
//! Keys: `{prefix}log:{name}` (the list), `...:lead` (the leader's token, leased),
//! `...:readers` (the readers). A new claim empties the list and the readers.

use std::time::Duration;

use bytes::Bytes;
use fred::interfaces::LuaInterface as _;

use super::Remote;

/// KEYS: lead, list, readers. ARGV: token, lease ms.
const CLAIM: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('DEL', KEYS[2], KEYS[3])
  return 1
end
return 0
"#;

/// KEYS: lead, list. ARGV: token, lease ms, list ttl ms, entries...
const APPEND: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if #ARGV > 3 then redis.call('RPUSH', KEYS[2], unpack(ARGV, 4)) end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#;

/// KEYS: lead, list. ARGV: token, list ttl ms, entries... The last entries and the release,
/// at once: no reader sees the last entry while the lead is still held.
const CLOSE: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if #ARGV > 2 then redis.call('RPUSH', KEYS[2], unpack(ARGV, 3)) end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1])
return 1
"#;

/// KEYS: list, lead, readers. ARGV: from, reader token, reader lapse ms.
const READ: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return {redis.call('LRANGE', KEYS[1], ARGV[1], -1), redis.call('EXISTS', KEYS[2])}
"#;

/// KEYS: readers. ARGV: none.
const READERS: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"#;

/// KEYS: lead. ARGV: token.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// How long a reader counts as reading after its last read.
pub(crate) const READER_LAPSE: Duration = Duration::from_secs(2);

impl Remote {
    /// A token naming one reader of this process.
    pub(crate) fn reader_token(&self) -> String {
        format!("{}:{}", self.instance, super::now_micros())
    }

    fn log_keys(&self, name: &str) -> [String; 3] {
        let base = format!("{}log:{name}", self.prefix);
        [
            format!("{base}:lead"),
            base.clone(),
            format!("{base}:readers"),
        ]
    }

    /// Claims the lead of `name` for `lease`: `Some(Some(token))` when this process leads
    /// (the list starts empty), `Some(None)` when another does, `None` when Redis cannot say.
    pub(crate) async fn log_claim(&self, name: &str, lease: Duration) -> Option<Option<String>> {
        let token = format!("{}:{}", self.instance, super::now_micros());
        let [lead, list, readers] = self.log_keys(name);
        let got: i64 = self
            .guarded(self.pool.next().eval(
                CLAIM,
                vec![lead, list, readers],
                vec![token.clone(), millis(lease)],
            ))
            .await?;
        Some((got == 1).then_some(token))
    }

    /// Appends entries while `token` leads (renewing the lease); `false` when it no longer
    /// leads or Redis cannot take them.
    pub(crate) async fn log_append(
        &self,
        name: &str,
        token: &str,
        lease: Duration,
        ttl: Duration,
        entries: Vec<Bytes>,
    ) -> bool {
        let args = vec![token.into(), millis(lease).into(), millis(ttl).into()];
        self.log_write(APPEND, name, args, entries).await
    }

    /// Appends the last entries while `token` leads and gives up the lead, atomically;
    /// `false` when it no longer led or Redis did not take them.
    pub(crate) async fn log_close(
        &self,
        name: &str,
        token: &str,
        ttl: Duration,
        entries: Vec<Bytes>,
    ) -> bool {
        let args = vec![token.into(), millis(ttl).into()];
        self.log_write(CLOSE, name, args, entries).await
    }

    /// Runs a writing script over the lead and the list: `args`, then the entries.
    async fn log_write(
        &self,
        script: &str,
        name: &str,
        mut args: Vec<fred::types::Value>,
        entries: Vec<Bytes>,
    ) -> bool {
        let [lead, list, _] = self.log_keys(name);
        args.extend(entries.into_iter().map(fred::types::Value::Bytes));
        let done: Option<i64> = self
            .guarded(self.pool.next().eval(script, vec![lead, list], args))
            .await;
        done == Some(1)
    }

    /// The entries of `name` from offset `from`, and whether a leader holds it; `reader`
    /// counts as reading for [`READER_LAPSE`]. `None` when Redis cannot say.
    pub(crate) async fn log_read(
        &self,
        name: &str,
        from: usize,
        reader: &str,
    ) -> Option<(Vec<Bytes>, bool)> {
        let [lead, list, readers] = self.log_keys(name);
        let (entries, led): (Vec<Bytes>, i64) = self
            .guarded(self.pool.next().eval(
                READ,
                vec![list, lead, readers],
                vec![from.to_string(), reader.to_owned(), millis(READER_LAPSE)],
            ))
            .await?;
        Some((entries, led == 1))
    }

    /// How many readers of `name` read within [`READER_LAPSE`].
    pub(crate) async fn log_readers(&self, name: &str) -> Option<u64> {
        let [_, _, readers] = self.log_keys(name);
        let n: i64 = self
            .guarded(
                self.pool
                    .next()
                    .eval(READERS, vec![readers], Vec::<String>::new()),
            )
            .await?;
        Some(n.max(0) as u64)
    }

    /// Gives up the lead `token` holds (the list stays until its time to live ends).
    pub(crate) async fn log_release(&self, name: &str, token: &str) {
        let [lead, _, _] = self.log_keys(name);
        let _: Option<i64> = self
            .guarded(
                self.pool
                    .next()
                    .eval(RELEASE, vec![lead], vec![token.to_owned()]),
            )
            .await;
    }
}

fn millis(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}
