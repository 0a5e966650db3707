//! The real model, loaded from the files `scripts/fetch-model` puts in place (the test
//! fails, naming that command, when they are missing).

use std::time::Instant;

use strata_embed::{
    BatchModel, BatchSettings, CandleMiniLm, Embedder, LocalEmbedder, LocalRuntime, ModelFiles,
    OnnxMiniLm, dot,
};

fn files() -> ModelFiles {
    let dir = std::env::var("STRATA_MODEL_DIR")
        .unwrap_or_else(|_| "/var/tmp/strata-models/all-MiniLM-L6-v2".into());
    ModelFiles::at(dir)
}

/// The same texts through two models.
fn both(a: &dyn BatchModel, b: &dyn BatchModel, texts: &[&str]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let texts: Vec<String> = texts.iter().map(|t| (*t).to_owned()).collect();
    (
        a.embed_batch(&texts).expect("the first model embeds"),
        b.embed_batch(&texts).expect("the second model embeds"),
    )
}

#[test]
fn matches_the_reference_similarities() {
    let m = OnnxMiniLm::load(&files(), 2).unwrap();
    let s: Vec<String> = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The girl is carrying a baby.",
    ]
    .map(String::from)
    .to_vec();
    let v = m.embed_batch(&s).unwrap();
    assert_eq!(v.len(), 3);
    for x in &v {
        assert_eq!(x.len(), 384);
        let norm: f32 = x.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "unit length, got {norm}");
    }
    let close = dot(&v[0], &v[1]);
    let far = dot(&v[0], &v[2]);
    // sentence-transformers reference: 0.755 and -0.105 (int8 export: within 0.03).
    assert!((close - 0.755).abs() < 0.03, "cos(eating, bread) = {close}");
    assert!((far + 0.105).abs() < 0.03, "cos(eating, baby) = {far}");
}

#[test]
fn padding_does_not_change_a_vector() {
    let m = OnnxMiniLm::load(&files(), 2).unwrap();
    let short = "Short text.".to_owned();
    let long = "A considerably longer sentence that forces padding of the short one in its batch."
        .to_owned();
    let alone = m.embed_batch(std::slice::from_ref(&short)).unwrap();
    let padded = m.embed_batch(&[short, long]).unwrap();
    assert!(dot(&alone[0], &padded[0]) > 0.9999);
}

#[test]
fn long_input_is_truncated_not_rejected() {
    let m = OnnxMiniLm::load(&files(), 2).unwrap();
    let long = "word ".repeat(2000);
    assert_eq!(m.embed_batch(&[long]).unwrap()[0].len(), 384);
}

#[test]
fn tokenizer_spans_are_model_tokens() {
    let m = OnnxMiniLm::load(&files(), 1).unwrap();
    let spans = m.tokenizer().token_spans("Tokenization isn't trivial.");
    let text = "Tokenization isn't trivial.";
    let pieces: Vec<&str> = spans.iter().map(|r| &text[r.clone()]).collect();
    assert!(pieces.len() > 4, "{pieces:?}");
    assert_eq!(pieces.first(), Some(&"Token"));
    assert_eq!(pieces.last(), Some(&"."));
}

