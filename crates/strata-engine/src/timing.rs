//! Which phases of a request's work ran, and for how long: the database (`db`), the
//! embedding model (`embed`) and the search indexes (`index`), and how its cached read was
//! served, for the HTTP layer's `Server-Timing` header.
//!
//! The HTTP layer runs each request inside [`scope`]; the engine wraps the awaits it wants
//! seen in [`timed`]. Outside a scope (a job, a CLI command, a computation another request
//! started and this one only joined) recording does nothing, so the header names only the
//! phases the request itself ran. Phases may overlap: hybrid search embeds the query while
//! its lexical side runs, and both are reported with their own time.
//!
//! Must not import: HTTP types; this is a per-task stopwatch and nothing else.

use std::cell::Cell;
use std::future::Future;
use std::time::{Duration, Instant};

use tokio::task::futures::TaskLocalFuture;

tokio::task_local! {
    static PHASES: Phases;
}

/// A phase of a request's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Statements against the store.
    Db,
    /// The embedding model (queueing for it included).
    Embed,
    /// The vector and lexical indexes.
    Index,
}

impl Phase {
    /// Every phase, in the order a header lists them.
    pub const ALL: [Phase; 3] = [Phase::Db, Phase::Embed, Phase::Index];

    /// Its `Server-Timing` name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Db => "db",
            Phase::Embed => "embed",
            Phase::Index => "index",
        }
    }
}

/// The time each phase took in one request (summed over its awaits), and whether it ran;
/// and the request's cached read, if it made one.
#[derive(Debug, Default)]
pub struct Phases {
    nanos: [Cell<u64>; 3],
    ran: [Cell<bool>; 3],
    cache: Cell<Option<(&'static str, Duration)>>,
}

impl Phases {
    fn add(&self, phase: Phase, d: Duration) {
        let i = phase as usize;
        let n = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.nanos[i].set(self.nanos[i].get().saturating_add(n));
        self.ran[i].set(true);
    }

    /// How the request's cached read was served (`l1-hit`, `miss`...) and how long the
    /// lookup took, the computation included; the last one when it made several.
    pub fn cache(&self) -> Option<(&'static str, Duration)> {
        self.cache.get()
    }

    /// The phases that ran, with their time.
    pub fn ran(&self) -> impl Iterator<Item = (Phase, Duration)> + '_ {
        Phase::ALL.into_iter().filter_map(|p| {
            let i = p as usize;
            self.ran[i]
                .get()
                .then(|| (p, Duration::from_nanos(self.nanos[i].get())))
        })
    }
}

/// Runs `f` with a fresh stopwatch; its phases are read back with
/// [`TaskLocalFuture::take_value`] once it is done.
pub fn scope<F: Future>(f: F) -> TaskLocalFuture<Phases, F> {
    PHASES.scope(Phases::default(), f)
}

/// Counts `d` to `phase` when a [`scope`] is around the caller.
fn record(phase: Phase, d: Duration) {
    let _ = PHASES.try_with(|p| p.add(phase, d));
}

/// Records how the request's cached read was served, when a [`scope`] is around the
/// caller. A task-local cell rather than a response extension: the first extension of a
/// response allocates its map, on every cache hit.
pub fn cache_lookup(desc: &'static str, d: Duration) {
    let _ = PHASES.try_with(|p| p.cache.set(Some((desc, d))));
}

/// Runs synchronous work `f`, counting its time to `phase` when a [`scope`] is around it.
pub fn measure<T>(phase: Phase, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    record(phase, started.elapsed());
    out
}

/// Awaits `f`, counting its time to `phase` when a [`scope`] is around it.
pub async fn timed<T>(phase: Phase, f: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = f.await;
    record(phase, started.elapsed());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_are_counted_inside_a_scope_and_nowhere_else() {
        // Outside a scope: nothing to record into, and nothing fails.
        timed(Phase::Db, async {}).await;
        let mut f = std::pin::pin!(scope(async {
            timed(Phase::Db, tokio::time::sleep(Duration::from_millis(5))).await;
            timed(Phase::Db, async {}).await;
            timed(Phase::Index, async {}).await;
            cache_lookup("l1-hit", Duration::from_micros(3));
            7
        }));
        assert_eq!(f.as_mut().await, 7);
        let phases = f.as_mut().take_value().unwrap();
        let ran: Vec<(Phase, Duration)> = phases.ran().collect();
        assert_eq!(ran.len(), 2, "{ran:?}");
        assert_eq!(ran[0].0, Phase::Db);
        assert!(ran[0].1 >= Duration::from_millis(5));
        assert_eq!(ran[1].0, Phase::Index);
        assert_eq!(phases.cache(), Some(("l1-hit", Duration::from_micros(3))));
        cache_lookup("miss", Duration::ZERO);
    }
}
