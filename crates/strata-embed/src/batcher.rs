//! Dynamic batching: concurrent callers' texts are coalesced into batches of up to
//! `max_batch` texts and run one batch at a time on the model's own thread. A full queue
//! answers [`EmbedError::Overloaded`] at once rather than letting latency grow without bound.
//!
//! Every batch runs on that one thread, never on the blocking pool: ONNX Runtime allocates
//! its activations with the C allocator, and glibc gives each thread that allocates its own
//! arena and keeps what is freed there. Spread over the pool's changing threads, a model's
//! transient buffers stayed resident many times over.
//!
//! Batches form while the model is busy: every caller that arrives during a forward pass
//! joins the next one, so under load batches fill by themselves and an idle model starts
//! on a lone text at once. A request that does not fit in the room left is split: its first
//! texts complete this pass and the rest start the next, so queued work always runs in full
//! passes (ingestion's groups ended in passes of a few texts, each costing nearly a full
//! one). Two queues feed the passes: callers who wait ([`Batcher::embed`]) go ahead of bulk
//! work ([`Batcher::embed_bulk`]), so a query never waits behind queued ingestion.
//!
//! `max_wait` (zero by default) additionally holds a batch open for company; it only pays
//! off for a backend billed per call, since on a local model it adds its whole length to
//! the latency of every query that arrives alone.
//!
//! The batching task ends when the last [`Batcher`] handle is dropped.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::{BATCH_SIZE_BUCKETS, BatchModel, EmbedError, ModelStats, PASS_SECONDS_BUCKETS};

/// Batching limits.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Most texts in one forward pass.
    pub max_batch: usize,
    /// Longest wait for more texts once one has arrived (beyond those already queued).
    pub max_wait: Duration,
    /// Most requests waiting before callers are turned away.
    pub queue: usize,
    /// Longest a waiting caller's texts may expect to wait for the model before their pass
    /// completes; a caller whose estimate is longer is turned away at once
    /// ([`EmbedError::Overloaded`]). The estimate is the texts of waiting callers already
    /// admitted (in the queue or the running pass), plus the caller's own, times the recent
    /// cost of one text in a pass. `None`: only the queue's length bounds the wait.
    pub max_queue_wait: Option<Duration>,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_wait: Duration::ZERO,
            // Enough to keep the model busy for several passes; beyond it a caller is better
            // told at once to retry than kept waiting behind hundreds of others.
            queue: 512,
            // About one unloaded search (the local model on two cores): at four times
            // capacity the searches admitted keep their p99 within twice the unloaded p99,
            // at the price of smaller passes, so about 40% fewer searches per second than an
            // unbounded queue that lets latency grow without bound (BENCHMARKS.md, overload).
            max_queue_wait: Some(Duration::from_millis(15)),
        }
    }
}

struct Request {
    texts: Vec<String>,
    /// Vectors of the texts this request had before earlier passes took them (when split).
    done: Vec<Vec<f32>>,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, EmbedError>>,
}

/// One caller's share of a pass.
enum Part {
    /// A request whose remaining texts, this many, all run in this pass (moved into it).
    Whole(Request, usize),
    /// The first texts of the request carried to the next pass.
    Head(usize),
}

/// What the model's thread has done, written by that thread only (and the waiting callers'
/// texts, written by them).
#[derive(Default)]
struct Counters {
    passes: AtomicU64,
    texts: AtomicU64,
    failed_passes: AtomicU64,
    busy_nanos: AtomicU64,
    /// Recent cost of one text in a pass: a moving average (weight 1/8) of pass time over
    /// its texts.
    nanos_per_text: AtomicU64,
    /// Texts of admitted waiting callers not yet answered.
    waiting_texts: AtomicU64,
    /// Passes by duration (see [`ModelStats::pass_seconds`]).
    pass_seconds: [AtomicU64; PASS_SECONDS_BUCKETS.len() + 1],
    /// Passes by size (see [`ModelStats::batch_sizes`]).
    batch_sizes: [AtomicU64; BATCH_SIZE_BUCKETS.len() + 1],
    /// Texts in every pass (see [`ModelStats::pass_texts`]).
    pass_texts: AtomicU64,
}

/// The cell of `value` in a histogram with upper `bounds` (the last cell is past them all).
fn bucket(bounds: &[f64], value: f64) -> usize {
    bounds
        .iter()
        .position(|&b| value <= b)
        .unwrap_or(bounds.len())
}

/// Loads every cell of a histogram.
fn load<const N: usize>(cells: &[AtomicU64; N]) -> [u64; N] {
    std::array::from_fn(|i| cells[i].load(Ordering::Relaxed))
}

/// Counts a caller's texts as waiting until it is answered or gives up.
struct Waiting<'a>(&'a AtomicU64, u64);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

