//! Rates shared by every instance: GCRA in Redis, one script per decision.

use fred::interfaces::LuaInterface as _;

use super::Remote;

/// GCRA over one key holding the theoretical arrival time in µs (Redis's clock). ARGV:
/// interval, window, cost (µs, µs, units). Returns {1, room left} or {0, wait}.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, window, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next = tat + interval * cost
local ahead = next - now
if ahead > window then return {0, ahead - window} end
redis.call('SET', KEYS[1], next, 'PX', math.ceil(ahead / 1000) + 1000)
return {1, window - ahead}
"#;

impl Remote {
    /// Takes `cost` units from the GCRA rate `name` (one unit every `interval_us`, at most
    /// `window_us` of them ahead), on Redis's own clock so every instance agrees. Returns
    /// (taken, µs: when taken, the room left; when not, how long until `cost` fits); `None`
    /// when Redis cannot say.
    pub(crate) async fn take_rate(
        &self,
        name: &str,
        interval_us: u64,
        window_us: u64,
        cost: u64,
    ) -> Option<(bool, u64)> {
        let key = format!("{}rate:{name}", self.prefix);
        let args = vec![
            interval_us.to_string(),
            window_us.to_string(),
            cost.to_string(),
        ];
        let (taken, micros): (i64, i64) =
            self.guarded(self.pool.next().eval(GCRA, key, args)).await?;
        Some((taken == 1, u64::try_from(micros).unwrap_or(0)))
    }
}
