//! Re-reading files while serving: the JWT keys file and the TLS certificate and key.
//!
//! Owns: noticing that a file changed (its modification time or length, checked every two
//! seconds) and SIGHUP. Must not: know what the files hold; the caller's `reload` reads
//! them and reports its own outcome.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

/// A file's modification time and length; `None` when it cannot be read.
pub(crate) type Stamp = Option<(SystemTime, u64)>;

/// The stamp of `path` now.
pub(crate) fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Runs `reload` on the blocking pool whenever the stamps of `paths` differ from the last
/// ones seen (starting from `seen`, the stamps of what is loaded) and, with `on_hangup`, on
/// every SIGHUP, until `shutdown`. A change is acted on once, whether `reload` takes it or
/// refuses it.
pub(crate) async fn on_change(
    paths: Vec<PathBuf>,
    mut seen: Vec<Stamp>,
    on_hangup: bool,
    shutdown: CancellationToken,
    reload: impl Fn() + Send + Sync + 'static,
) {
    let reload = Arc::new(reload);
    let mut hangup = on_hangup
        .then(|| tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok())
        .flatten();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => false,
            Some(()) = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        let now: Vec<Stamp> = paths.iter().map(|p| stamp(p)).collect();
        if !forced && now == seen {
            continue;
        }
        seen = now;
        let reload = reload.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || reload()).await {
            tracing::error!(error = %e, "file reload task failed");
        }
    }
}
