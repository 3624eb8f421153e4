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

use super::gemm::{self, bf16_bits, Blas, Precision};

/// A dense layer's transposed weight, (in, out) contiguous, in the one form
/// its product reads: the dense weights are ~21 M floats, so keeping both
/// forms would cost ~85 MB per loaded model for nothing.
enum Weight {
    /// For candle's own matmul.
    Tensor(Tensor),
    /// For a host BLAS, as a plain buffer.
    Host(Blas, Vec<f32>),
    /// For a host BLAS's bf16 product, rounded once at load.
    HostBf16(Blas, Vec<u16>),
}

struct Dense {
    weight_t: Weight,
    bias: Tensor,
    bias_vec: Vec<f32>,
}

impl Dense {
    fn load(vb: &VarBuilder, prefix: &str, d_in: usize, d_out: usize) -> candle_core::Result<Self> {
        let w = vb.get((d_out, d_in), &format!("{prefix}.weight"))?;
        Self::new(
            w.t()?.contiguous()?,
            vb.get(d_out, &format!("{prefix}.bias"))?,
        )
    }

    fn new(weight_t: Tensor, bias: Tensor) -> candle_core::Result<Self> {
        Ok(Dense {
            bias_vec: bias.to_vec1()?,
            weight_t: Weight::Tensor(weight_t),
            bias,
        })
    }

    /// The layer with its weight moved to `blas`'s form, when there is one,
    /// in `precision`.
    fn for_blas(self, blas: Option<Blas>, precision: Precision) -> candle_core::Result<Self> {
        match (blas, self.weight_t, precision) {
            (Some(blas), Weight::Tensor(w), Precision::F32) => Ok(Dense {
                weight_t: Weight::Host(blas, w.flatten_all()?.to_vec1()?),
                ..self
            }),
            (Some(blas), Weight::Tensor(w), Precision::Bf16) => {
                let w: Vec<f32> = w.flatten_all()?.to_vec1()?;
                Ok(Dense {
                    weight_t: Weight::HostBf16(blas, w.into_iter().map(bf16_bits).collect()),
                    ..self
                })
            }
            (_, weight_t, _) => Ok(Dense { weight_t, ..self }),
        }
    }

    /// One layer from several over the same input (query, key and value),
    /// their outputs side by side. Fuse before [`Dense::for_blas`].
    fn fused(parts: &[Dense]) -> candle_core::Result<Self> {
        let ws = parts
            .iter()
            .map(|p| match &p.weight_t {
                Weight::Tensor(w) => Ok(w),
                Weight::Host(..) | Weight::HostBf16(..) => Err(candle_core::Error::Msg(
                    "dense layers are fused before their weights move to the host BLAS".into(),
                )),
            })
            .collect::<candle_core::Result<Vec<&Tensor>>>()?;
        let bs: Vec<&Tensor> = parts.iter().map(|p| &p.bias).collect();
        Self::new(Tensor::cat(&ws, 1)?.contiguous()?, Tensor::cat(&bs, 0)?)
    }

