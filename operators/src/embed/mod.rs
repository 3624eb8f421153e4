//! Sentence embeddings with all-MiniLM-L6-v2 on candle, computed exactly as
//! sentence-transformers does: WordPiece tokens truncated to 256, BERT forward,
//! mean pooling over the attention mask, L2 normalization.
//!
//! The model is handed in as bytes ([`ModelFiles`]): reading files is the
//! caller's business, so this module stays free of I/O.

mod batcher;
mod bert;
mod cache;
mod gemm;
mod model;

pub use batcher::{padded_width, BatchPlan, Embedder, EmbedderOptions, WIDTH_QUANTUM};
pub use cache::EmbeddingCache;
pub use gemm::{Blas, CblasSgemm};
pub use model::MiniLm;

/// The three files of a sentence-transformers model folder, as bytes.
pub struct ModelFiles {
    pub config_json: Vec<u8>,
    pub tokenizer_json: Vec<u8>,
    pub weights_safetensors: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("the model's config.json is not a BERT config ({0}); point model_dir at an all-MiniLM-L6-v2 folder")]
    Config(#[source] serde_json::Error),
    #[error("the model's tokenizer.json could not be loaded ({0}); re-run scripts/setup.sh to restore it")]
    Tokenizer(String),
    #[error("the model weights could not be loaded or run ({0}); re-run scripts/setup.sh to restore model.safetensors")]
    Candle(#[from] candle_core::Error),
}

/// Cosine similarity of two vectors of the same length (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

/// Dot product; equals cosine for the unit vectors the embedder returns.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Dot product in eight interleaved partial sums, which the compiler turns
/// into SIMD (a plain `sum` must keep its order and stays scalar). The result
/// differs from [`dot`] in the last bits but is the same on every run.
#[inline]
pub fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `dot_lanes` of an f32 vector with an f64 one, in f64.
#[inline]
pub fn dot_lanes_f64(a: &[f32], b: &[f64]) -> f64 {
    let mut acc = [0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| *x as f64 * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..4 {
            acc[i] += x[i] as f64 * y[i];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// [`dot_lanes_f64`] of `a` with `b` and with `c`, in one pass; each result
/// is bit-identical to its own [`dot_lanes_f64`] (same operations, same order).
#[inline]
pub fn dot2_lanes_f64(a: &[f32], b: &[f64], c: &[f64]) -> (f64, f64) {
    let (mut acc_b, mut acc_c) = ([0f64; 4], [0f64; 4]);
    let (ca, cb, cc) = (a.chunks_exact(4), b.chunks_exact(4), c.chunks_exact(4));
    let tail = |r: &[f64]| -> f64 {
        ca.remainder()
            .iter()
            .zip(r)
            .map(|(x, y)| *x as f64 * y)
            .sum()
    };
    let (tail_b, tail_c) = (tail(cb.remainder()), tail(cc.remainder()));
    for ((x, y), z) in ca.clone().zip(cb).zip(cc) {
        for i in 0..4 {
            let xi = x[i] as f64;
            acc_b[i] += xi * y[i];
            acc_c[i] += xi * z[i];
        }
    }
    (
        acc_b.iter().sum::<f64>() + tail_b,
        acc_c.iter().sum::<f64>() + tail_c,
    )
}

/// Scales `v` to unit length in place (leaves the zero vector alone).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 1e-12 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}
