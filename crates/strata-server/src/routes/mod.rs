//! Route handlers: parse, call the engine, shape the response. No SQL, no domain logic.

pub mod documents;
pub mod health;
pub mod jobs;
pub mod metrics;
pub mod performance;
pub mod search;
