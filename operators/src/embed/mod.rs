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

pub use batcher::{BatchPlan, Embedder, EmbedderOptions};
pub use cache::EmbeddingCache;
pub use gemm::{
    bf16_bits, Blas, CblasGemmBf16, CblasSgemm, CblasSgemmCompute, CblasSgemmPack,
    CblasSgemmPackGetSize, MklSetNumThreadsLocal, PackedApi, Precision,
};
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
    #[error("model.precision = \"bf16\" needs Intel MKL with cblas_gemm_bf16bf16f32 (model.blas = \"auto\" or \"mkl\", MKL installed by scripts/setup.sh); set model.precision = \"f32\" otherwise")]
    NoBf16Product,
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

/// Partial sums of the f64 dots: four independent chains of four lanes, so
/// the adds overlap instead of each waiting on the last (one chain was
/// latency-bound: these dots run for every live idea on every tick).
const F64_LANES: usize = 16;

/// `dot_lanes` of an f32 vector with an f64 one, in f64: [`F64_LANES`]
/// partial sums, then the rest in order, then the partial sums in order.
/// The AVX2 path runs the same operations in the same order (no FMA), so
/// the result is bit-identical on every x86-64 CPU.
#[inline]
pub fn dot_lanes_f64(a: &[f32], b: &[f64]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { dot_f64_avx2(a, b) };
        }
    }
    dot_f64_body(a, b)
}

/// [`dot_lanes_f64`] of `a` with `b` and with `c`, in one pass; each result
/// is bit-identical to its own [`dot_lanes_f64`] (same operations, same order).
#[inline]
pub fn dot2_lanes_f64(a: &[f32], b: &[f64], c: &[f64]) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { dot2_f64_avx2(a, b, c) };
        }
    }
    dot2_f64_body(a, b, c)
}

/// [`dot_f64_body`] in AVX: the sixteen partial sums are four registers of
/// four f64 lanes, each f32 widened exactly, multiplied, then added (no FMA:
/// the same two roundings as the portable body), and summed in the same
/// order at the end. Written with intrinsics because the compiler kept the
/// portable body's conversions scalar, and these dots run for every live
/// idea on every tick.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_f64_avx2(a: &[f32], b: &[f64]) -> f64 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len()) / F64_LANES * F64_LANES;
    let mut acc = [_mm256_setzero_pd(); 4];
    let mut i = 0;
    while i < n {
        for (k, acc) in acc.iter_mut().enumerate() {
            let j = i + 4 * k;
            // SAFETY: j + 4 ≤ n ≤ both lengths.
            let x = _mm256_cvtps_pd(_mm_loadu_ps(a.as_ptr().add(j)));
            let y = _mm256_loadu_pd(b.as_ptr().add(j));
            *acc = _mm256_add_pd(*acc, _mm256_mul_pd(x, y));
        }
        i += F64_LANES;
    }
    let tail = f64_tail(&a[n..], &b[n..]);
    lanes_sum(&acc) + tail
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot2_f64_avx2(a: &[f32], b: &[f64], c: &[f64]) -> (f64, f64) {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len()).min(c.len()) / F64_LANES * F64_LANES;
    let mut acc_b = [_mm256_setzero_pd(); 4];
    let mut acc_c = [_mm256_setzero_pd(); 4];
    let mut i = 0;
    while i < n {
        for k in 0..4 {
            let j = i + 4 * k;
            // SAFETY: j + 4 ≤ n ≤ all three lengths.
            let x = _mm256_cvtps_pd(_mm_loadu_ps(a.as_ptr().add(j)));
            let y = _mm256_loadu_pd(b.as_ptr().add(j));
            let z = _mm256_loadu_pd(c.as_ptr().add(j));
            acc_b[k] = _mm256_add_pd(acc_b[k], _mm256_mul_pd(x, y));
            acc_c[k] = _mm256_add_pd(acc_c[k], _mm256_mul_pd(x, z));
        }
        i += F64_LANES;
    }
    let (tail_b, tail_c) = (f64_tail(&a[n..], &b[n..]), f64_tail(&a[n..], &c[n..]));
    (lanes_sum(&acc_b) + tail_b, lanes_sum(&acc_c) + tail_c)
}

/// The sixteen partial sums added in lane order, as the portable body does.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn lanes_sum(acc: &[std::arch::x86_64::__m256d; 4]) -> f64 {
    let mut lanes = [0f64; F64_LANES];
    for (k, v) in acc.iter().enumerate() {
        // SAFETY: 4k + 4 ≤ F64_LANES.
        std::arch::x86_64::_mm256_storeu_pd(lanes.as_mut_ptr().add(4 * k), *v);
    }
    lanes.iter().sum()
}

#[inline(always)]
fn dot_f64_body(a: &[f32], b: &[f64]) -> f64 {
    let mut acc = [0f64; F64_LANES];
    let (ca, cb) = (a.chunks_exact(F64_LANES), b.chunks_exact(F64_LANES));
    let tail = f64_tail(ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..F64_LANES {
            acc[i] += x[i] as f64 * y[i];
        }
    }
    acc.iter().sum::<f64>() + tail
}

#[inline(always)]
fn dot2_f64_body(a: &[f32], b: &[f64], c: &[f64]) -> (f64, f64) {
    let (mut acc_b, mut acc_c) = ([0f64; F64_LANES], [0f64; F64_LANES]);
    let (ca, cb, cc) = (
        a.chunks_exact(F64_LANES),
        b.chunks_exact(F64_LANES),
        c.chunks_exact(F64_LANES),
    );
    let (tail_b, tail_c) = (
        f64_tail(ca.remainder(), cb.remainder()),
        f64_tail(ca.remainder(), cc.remainder()),
    );
    for ((x, y), z) in ca.zip(cb).zip(cc) {
        for i in 0..F64_LANES {
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

#[inline(always)]
fn f64_tail(a: &[f32], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * y).sum()
}

/// Scales `v` to unit length in place (leaves the zero vector alone).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 1e-12 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 instantiation must give the portable body's bits: runs on
    /// different CPUs must materialize the same scores.
    #[test]
    fn f64_dots_are_bit_identical_with_and_without_avx2() {
        for len in [384, 400, 35, 23, 16, 5, 0] {
            let a: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.3)
                .collect();
            let b: Vec<f64> = (0..len)
                .map(|i| ((i * 53 % 97) as f64 - 48.0) / 3.1)
                .collect();
            let c: Vec<f64> = (0..len).map(|i| (i as f64).sin() * 1e3).collect();
            let portable = (dot_f64_body(&a, &b), dot2_f64_body(&a, &b, &c));
            let dispatched = (dot_lanes_f64(&a, &b), dot2_lanes_f64(&a, &b, &c));
            assert_eq!(portable.0.to_bits(), dispatched.0.to_bits(), "len {len}");
            assert_eq!(portable.1 .0.to_bits(), dispatched.1 .0.to_bits());
            assert_eq!(portable.1 .1.to_bits(), dispatched.1 .1.to_bits());
            assert_eq!(portable.1 .0.to_bits(), portable.0.to_bits());
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * y).sum();
            assert!((portable.0 - exact).abs() <= 1e-9 * exact.abs().max(1.0));
        }
    }
}
