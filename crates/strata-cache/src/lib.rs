//! strata's tiered cache: an in-process L1 bounded in bytes, a Redis L2, single-flight,
//! generation-based invalidation pushed to every instance, and hit/miss statistics.
//!
//! Owns: cache keys, tiers, TTLs per kind, invalidation. Must not import: the engine, the
//! server, or any domain type; callers hand it bytes and keys.
//!
//! Nothing is implemented here yet: the cache arrives with its own issue, after search. No
//! read path of strata is cached today, and no response claims otherwise.
