//! all-MiniLM-L6-v2 through ONNX Runtime (int8 export), loaded dynamically from the
//! `libonnxruntime.so` that `scripts/fetch-model` unpacks beside the model.

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;

use crate::files::{MODEL_ONNX, ModelFiles, ONNXRUNTIME, TOKENIZER};
use crate::tokenizer::{EncodedBatch, TextTokenizer, length_groups, pad};
use crate::{BatchModel, EmbedError};

/// The model id strata stores beside every vector.
pub const MODEL_ID: &str = "all-MiniLM-L6-v2";
/// Its dimensions.
pub const DIMS: usize = 384;

/// ONNX Runtime allows one environment per process; every model shares it.
static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

fn environment(files: &ModelFiles) -> Result<ort::environment::Environment, EmbedError> {
    ENVIRONMENT
        .get_or_init(|| {
            let builder = ort::init_from(files.path(ONNXRUNTIME.0)).map_err(|e| e.to_string())?;
            builder
                .with_name("strata")
                .build()
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| EmbedError::Runtime(format!("cannot load ONNX Runtime: {e}")))
}

/// The loaded model.
pub struct OnnxMiniLm {
    session: Mutex<Session>,
    tokenizer: Arc<TextTokenizer>,
    inputs: Vec<String>,
}

impl OnnxMiniLm {
    /// Loads the model with `threads` intra-op threads, its embedding lookups rewritten to
    /// keep their tables int8 (see `graph.rs`; the vectors are the same).
    pub fn load(files: &ModelFiles, threads: usize) -> Result<Self, EmbedError> {
        Self::load_graph(files, threads, true)
    }

    /// Loads the export exactly as published, without the rewrite: the reference the
    /// rewritten graph is tested against.
    pub fn load_unmodified(files: &ModelFiles, threads: usize) -> Result<Self, EmbedError> {
        Self::load_graph(files, threads, false)
    }

    fn load_graph(files: &ModelFiles, threads: usize, rewrite: bool) -> Result<Self, EmbedError> {
        let model_path = files.path(MODEL_ONNX.0);
        let model = crate::files::read_checked(&model_path, "the ONNX model", MODEL_ONNX.1)?;
        for (what, (name, sha)) in [
            ("the tokenizer", TOKENIZER),
            ("the ONNX Runtime library", ONNXRUNTIME),
        ] {
            crate::files::check(&files.path(name), what, sha)?;
        }
        let env = environment(files)?;
        let rt = |e: ort::Error| EmbedError::Runtime(e.to_string());
        let session = Session::builder(&env)
            .map_err(rt)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| EmbedError::Runtime(e.to_string()))?
            .with_intra_threads(threads.max(1))
            .map_err(|e| EmbedError::Runtime(e.to_string()))?
            // Spinning workers burn the cores that HTTP handlers and other processes need while
            // they wait for work; on a shared box that slowed everything down many times over.
            .with_intra_op_spinning(false)
            .map_err(|e| EmbedError::Runtime(e.to_string()))?
            // Inputs vary in batch size and length: ONNX Runtime's arena would keep the
            // largest batch's activations (and a memory pattern per shape) for good. Freed
            // tensors go back to the C heap instead, which stays small because every pass
            // runs on the batcher's one thread (see `batcher.rs`) and is trimmed when idle.
            .with_memory_pattern(false)
            .map_err(|e| EmbedError::Runtime(e.to_string()))?
            .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(false).build()])
            .map_err(|e| EmbedError::Runtime(e.to_string()))?
            .commit_from_memory(&prepared(model, &model_path, rewrite)?)
            .map_err(rt)?;
        let inputs = session
            .inputs()
            .iter()
            .map(|i| i.name().to_owned())
            .collect();
        Ok(Self {
            session: Mutex::new(session),
            tokenizer: Arc::new(TextTokenizer::load(&files.path(TOKENIZER.0))?),
            inputs,
        })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> Arc<TextTokenizer> {
        self.tokenizer.clone()
    }
}