/// Handle to a batching task.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Request>,
    bulk: mpsc::Sender<Request>,
    max_batch: usize,
    max_queue_wait: Option<Duration>,
    counters: Arc<Counters>,
}

impl Batcher {
    /// Starts the batching task on the current runtime and the model's thread beside it.
    pub fn start(model: Arc<dyn BatchModel>, settings: BatchSettings) -> Self {
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let (bulk, bulk_rx) = mpsc::channel(settings.queue.max(1));
        let (work, jobs) = std::sync::mpsc::channel::<Pass>();
        let name = format!("strata-model-{}", model.model());
        let counters = Arc::new(Counters::default());
        let counted = counters.clone();
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            // Ends when the batching task drops its sender. A panicking pass fails its own
            // callers only.
            for (texts, reply) in jobs {
                let start = Instant::now();
                let pass = std::panic::catch_unwind(AssertUnwindSafe(|| model.embed_batch(&texts)))
                    .unwrap_or_else(|_| {
                        Err(EmbedError::Runtime(
                            "the model panicked on this batch".into(),
                        ))
                    });
                let busy = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                counted.busy_nanos.fetch_add(busy, Ordering::Relaxed);
                counted.passes.fetch_add(1, Ordering::Relaxed);
                counted.pass_seconds[bucket(&PASS_SECONDS_BUCKETS, busy as f64 / 1e9)]
                    .fetch_add(1, Ordering::Relaxed);
                counted.batch_sizes[bucket(&BATCH_SIZE_BUCKETS, texts.len() as f64)]
                    .fetch_add(1, Ordering::Relaxed);
                counted
                    .pass_texts
                    .fetch_add(texts.len() as u64, Ordering::Relaxed);
                if !texts.is_empty() {
                    let per_text = busy / texts.len() as u64;
                    let old = counted.nanos_per_text.load(Ordering::Relaxed);
                    let new = if old == 0 {
                        per_text
                    } else {
                        old - old / 8 + per_text / 8
                    };
                    counted.nanos_per_text.store(new, Ordering::Relaxed);
                }
                match &pass {
                    Ok(_) => counted
                        .texts
                        .fetch_add(texts.len() as u64, Ordering::Relaxed),
                    Err(_) => counted.failed_passes.fetch_add(1, Ordering::Relaxed),
                };
                let _ = reply.send(pass);
            }
        });
        match spawned {
            Ok(_) => {
                tokio::spawn(run(
                    work,
                    settings,
                    Queues {
                        interactive: rx,
                        bulk: bulk_rx,
                        carry: None,
                    },
                ));
            }
            // No thread, no model: every caller is answered with the reason.
            Err(e) => {
                let reason = format!("cannot start the model's thread: {e}");
                tokio::spawn(refuse(reason.clone(), rx));
                tokio::spawn(refuse(reason, bulk_rx));
            }
        }
        Self {
            tx,
            bulk,
            max_batch: settings.max_batch.max(1),
            max_queue_wait: settings.max_queue_wait,
            counters,
        }
    }

    /// What the model has done since it started, and the requests waiting for it now.
    pub fn stats(&self) -> ModelStats {
        let c = &self.counters;
        ModelStats {
            passes: c.passes.load(Ordering::Relaxed),
            texts: c.texts.load(Ordering::Relaxed),
            failed_passes: c.failed_passes.load(Ordering::Relaxed),
            busy_seconds: c.busy_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            queued: (self.tx.max_capacity() - self.tx.capacity())
                + (self.bulk.max_capacity() - self.bulk.capacity()),
            pass_seconds: load(&c.pass_seconds),
            batch_sizes: load(&c.batch_sizes),
            pass_texts: c.pass_texts.load(Ordering::Relaxed),
        }
    }

    /// Embeds `texts` for a caller who is waiting (a query): ahead of every bulk request,
    /// sharing forward passes with concurrent callers. Large requests are queued one pass at
    /// a time, so they do not hold back the callers behind them.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let n = texts.len() as u64;
        let c = &self.counters;
        let waiting = c.waiting_texts.fetch_add(n, Ordering::Relaxed) + n;
        let _waiting = Waiting(&c.waiting_texts, n);
        // A caller with no one ahead is always admitted, however long its own texts take.
        if let Some(max) = self.max_queue_wait
            && waiting > n
        {
            let per_text = c.nanos_per_text.load(Ordering::Relaxed);
            if Duration::from_nanos(waiting.saturating_mul(per_text)) > max {
                return Err(EmbedError::Overloaded);
            }
        }
        if texts.len() <= self.max_batch {
            return self.submit(&self.tx, texts).await;
        }
        let mut out = Vec::with_capacity(texts.len());
        for part in texts.chunks(self.max_batch) {
            out.extend(self.submit(&self.tx, part.to_vec()).await?);
        }
        Ok(out)
    }

    /// Embeds `texts` as background work (ingestion): queued whole, behind every waiting
    /// caller's request, and run in full passes as the model frees up.
    pub async fn embed_bulk(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.submit(&self.bulk, texts).await
    }

    async fn submit(
        &self,
        queue: &mpsc::Sender<Request>,
        texts: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        queue
            .try_send(Request {
                texts,
                done: Vec::new(),
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => EmbedError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => EmbedError::Closed,
            })?;
        rx.await.map_err(|_| EmbedError::Closed)?
    }
}

