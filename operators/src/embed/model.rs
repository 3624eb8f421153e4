//! The BERT forward pass and sentence-transformers pooling for one padded batch.

use candle_core::{DType, Device, Tensor};
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
    device: Device,
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
        let device = Device::Cpu;
        let vb =
            VarBuilder::from_slice_safetensors(&files.weights_safetensors, DType::F32, &device)?;
        let bert = Bert::load(vb, &config, blas, precision)?;
        Ok(MiniLm {
            bert,
            tokenizer,
            device,
        })
    }

    /// Token ids of one text, with [CLS]/[SEP], truncated to [`MAX_TOKENS`].
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Embeds already-tokenized texts in one forward pass, padded to `width`
    /// (at least the longest sequence).
    pub fn forward(&self, batch: &[&[u32]], width: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let width = width
            .max(batch.iter().map(|ids| ids.len()).max().unwrap_or(0))
            .max(1);
        let mut ids = Vec::with_capacity(batch.len() * width);
        let mut mask = Vec::with_capacity(batch.len() * width);
        for seq in batch {
            ids.extend_from_slice(seq);
            ids.extend(std::iter::repeat_n(0u32, width - seq.len()));
            mask.extend(std::iter::repeat_n(1u32, seq.len()));
            mask.extend(std::iter::repeat_n(0u32, width - seq.len()));
        }
        let shape = (batch.len(), width);
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        let hidden = self.bert.forward(&ids, &mask)?; // (b, t, 384)
                                                      // Mean pooling over real tokens only.
        let maskf = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (b, t, 1)
        let summed = hidden.broadcast_mul(&maskf)?.sum(1)?; // (b, 384)
        let counts = maskf.sum(1)?.clamp(1e-9, f64::MAX)?; // (b, 1)
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        let unit = mean.broadcast_div(&norms)?;
        let rows = unit.to_vec2::<f32>()?;
        debug_assert!(rows.iter().all(|r| r.len() == EMBEDDING_DIM));
        Ok(rows)
    }
}