#[test]
fn missing_files_name_the_fix() {
    let err = OnnxMiniLm::load(&ModelFiles::at("/nonexistent/strata-model"), 1)
        .err()
        .expect("no model there")
        .to_string();
    assert!(
        err.contains("scripts/fetch-model") && err.contains("missing"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_embedder_agrees_with_direct_calls() {
    let e = LocalEmbedder::load(&files(), LocalRuntime::Onnx, 2, unbounded()).unwrap();
    let direct = OnnxMiniLm::load(&files(), 1).unwrap();
    let texts: Vec<String> = (0..40)
        .map(|i| format!("sentence number {i} about cats"))
        .collect();
    let start = Instant::now();
    let mut handles = Vec::new();
    let e = std::sync::Arc::new(e);
    for t in texts.clone() {
        let e = e.clone();
        handles.push(tokio::spawn(async move {
            e.embed(vec![t]).await.unwrap().remove(0)
        }));
    }
    let mut batched = Vec::new();
    for h in handles {
        batched.push(h.await.unwrap());
    }
    let _ = start.elapsed();
    let reference = direct.embed_batch(&texts).unwrap();
    for (a, b) in batched.iter().zip(&reference) {
        assert!(dot(a, b) > 0.9999);
    }
    assert_eq!(e.model(), "all-MiniLM-L6-v2");
    assert_eq!(e.dims(), 384);
}

#[test]
fn candle_f32_reference_agrees_with_the_int8_onnx_model() {
    let onnx = OnnxMiniLm::load(&files(), 2).unwrap();
    let candle = CandleMiniLm::load(&files()).unwrap();
    let texts = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The girl is carrying a baby.",
        "Ocean tides are caused mainly by the gravitational pull of the Moon.",
        "In Rust every value has a single owner; when the owner goes out of scope the value is dropped.",
        "short",
    ];
    let (a, b) = both(&onnx, &candle, &texts);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let cos = dot(x, y);
        assert!(cos >= 0.999, "text {i}: cos(onnx, candle) = {cos}");
    }
    // The f32 model reproduces the reference similarities closely.
    assert!(
        (dot(&b[0], &b[1]) - 0.755).abs() < 0.01,
        "{}",
        dot(&b[0], &b[1])
    );
    assert!(
        (dot(&b[0], &b[2]) + 0.105).abs() < 0.01,
        "{}",
        dot(&b[0], &b[2])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candle_runtime_serves_as_the_local_embedder() {
    let e = LocalEmbedder::load(&files(), LocalRuntime::Candle, 2, unbounded()).unwrap();
    let v = e.embed(vec!["A man is eating food.".into()]).await.unwrap();
    assert_eq!(v[0].len(), 384);
    assert!(e.tokenizer().is_some());
}

#[test]
fn the_rewritten_lookups_give_the_published_graph_s_vectors() {
    let rewritten = OnnxMiniLm::load(&files(), 2).unwrap();
    let published = OnnxMiniLm::load_unmodified(&files(), 2).unwrap();
    let texts = [
        "A man is eating food.",
        "Tokenization isn't trivial, but WordPiece handles unusual words like zymurgy.",
        "x",
        "Numbers 1234 and symbols #$%& map to rare rows of the vocabulary table.",
    ];
    let (a, b) = both(&rewritten, &published, &texts);
    for (x, y) in a.iter().zip(&b) {
        let worst = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-6, "vectors differ by up to {worst}");
    }
}

#[tokio::test]
async fn a_model_loaded_on_first_use_embeds_as_the_eager_one_does() {
    let lazy =
        LocalEmbedder::load_on_first_use(&files(), LocalRuntime::Onnx, 1, unbounded()).unwrap();
    assert_eq!((lazy.model(), lazy.dims()), ("all-MiniLM-L6-v2", 384));
    assert!(
        lazy.tokenizer().is_some(),
        "the tokenizer is there before the weights"
    );
    assert_eq!(lazy.stats().unwrap().passes, 0);
    let texts = vec!["loaded when first needed".to_owned()];
    let got = lazy.embed(texts.clone()).await.unwrap();
    let eager = OnnxMiniLm::load(&files(), 1).unwrap();
    assert_eq!(got, eager.embed_batch(&texts).unwrap());
}

#[tokio::test]
async fn a_missing_model_fails_its_first_pass_not_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let name = "tokenizer.json";
    std::fs::copy(files().path(name), dir.path().join(name)).unwrap();
    let lazy = LocalEmbedder::load_on_first_use(
        &ModelFiles::at(dir.path()),
        LocalRuntime::Onnx,
        1,
        unbounded(),
    )
    .expect("starts without the weights");
    let err = lazy.embed(vec!["x".to_owned()]).await.unwrap_err();
    assert!(err.to_string().contains("could not be loaded"), "{err}");
}

/// Default batching without the wait budget: these tests check what the model computes,
/// and concurrent callers on a busy machine could otherwise be turned away (the batcher's
/// own tests cover admission).
fn unbounded() -> BatchSettings {
    BatchSettings {
        max_queue_wait: None,
        ..BatchSettings::default()
    }
}
