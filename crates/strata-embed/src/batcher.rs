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
//! on a lone text at once. `max_wait` (zero by default) additionally holds a batch open for
//! company; it only pays off for a backend billed per call, since on a local model it adds
//! its whole length to the latency of every query that arrives alone.
//!
//! The batching task ends when the last [`Batcher`] handle is dropped.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::{BatchModel, EmbedError, ModelStats};

/// Batching limits.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Most texts in one forward pass.
    pub max_batch: usize,
    /// Longest wait for more texts once one has arrived (beyond those already queued).
    pub max_wait: Duration,
    /// Most requests waiting before callers are turned away.
    pub queue: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_wait: Duration::ZERO,
            queue: 4096,
        }
    }
}

struct Request {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, EmbedError>>,
}

/// What the model's thread has done, written by that thread only.
#[derive(Default)]
struct Counters {
    passes: AtomicU64,
    texts: AtomicU64,
    failed_passes: AtomicU64,
    busy_nanos: AtomicU64,
}

/// Handle to a batching task.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Request>,
    max_batch: usize,
    counters: Arc<Counters>,
}

impl Batcher {
    /// Starts the batching task on the current runtime and the model's thread beside it.
    pub fn start(model: Arc<dyn BatchModel>, settings: BatchSettings) -> Self {
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
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
                tokio::spawn(run(work, settings, rx));
            }
            // No thread, no model: every caller is answered with the reason.
            Err(e) => {
                let reason = format!("cannot start the model's thread: {e}");
                tokio::spawn(refuse(reason, rx));
            }
        }
        Self {
            tx,
            max_batch: settings.max_batch.max(1),
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
            queued: self.tx.max_capacity() - self.tx.capacity(),
        }
    }

    /// Embeds `texts`, sharing forward passes with concurrent callers. Large requests are
    /// split so no batch exceeds `max_batch`.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.len() <= self.max_batch {
            return self.submit(texts).await;
        }
        let mut out = Vec::with_capacity(texts.len());
        for part in texts.chunks(self.max_batch) {
            out.extend(self.submit(part.to_vec()).await?);
        }
        Ok(out)
    }

    async fn submit(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Request { texts, reply })
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