/// One forward pass for the model's thread: the texts and where to send their vectors.
type Pass = (
    Vec<String>,
    oneshot::Sender<Result<Vec<Vec<f32>>, EmbedError>>,
);

async fn refuse(reason: String, mut rx: mpsc::Receiver<Request>) {
    while let Some(r) = rx.recv().await {
        let _ = r.reply.send(Err(EmbedError::Runtime(reason.clone())));
    }
}

/// The batching task's inputs: waiting callers' requests come first, then the rest of a
/// request split at the end of the last pass, then bulk requests.
struct Queues {
    interactive: mpsc::Receiver<Request>,
    bulk: mpsc::Receiver<Request>,
    carry: Option<Request>,
}

impl Queues {
    /// The next request by priority, without waiting.
    fn ready(&mut self) -> Option<Request> {
        if let Ok(r) = self.interactive.try_recv() {
            return Some(r);
        }
        if let Some(r) = self.carry.take() {
            return Some(r);
        }
        self.bulk.try_recv().ok()
    }

    /// The next request by priority, waiting until `deadline` (`None`: for as long as it
    /// takes; `None` returned: both queues closed, or the deadline passed).
    async fn next(&mut self, deadline: Option<tokio::time::Instant>) -> Option<Request> {
        if let Some(r) = self.ready() {
            return Some(r);
        }
        let wait = async {
            tokio::select! {
                biased;
                Some(r) = self.interactive.recv() => Some(r),
                Some(r) = self.bulk.recv() => Some(r),
                else => None,
            }
        };
        match deadline {
            None => wait.await,
            Some(d) => tokio::time::timeout_at(d, wait).await.ok().flatten(),
        }
    }
}

async fn run(model: std::sync::mpsc::Sender<Pass>, settings: BatchSettings, mut queues: Queues) {
    let max = settings.max_batch.max(1);
    loop {
        let Some(first) = queues.next(None).await else {
            return;
        };
        let mut texts: Vec<String> = Vec::with_capacity(max);
        let mut batch = Vec::new();
        let mut next = Some(first);
        let deadline = tokio::time::Instant::now() + settings.max_wait;
        while let Some(mut r) = next.take() {
            let room = max - texts.len();
            if r.texts.len() <= room {
                let n = r.texts.len();
                texts.append(&mut r.texts);
                batch.push(Part::Whole(r, n));
            } else {
                // The rest starts the next pass.
                let rest = r.texts.split_off(room);
                texts.append(&mut r.texts);
                batch.push(Part::Head(room));
                r.texts = rest;
                queues.carry = Some(r);
                break;
            }
            if texts.len() >= max {
                break;
            }
            next = if settings.max_wait.is_zero() {
                queues.ready()
            } else {
                queues.next(Some(deadline)).await
            };
        }
        let (reply, vectors) = oneshot::channel();
        let result = match model.send((texts, reply)) {
            Ok(()) => vectors
                .await
                .unwrap_or_else(|_| Err(EmbedError::Runtime("the model's thread stopped".into()))),
            Err(_) => Err(EmbedError::Runtime("the model's thread stopped".into())),
        };
        match result {
            Ok(mut vectors) => {
                for part in batch.into_iter().rev() {
                    match part {
                        Part::Head(n) => {
                            let head = vectors.split_off(vectors.len().saturating_sub(n));
                            if let Some(c) = queues.carry.as_mut() {
                                c.done.extend(head);
                            }
                        }
                        Part::Whole(r, n) => {
                            let mine = vectors.split_off(vectors.len().saturating_sub(n));
                            let mut all = r.done;
                            all.extend(mine);
                            let _ = r.reply.send(Ok(all));
                        }
                    }
                }
            }
            Err(e) => {
                let msg = e.to_string();
                let split = matches!(batch.last(), Some(Part::Head(_)));
                for part in batch {
                    if let Part::Whole(r, _) = part {
                        let _ = r.reply.send(Err(EmbedError::Runtime(msg.clone())));
                    }
                }
                // A request whose head failed fails whole.
                if split && let Some(c) = queues.carry.take() {
                    let _ = c.reply.send(Err(EmbedError::Runtime(msg)));
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "batcher_tests.rs"]
mod tests;
