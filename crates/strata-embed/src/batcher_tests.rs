//! Tests of the batcher: batching, ordering, priorities, failures, admission.

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
    // Every pass is in one cell of each histogram, and no pass was larger than the batch.
    assert_eq!(stats.pass_seconds.iter().sum::<u64>(), calls as u64);
    assert_eq!(stats.batch_sizes.iter().sum::<u64>(), calls as u64);
    assert_eq!(stats.batch_sizes[4..].iter().sum::<u64>(), 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_arriving_during_a_forward_pass_share_the_next_one_without_waiting() {
    let model = Arc::new(Counting {
        calls: AtomicUsize::new(0),
        largest: AtomicUsize::new(0),
    });
    // No wait budget: this is about coalescing, and on a loaded machine the default budget
    // could turn a queued caller away (the admission tests cover that).
    let b = Batcher::start(
        model.clone(),
        BatchSettings {
            max_queue_wait: None,
            ..BatchSettings::default()
        },
    );
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
        queued_behind_a_busy_model(4, 0, vec![vec![1, 2, 3], vec![5, 6, 7], vec![8, 9, 10]]).await;
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
    let (answers, _) = queued_behind_a_busy_model(4, 7, vec![vec![1, 2, 3], vec![5, 6, 7]]).await;
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
