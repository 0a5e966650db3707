//! `strata ingest`'s progress while it processes what it queued: a bar redrawn in place when
//! stderr is a terminal, a plain line every few seconds otherwise (a log file, CI), both
//! from the job events of the documents this run queued; then the list of what failed and
//! why.
//!
//! Must not import: the server; it reads job events and writes to stderr, nothing else.

use std::collections::HashMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use strata_engine::JobId;
use strata_engine::jobs::JobEvent;
use strata_engine::model::JobStatus;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// How often a terminal bar is redrawn at most.
const REDRAW: Duration = Duration::from_millis(100);
/// How often a plain line is written when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// Width of the bar, in cells.
const BAR: usize = 28;

/// What one job has got to.
#[derive(Debug, Default, Clone)]
struct Seen {
    finished: bool,
    error: Option<String>,
    chunks_done: u64,
    chunks_total: u64,
}

/// The state the bar is drawn from.
#[derive(Debug)]
pub struct Progress {
    /// The jobs this run queued, with the file each works on.
    files: HashMap<JobId, String>,
    seen: HashMap<JobId, Seen>,
    started: Instant,
}

/// What failed, for the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The file.
    pub file: String,
    /// Why its job failed.
    pub error: String,
}

impl Progress {
    /// Progress over these jobs (job id -> file shown for it).
    pub fn new(files: HashMap<JobId, String>) -> Self {
        Self {
            files,
            seen: HashMap::new(),
            started: Instant::now(),
        }
    }

    /// Takes in one event; events of other jobs are ignored.
    pub fn update(&mut self, event: &JobEvent) {
        let job = &event.job;
        if !self.files.contains_key(&job.id) {
            return;
        }
        let seen = self.seen.entry(job.id).or_default();
        if let Some(embed) = job.stages.iter().find(|s| s.stage == "embed") {
            seen.chunks_done = embed.done;
            seen.chunks_total = embed.total;
        }
        match job.status {
            JobStatus::Succeeded => seen.finished = true,
            JobStatus::Failed | JobStatus::Cancelled => {
                seen.finished = true;
                seen.error = Some(
                    job.error
                        .clone()
                        .unwrap_or_else(|| format!("{:?}", job.status).to_lowercase()),
                );
            }
            _ => {}
        }
    }

    /// Files finished (either way), and in all.
    pub fn files(&self) -> (usize, usize) {
        let done = self.seen.values().filter(|s| s.finished).count();
        (done, self.files.len())
    }

    /// One line: bar, files, chunks, rate and time left.
    pub fn line(&self, tty: bool) -> String {
        let (done, total) = self.files();
        let chunks: u64 = self.seen.values().map(|s| s.chunks_done).sum();
        let known: u64 = self.seen.values().map(|s| s.chunks_total).sum();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let eta = if done == 0 || done == total {
            "–".to_owned()
        } else {
            let left = (total - done) as f64 * secs / done as f64;
            format!("{}:{:02}", (left / 60.0) as u64, (left % 60.0) as u64)
        };
        let failed = self.seen.values().filter(|s| s.error.is_some()).count();
        let failed = if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        };
        let counts = format!(
            "{done}/{total} files{failed}, {chunks}/{known} chunks embedded, {:.1} chunks/s, ETA {eta}",
            chunks as f64 / secs
        );
        if tty {
            let filled = (done * BAR).checked_div(total).unwrap_or(BAR);
            format!(
                "[{}{}] {counts}",
                "#".repeat(filled),
                ".".repeat(BAR - filled)
            )
        } else {
            format!("ingest: {counts}")
        }
    }

    /// The jobs that failed, in file order.
    pub fn failures(&self) -> Vec<Failure> {
        let mut out: Vec<Failure> = self
            .seen
            .iter()
            .filter_map(|(id, s)| {
                Some(Failure {
                    file: self.files.get(id)?.clone(),
                    error: s.error.clone()?,
                })
            })
            .collect();
        out.sort_by(|a, b| a.file.cmp(&b.file));
        out
    }
}

/// Follows `events` until `stop`, drawing `progress` on stderr, and returns it.
pub async fn follow(
    mut progress: Progress,
    mut events: broadcast::Receiver<JobEvent>,
    stop: CancellationToken,
) -> Progress {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let every = if tty { REDRAW } else { PLAIN_EVERY };
    let mut last = Instant::now();
    let mut tick = tokio::time::interval(every);
    let draw = |p: &Progress| {
        let mut err = std::io::stderr().lock();
        if tty {
            let _ = write!(err, "\r\x1b[2K{}", p.line(true));
        } else {
            let _ = writeln!(err, "{}", p.line(false));
        }
        let _ = err.flush();
    };
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            e = events.recv() => match e {
                Ok(event) => progress.update(&event),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = tick.tick() => {}
        }
        if last.elapsed() >= every {
            draw(&progress);
            last = Instant::now();
        }
    }
    // Events still buffered when the work ended.
    while let Ok(event) = events.try_recv() {
        progress.update(&event);
    }
    if tty {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "\r\x1b[2K{}", progress.line(true));
    } else {
        eprintln!("{}", progress.line(false));
    }
    progress
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_engine::TenantId;
    use strata_engine::model::{Job, StageProgress};

    fn event(id: JobId, status: JobStatus, embed: (u64, u64), error: Option<&str>) -> JobEvent {
        let now = chrono::Utc::now();
        JobEvent {
            owner: TenantId::local(),
            job: Job {
                id,
                kind: "ingest_document".into(),
                subject: None,
                document_id: None,
                status,
                stage: Some("embed".into()),
                stages: vec![StageProgress {
                    stage: "embed".into(),
                    done: embed.0,
                    total: embed.1,
                }],
                attempts: 1,
                max_attempts: 5,
                error: error.map(str::to_owned),
                created_at: now,
                updated_at: now,
                finished_at: None,
            },
        }
    }

    #[test]
    fn counts_files_chunks_and_failures_of_its_own_jobs_only() {
        let (a, b, c, other) = (JobId::new(), JobId::new(), JobId::new(), JobId::new());
        let mut p = Progress::new(HashMap::from([
            (a, "a.md".to_owned()),
            (b, "b.pdf".to_owned()),
            (c, "c.txt".to_owned()),
        ]));
        p.update(&event(a, JobStatus::Running, (3, 10), None));
        p.update(&event(a, JobStatus::Succeeded, (10, 10), None));
        p.update(&event(
            b,
            JobStatus::Failed,
            (0, 0),
            Some("no text in the file"),
        ));
        p.update(&event(c, JobStatus::Running, (2, 8), None));
        p.update(&event(other, JobStatus::Succeeded, (99, 99), None));
        assert_eq!(p.files(), (2, 3));
        let line = p.line(false);
        assert!(
            line.starts_with("ingest: 2/3 files, 1 failed, 12/18 chunks"),
            "{line}"
        );
        let bar = p.line(true);
        assert!(
            bar.starts_with(&format!("[{}{}]", "#".repeat(18), ".".repeat(10))),
            "{bar}"
        );
        assert_eq!(
            p.failures(),
            vec![Failure {
                file: "b.pdf".into(),
                error: "no text in the file".into()
            }]
        );
    }
}