impl BatchModel for OnnxMiniLm {
    fn model(&self) -> &str {
        MODEL_ID
    }

    fn dims(&self) -> usize {
        DIMS
    }

    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.tokenizer.encode_each(texts)?;
        let lens: Vec<usize> = rows.iter().map(Vec::len).collect();
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for group in length_groups(&lens, PADDING_SLACK) {
            let refs: Vec<&[u32]> = group.iter().map(|&i| rows[i].as_slice()).collect();
            let vectors = self.run(&pad(&refs))?;
            for (i, v) in group.into_iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}

/// The model file's bytes (read from `path`), with the embedding lookups rewritten when
/// `rewrite` is set and the graph has them.
fn prepared(bytes: Vec<u8>, path: &Path, rewrite: bool) -> Result<Vec<u8>, EmbedError> {
    if !rewrite {
        return Ok(bytes);
    }
    match crate::graph::gather_before_dequantize(&bytes) {
        Ok(Some((rewritten, lookups))) => {
            tracing::debug!(
                lookups,
                "embedding lookups gather int8 rows before dequantizing"
            );
            Ok(rewritten)
        }
        Ok(None) => Ok(bytes),
        Err(e) => Err(EmbedError::Runtime(format!(
            "{} is not a readable ONNX model: {e}",
            path.display()
        ))),
    }
}

/// Padding allowed per length group, as a fraction of its real tokens.
const PADDING_SLACK: f64 = 0.25;

impl OnnxMiniLm {
    fn run(&self, enc: &EncodedBatch) -> Result<Vec<Vec<f32>>, EmbedError> {
        let rt = |e: ort::Error| EmbedError::Runtime(e.to_string());
        let shape = [enc.batch, enc.len];
        let mut feeds = Vec::with_capacity(3);
        for name in &self.inputs {
            let data = match name.as_str() {
                "input_ids" => enc.ids.clone(),
                "attention_mask" => enc.mask.clone(),
                "token_type_ids" => enc.type_ids.clone(),
                other => {
                    return Err(EmbedError::Runtime(format!(
                        "unexpected model input {other}"
                    )));
                }
            };
            feeds.push((
                name.clone(),
                Tensor::from_array((shape, data)).map_err(rt)?.into_dyn(),
            ));
        }
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session.run(feeds).map_err(rt)?;
        let (out_shape, hidden) = outputs[0].try_extract_tensor::<f32>().map_err(rt)?;
        let dims = out_shape.last().copied().unwrap_or(0) as usize;
        if dims != DIMS || hidden.len() != enc.batch * enc.len * DIMS {
            return Err(EmbedError::Runtime(format!(
                "unexpected output shape {out_shape:?}"
            )));
        }
        Ok(mean_pool_normalise(
            hidden, &enc.mask, enc.batch, enc.len, DIMS,
        ))
    }
}

/// Mean of the token vectors under the attention mask, then L2 normalisation.
fn mean_pool_normalise(
    hidden: &[f32],
    mask: &[i64],
    batch: usize,
    len: usize,
    dims: usize,
) -> Vec<Vec<f32>> {
    (0..batch)
        .map(|b| {
            let mut v = vec![0f32; dims];
            let mut n = 0f32;
            for t in 0..len {
                if mask[b * len + t] == 0 {
                    continue;
                }
                n += 1.0;
                let row = &hidden[(b * len + t) * dims..(b * len + t + 1) * dims];
                for (acc, x) in v.iter_mut().zip(row) {
                    *acc += x;
                }
            }
            let n = n.max(1e-9);
            v.iter_mut().for_each(|x| *x /= n);
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x /= norm);
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_ignores_padding_and_normalises() {
        // batch 1, len 3 (last is padding), dims 2
        let hidden = [1.0, 0.0, 3.0, 0.0, 100.0, 100.0];
        let out = mean_pool_normalise(&hidden, &[1, 1, 0], 1, 3, 2);
        assert_eq!(out, vec![vec![1.0, 0.0]]);
    }
}
