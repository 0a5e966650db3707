//! End-to-end tests of the strata server: a real server on port 0 over a fresh SQLite
//! database per test, driven over HTTP; and real `strata` processes for crash and shutdown.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail loudly on unexpected values"
)]

mod admission;
mod auth;
mod cache;
mod conversations;
mod documents;
mod edge;
mod errors;
mod faults;
mod gateway;
mod gateway_instances;
mod helpers;
mod hostile;
mod hybrid;
mod isolation;
mod jobs;
mod mcp;
mod memories;
mod observability;
mod openapi;
mod pagination;
mod process;
mod roles;
mod search;
mod semantic_cache;
mod sessions;
mod upstream;
