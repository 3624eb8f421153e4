//! The BERT forward pass and sentence-transformers pooling for one batch.

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;

use super::bert::Bert;
use super::gemm::{Blas, Precision};
use tokenizers::{Tokenizer, TruncationParams};

use super::{EmbedError, ModelFiles};
use crate::signal::EMBEDDING_DIM;

/// sentence-transformers' `max_seq_length` for all-MiniLM-L6-v2 (special tokens included).
pub const MAX_TOKENS: usize = 256;

/// all-MiniLM-L6-v2: tokenizer plus BERT, on the CPU.
pub struct MiniLm {
    bert: Bert,
    tokenizer: Tokenizer,
}

impl MiniLm {
    pub fn load(
        files: &ModelFiles,
        blas: Option<Blas>,
        precision: Precision,
    ) -> Result<Self, EmbedError> {
        if precision == Precision::Bf16 && !blas.is_some_and(|b| b.has_bf16()) {
            return Err(EmbedError::NoBf16Product);
        }
        let config: Config =
            serde_json::from_slice(&files.config_json).map_err(EmbedError::Config)?;
        let mut tokenizer = Tokenizer::from_bytes(&files.tokenizer_json)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        // tokenizer.json ships with fixed padding to 128 and truncation at 128;
        // sentence-transformers truncates at 256 and pads per batch.
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        let vb = VarBuilder::from_slice_safetensors(
            &files.weights_safetensors,
            DType::F32,
            &Device::Cpu,
        )?;
        let bert = Bert::load(vb, &config, blas, precision)?;
        Ok(MiniLm { bert, tokenizer })
    }

    /// Token ids of one text, with [CLS]/[SEP], truncated to [`MAX_TOKENS`].
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Embeds already-tokenized texts in one forward pass: mean pooling over
    /// each text's tokens, then unit length (sentence-transformers' pooling).
    pub fn forward(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let packed = self.bert.forward(batch)?;
        let rows = packed
            .starts
            .windows(2)
            .map(|w| pool(&packed.rows[w[0] * EMBEDDING_DIM..w[1] * EMBEDDING_DIM]))
            .collect();
        Ok(rows)
    }
}

/// The unit-length mean of a text's token rows (a zero vector for none).
fn pool(rows: &[f32]) -> Vec<f32> {
    let mut mean = vec![0f32; EMBEDDING_DIM];
    let tokens = rows.len() / EMBEDDING_DIM;
    for row in rows.chunks_exact(EMBEDDING_DIM) {
        mean.iter_mut().zip(row).for_each(|(m, x)| *m += x);
    }
    let count = (tokens as f32).max(1e-9);
    mean.iter_mut().for_each(|m| *m /= count);
    let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    mean.iter_mut().for_each(|m| *m /= norm);
    mean
}
