//! The administration service: the database's statistics (the pool, tables and indexes,
//! the slowest recent statements and their plans), its optimisation, and whether it answers.
//!
//! Holds only what it uses: the store, the slow statement log, the writes tracker and the
//! lexical index (for its size).

use std::sync::Arc;

use super::{DatabaseStats, Writes};
use crate::error::Result;
use crate::lexical::Lexical;
use crate::slowlog::SlowLog;
use crate::store::Store;

/// Database administration (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct AdminService {
    pub(super) store: Arc<dyn Store>,
    pub(super) slow_log: SlowLog,
    pub(super) writes: Arc<Writes>,
    pub(super) lexical: Lexical,
}

impl AdminService {
    /// The connection pool's state, the tables with their sizes and index use, and the
    /// slowest recent statements.
    pub async fn database_stats(&self) -> Result<DatabaseStats> {
        let store = &self.store;
        Ok(DatabaseStats {
            backend: store.backend(),
            pool: store.pool_stats(),
            tables: store.table_stats().await?,
            recommendations: store.recommendations().await?,
            slow_statements: self.slow_log.recent(),
            lexical_index: self.lexical.stats(),
        })
    }

    /// Refreshes planner statistics and compacts what needs it; the statements run.
    pub async fn optimize_database(&self) -> Result<Vec<String>> {
        let this = self.clone();
        self.writes
            .detach(async move { this.store.optimize().await })
            .await
    }

    /// Asks the store for the plan of every slow statement seen since the last call (each
    /// distinct statement once), keeps it on the log's entries, and logs the statement again
    /// at warn with its plan and timing. Returns how many were explained.
    pub async fn explain_slow_statements(&self) -> usize {
        let mut explained = 0;
        for sql in self.slow_log.unplanned() {
            let plan = match self.store.explain(&sql).await {
                Ok(plan) => plan,
                Err(e) => vec![format!("(no plan: {e})")],
            };
            let slowest = self
                .slow_log
                .recent()
                .into_iter()
                .filter(|s| s.statement == sql)
                .map(|s| s.elapsed_ms)
                .fold(0.0, f64::max);
            tracing::warn!(
                elapsed_ms = slowest,
                statement = %sql,
                plan = %plan.join(" | "),
                "slow statement, with its plan"
            );
            self.slow_log.set_plan(&sql, plan);
            explained += 1;
        }
        explained
    }

    /// The database connection pool's state.
    pub fn pool_stats(&self) -> crate::store::meter::PoolStats {
        self.store.pool_stats()
    }

    /// The storage backend's name.
    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    /// Checks the store answers.
    pub async fn ping(&self) -> Result<()> {
        self.store.ping().await
    }
}
