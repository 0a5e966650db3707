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
                max_queue_wait: None,
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
                max_queue_wait: None,
                ..BatchSettings::default()
            },
        );
        let texts: Vec<String> = (0..10).map(|i| "y".repeat(i)).collect();
        let out = b.embed(texts).await.unwrap();
        assert_eq!(out, (0..10).map(|i| vec![i as f32]).collect::<Vec<_>>());
        assert!(model.largest.load(Ordering::SeqCst) <= 4);
    }

    /// Starts `requests` (texts named by their lengths) while a first pass holds the model,
    /// so they queue; returns each caller's answer and the size of every pass.
    async fn queued_behind_a_busy_model(
        max_batch: usize,
        fails_on: usize,
        requests: Vec<Vec<usize>>,
    ) -> (Vec<Result<Vec<f32>, String>>, Vec<usize>) {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen, gate) = (sizes.clone(), released.clone());
        let model = Pass(move |texts: &[String]| {
            seen.lock().unwrap().push(texts.len());
            while texts[0] == "hold" && !gate.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            if texts.iter().any(|t| t.len() == fails_on) {
                return Err(EmbedError::Runtime("no".into()));
            }
            Ok(texts.iter().map(|t| vec![t.len() as f32]).collect())
        });
        let b = Batcher::start(
            Arc::new(model),
            BatchSettings {
                max_batch,
                max_queue_wait: None,
                ..BatchSettings::default()
            },
        );
        let held = tokio::spawn({
            let b = b.clone();
            async move { b.embed(vec!["hold".into()]).await }
        });
        let queued = |n: usize| {
            let b = b.clone();
            async move {
                while b.stats().queued < n {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        };
        // The held pass has left the queue and is running.
        while sizes.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut callers = Vec::new();
        for (i, lens) in requests.into_iter().enumerate() {
            let b = b.clone();
            callers.push(tokio::spawn(async move {
                b.embed(lens.iter().map(|&n| "z".repeat(n)).collect()).await
            }));
            // Queued in this order.
            queued(i + 1).await;
        }
        released.store(true, Ordering::SeqCst);
        held.await.unwrap().unwrap();
        let mut answers = Vec::new();
        for c in callers {
            answers.push(
                c.await
                    .unwrap()
                    .map(|v| v.into_iter().map(|x| x[0]).collect())
                    .map_err(|e| e.to_string()),
            );
        }
        let sizes = sizes.lock().unwrap().clone();
        (answers, sizes)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_requests_fill_every_pass_and_split_ones_keep_their_order() {
        let (answers, sizes) =
            queued_behind_a_busy_model(4, 0, vec![vec![1, 2, 3], vec![5, 6, 7], vec![8, 9, 10]])
                .await;
        assert_eq!(
            answers,
            vec![
                Ok(vec![1.0, 2.0, 3.0]),
                Ok(vec![5.0, 6.0, 7.0]),
                Ok(vec![8.0, 9.0, 10.0])
            ]
        );
        // The held pass, then full passes, then what is left.
        assert_eq!(sizes, vec![1, 4, 4, 1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_split_across_passes_fails_whole_when_either_part_fails() {
        // The second request's head shares a pass with the first (which fails there); its rest
        // would run next. The third request's pass is unaffected.
        let (answers, sizes) =
            queued_behind_a_busy_model(4, 2, vec![vec![1, 2, 3], vec![5, 6, 7], vec![8]]).await;
        assert!(answers[0].is_err() && answers[1].is_err(), "{answers:?}");
        assert_eq!(answers[2], Ok(vec![8.0]));
        assert_eq!(sizes, vec![1, 4, 1]);
        // Here the head succeeds and the rest fails.
        let (answers, _) =
            queued_behind_a_busy_model(4, 7, vec![vec![1, 2, 3], vec![5, 6, 7]]).await;
        assert_eq!(answers[0], Ok(vec![1.0, 2.0, 3.0]));
        assert!(answers[1].is_err(), "{answers:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_caller_goes_ahead_of_queued_bulk_work() {
        let passes = Arc::new(std::sync::Mutex::new(Vec::<Vec<usize>>::new()));
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen, gate) = (passes.clone(), released.clone());
        let model = Pass(move |texts: &[String]| {
            seen.lock()
                .unwrap()
                .push(texts.iter().map(String::len).collect());
            while texts[0] == "hold" && !gate.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(texts.iter().map(|t| vec![t.len() as f32]).collect())
        });
        let b = Batcher::start(
            Arc::new(model),
            BatchSettings {
                max_batch: 4,
                max_queue_wait: None,
                ..BatchSettings::default()
            },
        );
        let held = tokio::spawn({
            let b = b.clone();
            async move { b.embed(vec!["hold".into()]).await }
        });
        while passes.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let texts = |lens: &[usize]| lens.iter().map(|&n| "z".repeat(n)).collect::<Vec<_>>();
        // Ingestion queues six texts, then a query arrives.
        let bulk = tokio::spawn({
            let (b, t) = (b.clone(), texts(&[1, 2, 3, 5, 6, 7]));
            async move { b.embed_bulk(t).await }
        });
        while b.stats().queued < 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let query = tokio::spawn({
            let (b, t) = (b.clone(), texts(&[9]));
            async move { b.embed(t).await }
        });
        while b.stats().queued < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        released.store(true, Ordering::SeqCst);
        held.await.unwrap().unwrap();
        assert_eq!(query.await.unwrap().unwrap(), vec![vec![9.0]]);
        let all: Vec<f32> = bulk
            .await
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|v| v[0])
            .collect();
        assert_eq!(all, vec![1.0, 2.0, 3.0, 5.0, 6.0, 7.0]);
        // The query first, the bulk request filling the rest of its pass and the next.
        assert_eq!(
            passes.lock().unwrap().clone(),
            vec![vec![4], vec![9, 1, 2, 3], vec![5, 6, 7]]
        );
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
                max_queue_wait: None,
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

    /// Past the wait budget a caller is turned away at once; within it, callers wait and are
    /// answered; a caller with no one ahead is always admitted.
    #[tokio::test]
    async fn callers_who_would_wait_past_the_budget_are_turned_away_at_once() {
        let b = Batcher::start(
            Arc::new(Pass(|texts: &[String]| {
                std::thread::sleep(Duration::from_millis(50));
                Ok(texts.iter().map(|_| vec![1.0]).collect())
            })),
            BatchSettings {
                max_batch: 1,
                max_wait: Duration::ZERO,
                queue: 100,
                max_queue_wait: Some(Duration::from_millis(170)),
            },
        );
        // Alone: admitted even though no cost is known yet; this also measures a text.
        b.embed(vec!["first".into()]).await.unwrap();
        let started = Instant::now();
        let calls: Vec<_> = (0..10)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move {
                    let t = Instant::now();
                    (b.embed(vec![format!("q{i}")]).await, t.elapsed())
                })
            })
            .collect();
        let mut admitted = 0;
        for c in calls {
            let (result, took) = c.await.unwrap();
            match result {
                Ok(_) => admitted += 1,
                Err(EmbedError::Overloaded) => {
                    assert!(took < Duration::from_millis(25), "refused after {took:?}")
                }
                Err(e) => panic!("{e}"),
            }
        }
        // 50 ms a text, 170 ms of budget: three waiting texts fit (150 ms), a fourth would
        // not; the three run one after another.
        assert_eq!(admitted, 3, "admitted");
        assert!(started.elapsed() < Duration::from_millis(400));
    }
}
