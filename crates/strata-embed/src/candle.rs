//! all-MiniLM-L6-v2 in f32 through candle: a pure-Rust BERT forward pass over the
//! `model.safetensors` weights. Slower than the int8 ONNX route, but exact; it is the
//! reference the ONNX model is checked against, and a fallback where ONNX Runtime cannot load.

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};

use crate::files::{ModelFiles, TOKENIZER};
use crate::onnx::{DIMS, MODEL_ID};
use crate::tokenizer::TextTokenizer;
use crate::{BatchModel, EmbedError};

/// The safetensors file.
pub const SAFETENSORS: (&str, &str) = (
    "model.safetensors",
    "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
);

const LAYERS: usize = 6;
const HEADS: usize = 12;
const HIDDEN: usize = 384;
const INTERMEDIATE: usize = 1536;
const VOCAB: usize = 30522;
const POSITIONS: usize = 512;
const EPS: f64 = 1e-12;

fn err(e: candle_core::Error) -> EmbedError {
    EmbedError::Runtime(format!("candle: {e}"))
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

/// The f32 model.
pub struct CandleMiniLm {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    tokenizer: std::sync::Arc<TextTokenizer>,
    device: Device,
}

impl CandleMiniLm {
    /// Loads the weights (checked against their pinned sha256) and the tokenizer.
    pub fn load(files: &ModelFiles) -> Result<Self, EmbedError> {
        let path = files.path(SAFETENSORS.0);
        files::check(&path, "the f32 weights", SAFETENSORS.1)?;
        files::check(&files.path(TOKENIZER.0), "the tokenizer", TOKENIZER.1)?;
        let device = Device::Cpu;
        let tensors = candle_core::safetensors::load(&path, &device).map_err(err)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let lin = |vb: VarBuilder<'_>, i, o| candle_nn::linear(i, o, vb).map_err(err);
        let norm = |vb: VarBuilder<'_>| candle_nn::layer_norm(HIDDEN, EPS, vb).map_err(err);
        let e = vb.pp("embeddings");
        let mut layers = Vec::with_capacity(LAYERS);
        for i in 0..LAYERS {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention");
            layers.push(Layer {
                query: lin(a.pp("self.query"), HIDDEN, HIDDEN)?,
                key: lin(a.pp("self.key"), HIDDEN, HIDDEN)?,
                value: lin(a.pp("self.value"), HIDDEN, HIDDEN)?,
                attn_out: lin(a.pp("output.dense"), HIDDEN, HIDDEN)?,
                attn_norm: norm(a.pp("output.LayerNorm"))?,
                intermediate: lin(l.pp("intermediate.dense"), HIDDEN, INTERMEDIATE)?,
                output: lin(l.pp("output.dense"), INTERMEDIATE, HIDDEN)?,
                out_norm: norm(l.pp("output.LayerNorm"))?,
            });
        }
        Ok(Self {
            word: candle_nn::embedding(VOCAB, HIDDEN, e.pp("word_embeddings")).map_err(err)?,
            position: candle_nn::embedding(POSITIONS, HIDDEN, e.pp("position_embeddings"))
                .map_err(err)?,
            token_type: candle_nn::embedding(2, HIDDEN, e.pp("token_type_embeddings"))
                .map_err(err)?,
            emb_norm: norm(e.pp("LayerNorm"))?,
            layers,
            tokenizer: std::sync::Arc::new(TextTokenizer::load(&files.path(TOKENIZER.0))?),
            device,
        })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> std::sync::Arc<TextTokenizer> {
        self.tokenizer.clone()
    }

    fn forward(&self, texts: &[String]) -> candle_core::Result<Vec<Vec<f32>>> {
        let enc = self
            .tokenizer
            .encode_batch(texts)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let (b, l) = (enc.batch, enc.len);
        let as_u32 = |v: &[i64]| v.iter().map(|&x| x as u32).collect::<Vec<u32>>();
        let ids = Tensor::from_vec(as_u32(&enc.ids), (b, l), &self.device)?;
        let types = Tensor::from_vec(as_u32(&enc.type_ids), (b, l), &self.device)?;
        let positions = Tensor::arange(0u32, l as u32, &self.device)?
            .unsqueeze(0)?
            .broadcast_as((b, l))?;
        let mask: Vec<f32> = enc.mask.iter().map(|&m| m as f32).collect();
        let mask = Tensor::from_vec(mask, (b, l), &self.device)?;
        // 0 where attended, a large negative number on padding: [b, 1, 1, l].
        let bias = ((mask.clone() - 1.0)? * 1e9)?.reshape((b, 1, 1, l))?;

        let mut x = (self.word.forward(&ids)? + self.position.forward(&positions)?)?;
        x = (x + self.token_type.forward(&types)?)?;
        x = self.emb_norm.forward(&x)?;
        let head = HIDDEN / HEADS;
        let scale = 1.0 / (head as f64).sqrt();
        for layer in &self.layers {
            let split = |t: Tensor| -> candle_core::Result<Tensor> {
                t.reshape((b, l, HEADS, head))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = split(layer.query.forward(&x)?)?;
            let k = split(layer.key.forward(&x)?)?;
            let v = split(layer.value.forward(&x)?)?;
            let scores =
                (q.matmul(&k.transpose(2, 3)?.contiguous()?)? * scale)?.broadcast_add(&bias)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let ctx = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b, l, HIDDEN))?;
            let attn = layer
                .attn_norm
                .forward(&(layer.attn_out.forward(&ctx)? + &x)?)?;
            let inter = layer.intermediate.forward(&attn)?.gelu_erf()?;
            x = layer
                .out_norm
                .forward(&(layer.output.forward(&inter)? + &attn)?)?;
        }
        // Mean over attended tokens, then L2 normalisation.
        let m = mask.unsqueeze(2)?;
        let summed = x.broadcast_mul(&m)?.sum(1)?;
        let counts = m.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .clamp(1e-12, f64::MAX)?;
        mean.broadcast_div(&norms)?.to_vec2::<f32>()
    }
}

impl BatchModel for CandleMiniLm {
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
        self.forward(texts).map_err(err)
    }
}

mod files {
    pub(super) use crate::files::check;
}
