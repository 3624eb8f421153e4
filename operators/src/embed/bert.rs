//! A BERT encoder forward pass written for throughput on the CPU.
//!
//! candle-transformers' `BertModel` runs every linear layer as a batched
//! matmul over (batch, tokens, hidden) with the weight broadcast per sequence:
//! for short signal texts that is dozens of tiny matrix products of 10-20 rows.
//! Here the token dimension is flattened so each layer is one large product
//! over all tokens of the batch, the query/key/value projections are fused
//! into a single product, weights are transposed once at load, and GELU runs
//! in parallel. Same arithmetic as BERT; same results as sentence-transformers
//! (see tests/embedding_reference.rs).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;

struct Dense {
    /// (in, out), contiguous.
    weight_t: Tensor,
    bias: Tensor,
}

impl Dense {
    fn load(vb: &VarBuilder, prefix: &str, d_in: usize, d_out: usize) -> candle_core::Result<Self> {
        let w = vb.get((d_out, d_in), &format!("{prefix}.weight"))?;
        Ok(Dense {
            weight_t: w.t()?.contiguous()?,
            bias: vb.get(d_out, &format!("{prefix}.bias"))?,
        })
    }

    fn fused(parts: &[Dense]) -> candle_core::Result<Self> {
        let ws: Vec<&Tensor> = parts.iter().map(|p| &p.weight_t).collect();
        let bs: Vec<&Tensor> = parts.iter().map(|p| &p.bias).collect();
        Ok(Dense {
            weight_t: Tensor::cat(&ws, 1)?.contiguous()?,
            bias: Tensor::cat(&bs, 0)?,
        })
    }

    /// x: (n, in) -> (n, out)
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight_t)?.broadcast_add(&self.bias)
    }
}

struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl Norm {
    fn load(vb: &VarBuilder, prefix: &str, d: usize, eps: f64) -> candle_core::Result<Self> {
        Ok(Norm {
            weight: vb.get(d, &format!("{prefix}.weight"))?,
            bias: vb.get(d, &format!("{prefix}.bias"))?,
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps)
    }
}

struct Layer {
    qkv: Dense,
    attn_out: Dense,
    attn_norm: Norm,
    intermediate: Dense,
    output: Dense,
    out_norm: Norm,
}

pub struct Bert {
    word: candle_nn::Embedding,
    position: Tensor,
    token_type0: Tensor,
    emb_norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    hidden: usize,
}

impl Bert {
    pub fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        let h = cfg.hidden_size;
        let word = candle_nn::embedding(cfg.vocab_size, h, vb.pp("embeddings.word_embeddings"))?;
        let position = vb.get((cfg.max_position_embeddings, h), "embeddings.position_embeddings.weight")?;
        let token_types = vb.get((cfg.type_vocab_size, h), "embeddings.token_type_embeddings.weight")?;
        let emb_norm = Norm::load(&vb, "embeddings.LayerNorm", h, cfg.layer_norm_eps)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let q = Dense::load(&vb, &format!("{p}.attention.self.query"), h, h)?;
            let k = Dense::load(&vb, &format!("{p}.attention.self.key"), h, h)?;
            let v = Dense::load(&vb, &format!("{p}.attention.self.value"), h, h)?;
            layers.push(Layer {
                qkv: Dense::fused(&[q, k, v])?,
                attn_out: Dense::load(&vb, &format!("{p}.attention.output.dense"), h, h)?,
                attn_norm: Norm::load(&vb, &format!("{p}.attention.output.LayerNorm"), h, cfg.layer_norm_eps)?,
                intermediate: Dense::load(&vb, &format!("{p}.intermediate.dense"), h, cfg.intermediate_size)?,
                output: Dense::load(&vb, &format!("{p}.output.dense"), cfg.intermediate_size, h)?,
                out_norm: Norm::load(&vb, &format!("{p}.output.LayerNorm"), h, cfg.layer_norm_eps)?,
            });
        }
        Ok(Bert {
            word,
            position,
            token_type0: token_types.get(0)?,
            emb_norm,
            layers,
            heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
            hidden: h,
        })
    }

    /// ids, mask: (b, t) u32. Returns hidden states (b, t, hidden).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let n = b * t;
        let h = self.hidden;
        let words = self.word.forward(&ids.flatten_all()?)?; // (n, h)
        let pos = self.position.narrow(0, 0, t)?; // (t, h)
        let x = words
            .reshape((b, t, h))?
            .broadcast_add(&pos)?
            .broadcast_add(&self.token_type0)?
            .reshape((n, h))?;
        let mut x = self.emb_norm.forward(&x)?;
        // Additive mask: 0 for tokens, a large negative for padding. (b, 1, 1, t)
        let neg = ((mask.to_dtype(DType::F32)? - 1.0)? * f32::MAX as f64)?;
        let neg = neg.reshape((b, 1, 1, t))?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        for layer in &self.layers {
            let qkv = layer.qkv.forward(&x)?; // (n, 3h)
            let qkv = qkv.reshape((b, t, 3, self.heads, self.head_dim))?.permute((2, 0, 3, 1, 4))?; // (3, b, heads, t, d)
            let q = (qkv.get(0)?.contiguous()? * scale)?;
            let k = qkv.get(1)?.contiguous()?;
            let v = qkv.get(2)?.contiguous()?;
            let scores = q.matmul(&k.t()?)?.broadcast_add(&neg)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let ctx = probs.matmul(&v)?.permute((0, 2, 1, 3))?.reshape((n, h))?; // (n, h)
            let attn = layer.attn_out.forward(&ctx)?;
            x = layer.attn_norm.forward(&(attn + &x)?)?;
            let inter = gelu_erf_parallel(&layer.intermediate.forward(&x)?)?;
            let out = layer.output.forward(&inter)?;
            x = layer.out_norm.forward(&(out + &x)?)?;
        }
        x.reshape((b, t, h))
    }
}

/// GELU (erf form, as BERT uses), over all cores: candle's elementwise ops run
/// on one thread, and this is the largest one in the model.
fn gelu_erf_parallel(x: &Tensor) -> candle_core::Result<Tensor> {
    let shape = x.shape().clone();
    let mut data = x.flatten_all()?.to_vec1::<f32>()?;
    let threads = candle_core::utils::get_num_threads().max(1);
    let chunk = data.len().div_ceil(threads).max(4096);
    std::thread::scope(|s| {
        for part in data.chunks_mut(chunk) {
            s.spawn(move || {
                for v in part.iter_mut() {
                    let z = *v;
                    *v = 0.5 * z * (1.0 + libm::erff(z * std::f32::consts::FRAC_1_SQRT_2));
                }
            });
        }
    });
    Tensor::from_vec(data, shape, &Device::Cpu)
}

