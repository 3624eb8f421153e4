//! Embeds whatever is pending in as few forward passes as possible: texts are
//! tokenized, served from the cache when seen before, sorted by token length,
//! and cut into batches by a text count and a token budget.

use std::collections::HashMap;

use super::gemm::{Blas, Precision};
use super::model::MiniLm;
use super::{EmbedError, EmbeddingCache, ModelFiles};

#[derive(Clone, Debug)]
pub struct EmbedderOptions {
    /// Most texts in one forward pass.
    pub max_batch: usize,
    /// Most tokens (the texts' lengths summed) in one forward pass; bounds
    /// memory for long texts while letting short ones batch widely.
    pub max_batch_tokens: usize,
    /// Texts kept in the content-hash cache (0 disables it).
    pub cache_capacity: usize,
    /// A host BLAS for the dense layers; candle's gemm when `None`.
    pub blas: Option<Blas>,
    /// The dense products' number format; [`Precision::Bf16`] needs `blas`
    /// with a bf16 product.
    pub precision: Precision,
}

impl Default for EmbedderOptions {
    fn default() -> Self {
        EmbedderOptions {
            max_batch: 128,
            max_batch_tokens: 16_384,
            cache_capacity: 100_000,
            blas: None,
            precision: Precision::F32,
        }
    }
}

/// How a set of token sequences is cut into forward passes: each batch lists
/// indices into the input, sorted by length.
#[derive(Debug, PartialEq, Eq)]
pub struct BatchPlan {
    pub batches: Vec<Vec<usize>>,
}

impl BatchPlan {
    /// Texts sorted by length (stable: equal lengths keep input order), cut
    /// into batches of at most `max_batch` texts and `max_batch_tokens`
    /// tokens (a text longer than the budget runs alone). Nothing is padded
    /// and a text's vector does not depend on its batch, so any cut gives
    /// the same vectors; sorting keeps each batch's attention work even.
    pub fn new(lengths: &[usize], max_batch: usize, max_batch_tokens: usize) -> BatchPlan {
        let mut order: Vec<usize> = (0..lengths.len()).collect();
        order.sort_by_key(|&i| lengths[i]);
        let mut batches = Vec::new();
        let mut current: Vec<usize> = Vec::new();
        let mut tokens = 0;
        for i in order {
            let full = current.len() >= max_batch.max(1) || tokens + lengths[i] > max_batch_tokens;
            if !current.is_empty() && full {
                batches.push(std::mem::take(&mut current));
                tokens = 0;
            }
            tokens += lengths[i];
            current.push(i);
        }
        if !current.is_empty() {
            batches.push(current);
        }
        BatchPlan { batches }
    }
}

pub struct Embedder {
    model: MiniLm,
    cache: EmbeddingCache,
    options: EmbedderOptions,
    forward_passes: u64,
}

impl Embedder {
    pub fn load(files: &ModelFiles, options: EmbedderOptions) -> Result<Self, EmbedError> {
        Ok(Embedder {
            model: MiniLm::load(files, options.blas, options.precision)?,
            cache: EmbeddingCache::new(options.cache_capacity),
            options,
            forward_passes: 0,
        })
    }

    /// Unit-length embeddings of `texts`, in input order.
    pub fn embed<S: AsRef<str>>(&mut self, texts: &[S]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        // Texts to run, each once: (cache key, token ids, every input index holding it).
        let mut pending: Vec<(u128, Vec<u32>, Vec<usize>)> = Vec::new();
        let mut pending_by_key: HashMap<u128, usize> = HashMap::new();
        for (i, text) in texts.iter().enumerate() {
            let key = EmbeddingCache::key(text.as_ref());
            if let Some(hit) = self.cache.get(key) {
                out[i] = Some(hit.clone());
            } else if let Some(&p) = pending_by_key.get(&key) {
                pending[p].2.push(i);
            } else {
                pending_by_key.insert(key, pending.len());
                pending.push((key, self.model.tokenize(text.as_ref())?, vec![i]));
            }
        }
        let lengths: Vec<usize> = pending.iter().map(|p| p.1.len()).collect();
        let plan = BatchPlan::new(
            &lengths,
            self.options.max_batch,
            self.options.max_batch_tokens,
        );
        for batch in &plan.batches {
            let seqs: Vec<&[u32]> = batch.iter().map(|&p| pending[p].1.as_slice()).collect();
            let vectors = self.model.forward(&seqs)?;
            self.forward_passes += 1;
            for (&p, v) in batch.iter().zip(vectors) {
                for &i in &pending[p].2 {
                    out[i] = Some(v.clone());
                }
                self.cache.insert(pending[p].0, v);
            }
        }
        Ok(out
            .into_iter()
            .map(|v| v.expect("every text embedded"))
            .collect())
    }

    /// Forward passes run so far (a batch of N texts is one pass).
    pub fn forward_passes(&self) -> u64 {
        self.forward_passes
    }

    pub fn cache(&self) -> &EmbeddingCache {
        &self.cache
    }

    pub fn model(&self) -> &MiniLm {
        &self.model
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_sorts_by_length_and_respects_budgets() {
        let plan = BatchPlan::new(&[5, 1, 3, 1, 9, 2], 2, 100);
        assert_eq!(plan.batches, vec![vec![1, 3], vec![5, 2], vec![0, 4]]);
        let plan = BatchPlan::new(&[50, 50, 50], 10, 120);
        assert_eq!(plan.batches, vec![vec![0, 1], vec![2]]);
        // A text over the token budget runs alone.
        let plan = BatchPlan::new(&[300, 4, 4], 10, 100);
        assert_eq!(plan.batches, vec![vec![1, 2], vec![0]]);
    }
}