    /// x: (n, in) -> (n, out)
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.weight_t {
            Weight::Host(blas, w) => gemm::tensor(
                blas.dense(x, w, &self.bias_vec)?,
                x.dim(0)?,
                self.bias_vec.len(),
            ),
            Weight::HostBf16(blas, w) => gemm::tensor(
                blas.dense_bf16(x, w, &self.bias_vec)?,
                x.dim(0)?,
                self.bias_vec.len(),
            ),
            Weight::Tensor(w) => x.matmul(w)?.broadcast_add(&self.bias),
        }
    }

    /// gelu(x · w + bias), the feed-forward expansion.
    fn forward_gelu(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.weight_t {
            Weight::Host(blas, w) => {
                let mut out = blas.dense(x, w, &self.bias_vec)?;
                gelu_in_place(&mut out, self.bias_vec.len(), None);
                gemm::tensor(out, x.dim(0)?, self.bias_vec.len())
            }
            Weight::HostBf16(blas, w) => {
                let mut out = blas.dense_bf16(x, w, &self.bias_vec)?;
                gelu_in_place(&mut out, self.bias_vec.len(), None);
                gemm::tensor(out, x.dim(0)?, self.bias_vec.len())
            }
            Weight::Tensor(w) => {
                let shape = (x.dim(0)?, self.bias_vec.len());
                let mut out = x.matmul(w)?.flatten_all()?.to_vec1::<f32>()?;
                gelu_in_place(&mut out, self.bias_vec.len(), Some(&self.bias_vec));
                Tensor::from_vec(out, shape, &Device::Cpu)
            }
        }
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
    pub fn load(
        vb: VarBuilder,
        cfg: &Config,
        blas: Option<Blas>,
        precision: Precision,
    ) -> candle_core::Result<Self> {
        let h = cfg.hidden_size;
        let word = candle_nn::embedding(cfg.vocab_size, h, vb.pp("embeddings.word_embeddings"))?;
        let position = vb.get(
            (cfg.max_position_embeddings, h),
            "embeddings.position_embeddings.weight",
        )?;
        let token_types = vb.get(
            (cfg.type_vocab_size, h),
            "embeddings.token_type_embeddings.weight",
        )?;
        let emb_norm = Norm::load(&vb, "embeddings.LayerNorm", h, cfg.layer_norm_eps)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let q = Dense::load(&vb, &format!("{p}.attention.self.query"), h, h)?;
            let k = Dense::load(&vb, &format!("{p}.attention.self.key"), h, h)?;
            let v = Dense::load(&vb, &format!("{p}.attention.self.value"), h, h)?;
            layers.push(Layer {
                qkv: Dense::fused(&[q, k, v])?.for_blas(blas, precision)?,
                attn_out: Dense::load(&vb, &format!("{p}.attention.output.dense"), h, h)?
                    .for_blas(blas, precision)?,
                attn_norm: Norm::load(
                    &vb,
                    &format!("{p}.attention.output.LayerNorm"),
                    h,
                    cfg.layer_norm_eps,
                )?,
                intermediate: Dense::load(
                    &vb,
                    &format!("{p}.intermediate.dense"),
                    h,
                    cfg.intermediate_size,
                )?
                .for_blas(blas, precision)?,
                output: Dense::load(&vb, &format!("{p}.output.dense"), cfg.intermediate_size, h)?
                    .for_blas(blas, precision)?,
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
        let prof = std::env::var_os("PROF").is_some();
        let mut tm = std::time::Instant::now();
        let mut lap = |name: &str| {
            if prof {
                eprintln!("{name}: {:.3}ms", tm.elapsed().as_secs_f64() * 1e3);
            }
            tm = std::time::Instant::now();
        };
        lap("embed");
        for layer in &self.layers {
            let qkv = layer.qkv.forward(&x)?; // (n, 3h)
            lap("qkv");
            let qkv = qkv
                .reshape((b, t, 3, self.heads, self.head_dim))?
                .permute((2, 0, 3, 1, 4))?; // (3, b, heads, t, d)
            let q = (qkv.get(0)?.contiguous()? * scale)?;
            let k = qkv.get(1)?.contiguous()?;
            let v = qkv.get(2)?.contiguous()?;
            lap("split");
            let scores = q.matmul(&k.t()?)?.broadcast_add(&neg)?;
            lap("scores");
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            lap("softmax");
            let ctx = probs.matmul(&v)?.permute((0, 2, 1, 3))?.reshape((n, h))?; // (n, h)
            lap("ctx");
            let attn = layer.attn_out.forward(&ctx)?;
            lap("attn_out");
            x = layer.attn_norm.forward(&(attn + &x)?)?;
            lap("norm1");
            let inter = layer.intermediate.forward_gelu(&x)?;
            lap("inter+gelu");
            let out = layer.output.forward(&inter)?;
            lap("out");
            x = layer.out_norm.forward(&(out + &x)?)?;
            lap("norm2");
        }
        x.reshape((b, t, h))
    }
}

/// `gelu(x + bias)` in place (erf form, as BERT uses) over all cores:
/// candle's elementwise ops run on one thread and allocate per op, and this is
/// the largest elementwise step in the model.
fn gelu_in_place(data: &mut [f32], width: usize, bias: Option<&[f32]>) {
    let threads = candle_core::utils::get_num_threads().max(1);
    let rows_per = (data.len() / width).div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for part in data.chunks_mut(rows_per * width) {
            s.spawn(move || {
                for row in part.chunks_exact_mut(width) {
                    match bias {
                        Some(b) => row.iter_mut().zip(b).for_each(|(v, b)| *v = gelu(*v + b)),
                        None => row.iter_mut().for_each(|v| *v = gelu(*v)),
                    }
                }
            });
        }
    });
}

#[inline(always)]
fn gelu(z: f32) -> f32 {
    0.5 * z * (1.0 + erf(z * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf for f32 as a rational approximation on [-4, 4] (the one Eigen and
/// TensorFlow use for float): branch-free, so the loop above vectorizes;
/// absolute error below 1e-6, a few ulps (tested against libm).
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906_3e-4;
    p = p * x2 + -2.9546e-3;
    p = p * x2 + -1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329e-3;
    q = q * x2 + -1.426_474e-2;
    x * p / q
}

#[cfg(test)]
mod tests {
    #[test]
    fn fast_erf_matches_libm() {
        let mut worst = 0f32;
        for i in -100_000..=100_000 {
            let x = i as f32 / 10_000.0;
            worst = worst.max((super::erf(x) - libm::erff(x)).abs());
        }
        assert!(worst < 1e-6, "max error {worst}");
    }
}