async fn run(
    model: std::sync::mpsc::Sender<Pass>,
    settings: BatchSettings,
    mut rx: mpsc::Receiver<Request>,
) {
    let max = settings.max_batch.max(1);
    let mut carry: Option<Request> = None;
    loop {
        let first = match carry.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        let mut batch = vec![first];
        let mut count = batch[0].texts.len();
        let deadline = tokio::time::Instant::now() + settings.max_wait;
        while count < max {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) if count + r.texts.len() <= max => {
                    count += r.texts.len();
                    batch.push(r);
                }
                Ok(Some(r)) => {
                    carry = Some(r);
                    break;
                }
                Ok(None) | Err(_) => break,
            }
        }
        let texts: Vec<String> = batch.iter().flat_map(|r| r.texts.iter().cloned()).collect();
        let (reply, vectors) = oneshot::channel();
        let result = match model.send((texts, reply)) {
            Ok(()) => vectors
                .await
                .unwrap_or_else(|_| Err(EmbedError::Runtime("the model's thread stopped".into()))),
            Err(_) => Err(EmbedError::Runtime("the model's thread stopped".into())),
        };
        match result {
            Ok(mut vectors) => {
                for r in batch.into_iter().rev() {
                    let mine = vectors.split_off(vectors.len() - r.texts.len());
                    let _ = r.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for r in batch {
                    let _ = r.reply.send(Err(EmbedError::Runtime(msg.clone())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A one-dimensional model whose forward pass is the closure.
    struct Pass<F>(F);

    impl<F> BatchModel for Pass<F>
    where
        F: Fn(&[String]) -> Result<Vec<Vec<f32>>, EmbedError> + Send + Sync + 'static,
    {
        fn model(&self) -> &str {
            "test"
        }
        fn dims(&self) -> usize {
            1
        }
        fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
            (self.0)(texts)
        }
    }

    struct Counting {
        calls: AtomicUsize,
        largest: AtomicUsize,
    }

    impl BatchModel for Counting {
        fn model(&self) -> &str {
            "counting"
        }
        fn dims(&self) -> usize {
            1
        }
        fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.largest.fetch_max(texts.len(), Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
            Ok(texts.iter().map(|t| vec![t.len() as f32]).collect())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_batches_and_get_their_own_answers() {
        let model = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            largest: AtomicUsize::new(0),
        });
        let b = Batcher::start(
            model.clone(),
            BatchSettings {
                max_batch: 8,
                max_wait: Duration::from_millis(20),
                queue: 100,
            },
        );
        let mut handles = Vec::new();
        for i in 0..32 {
            let b = b.clone();
            handles.push(tokio::spawn(async move {
                (i, b.embed(vec!["x".repeat(i)]).await.unwrap())
            }));
        }
        for h in handles {
            let (i, v) = h.await.unwrap();
            assert_eq!(v, vec![vec![i as f32]]);
        }
        let calls = model.calls.load(Ordering::SeqCst);
        assert!(
            calls < 32,
            "32 callers coalesced into {calls} forward passes"
        );
        assert!(model.largest.load(Ordering::SeqCst) <= 8);
        let stats = b.stats();
        assert_eq!(
            (stats.passes, stats.texts, stats.failed_passes, stats.queued),
            (calls as u64, 32, 0, 0)
        );
        assert!(stats.busy_seconds > 0.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_arriving_during_a_forward_pass_share_the_next_one_without_waiting() {
        let model = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            largest: AtomicUsize::new(0),
        });
        let b = Batcher::start(model.clone(), BatchSettings::default());
        let b1 = b.clone();
        let first = tokio::spawn(async move { b1.embed(vec!["a".into()]).await });
        // The first text is alone, and with no wait its pass (5 ms) starts at once.
        while model.calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let mut rest = Vec::new();
        for i in 0..6 {
            let b = b.clone();
            rest.push(tokio::spawn(async move {
                (i, b.embed(vec!["z".repeat(i)]).await.unwrap())
            }));
        }
        assert_eq!(first.await.unwrap().unwrap(), vec![vec![1.0]]);
        for h in rest {
            let (i, v) = h.await.unwrap();
            assert_eq!(v, vec![vec![i as f32]]);
        }
        // Six callers queued behind the first pass: one or two more passes, not six.
        let calls = model.calls.load(Ordering::SeqCst);
        assert!(calls <= 3, "{calls} forward passes for 7 callers");
    }

    #[tokio::test]
    async fn large_requests_are_split_and_keep_order() {
        let model = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            largest: AtomicUsize::new(0),
        });
        let b = Batcher::start(
            model.clone(),
            BatchSettings {
                max_batch: 4,
                ..BatchSettings::default()
            },
        );
        let texts: Vec<String> = (0..10).map(|i| "y".repeat(i)).collect();
        let out = b.embed(texts).await.unwrap();
        assert_eq!(out, (0..10).map(|i| vec![i as f32]).collect::<Vec<_>>());
        assert!(model.largest.load(Ordering::SeqCst) <= 4);
    }

    #[tokio::test]
    async fn a_panicking_pass_fails_its_callers_and_the_next_pass_runs() {
        let fragile = Pass(|texts: &[String]| {
            assert!(texts[0] != "boom", "the model broke");
            Ok(texts.iter().map(|t| vec![t.len() as f32]).collect())
        });
        let b = Batcher::start(Arc::new(fragile), BatchSettings::default());
        let err = b.embed(vec!["boom".into()]).await.unwrap_err();
        assert!(err.to_string().contains("panicked"), "{err}");
        assert_eq!(b.embed(vec!["fine".into()]).await.unwrap(), vec![vec![4.0]]);
        let stats = b.stats();
        assert_eq!((stats.passes, stats.texts, stats.failed_passes), (2, 1, 1));
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once() {
        let slow = Pass(|texts: &[String]| {
            std::thread::sleep(Duration::from_millis(200));
            Ok(texts.iter().map(|_| vec![0.0]).collect())
        });
        let b = Batcher::start(
            Arc::new(slow),
            BatchSettings {
                max_batch: 1,
                max_wait: Duration::ZERO,
                queue: 1,
            },
        );
        let b1 = b.clone();
        let first = tokio::spawn(async move { b1.embed(vec!["a".into()]).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let b2 = b.clone();
        let second = tokio::spawn(async move { b2.embed(vec!["b".into()]).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let third = b.embed(vec!["c".into()]).await;
        assert!(matches!(third, Err(EmbedError::Overloaded)), "{third:?}");
        assert!(first.await.unwrap().is_ok());
        assert!(second.await.unwrap().is_ok());
    }
}
