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

use candle_core::{Device, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;

use super::gemm::{bf16_bits, Blas, PackedWeight, Precision};

/// A dense layer's transposed weight, (in, out) contiguous, in the one form
/// its product reads: the dense weights are ~21 M floats, so keeping both
/// forms would cost ~85 MB per loaded model for nothing.
enum Weight {
    /// For candle's own matmul.
    Tensor(Tensor),
    /// For a host BLAS, as a plain buffer.
    Host(Blas, Vec<f32>),
    /// For a host BLAS that packs weights once (MKL), packed.
    HostPacked(Blas, PackedWeight),
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
            (Some(blas), Weight::Tensor(w), Precision::F32) => {
                let (k, m) = w.dims2()?;
                let plain: Vec<f32> = w.flatten_all()?.to_vec1()?;
                let weight_t = match blas.pack(&plain, k, m) {
                    Some(packed) => Weight::HostPacked(blas, packed),
                    None => Weight::Host(blas, plain),
                };
                Ok(Dense { weight_t, ..self })
            }
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
                Weight::Host(..) | Weight::HostPacked(..) | Weight::HostBf16(..) => {
                    Err(candle_core::Error::Msg(
                        "dense layers are fused before their weights move to the host BLAS".into(),
                    ))
                }
            })
            .collect::<candle_core::Result<Vec<&Tensor>>>()?;
        let bs: Vec<&Tensor> = parts.iter().map(|p| &p.bias).collect();
        Self::new(Tensor::cat(&ws, 1)?.contiguous()?, Tensor::cat(&bs, 0)?)
    }

    /// x: (n, in) row-major -> `out` (n, out), replacing what it held.
    fn forward(&self, x: &[f32], n: usize, out: &mut Vec<f32>) -> candle_core::Result<()> {
        match &self.weight_t {
            Weight::Host(blas, w) => blas.dense(x, n, w, &self.bias_vec, out),
            Weight::HostPacked(blas, w) => blas.dense_packed(x, n, w, &self.bias_vec, out),
            Weight::HostBf16(blas, w) => blas.dense_bf16(x, n, w, &self.bias_vec, out)?,
            Weight::Tensor(w) => {
                let x = Tensor::from_slice(x, (n, x.len() / n.max(1)), &Device::Cpu)?;
                *out = x
                    .matmul(w)?
                    .broadcast_add(&self.bias)?
                    .flatten_all()?
                    .to_vec1()?;
            }
        }
        Ok(())
    }

    /// `out` = gelu(x · w + bias), the feed-forward expansion.
    fn forward_gelu(&self, x: &[f32], n: usize, out: &mut Vec<f32>) -> candle_core::Result<()> {
        let width = self.bias_vec.len();
        match &self.weight_t {
            Weight::Host(..) | Weight::HostPacked(..) | Weight::HostBf16(..) => {
                self.forward(x, n, out)?;
                gelu_in_place(out, width, None);
            }
            Weight::Tensor(w) => {
                let x = Tensor::from_slice(x, (n, x.len() / n.max(1)), &Device::Cpu)?;
                *out = x.matmul(w)?.flatten_all()?.to_vec1::<f32>()?;
                gelu_in_place(out, width, Some(&self.bias_vec));
            }
        }
        Ok(())
    }
}

/// A layer norm's parameters, as plain floats: it runs row by row on the
/// packed token rows.
struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl Norm {
    fn load(vb: &VarBuilder, prefix: &str, d: usize, eps: f64) -> candle_core::Result<Self> {
        Ok(Norm {
            weight: vb.get(d, &format!("{prefix}.weight"))?.to_vec1()?,
            bias: vb.get(d, &format!("{prefix}.bias"))?.to_vec1()?,
            eps: eps as f32,
        })
    }

    /// `row = norm(row + add)` (`add` empty: `norm(row)`).
    #[inline(always)]
    fn apply(&self, row: &mut [f32], add: &[f32]) {
        if !add.is_empty() {
            row.iter_mut().zip(add).for_each(|(x, a)| *x += *a);
        }
        let n = row.len() as f32;
        let mean = lane_sum(row, |x| x) / n;
        let var = lane_sum(row, |x| (x - mean) * (x - mean)) / n;
        let inv = 1.0 / (var + self.eps).sqrt();
        for ((x, w), b) in row.iter_mut().zip(&self.weight).zip(&self.bias) {
            *x = (*x - mean) * inv * w + b;
        }
    }

    /// [`Norm::apply`] to each row of `x` with the matching row of `add` (or
    /// none), 16 wide where the CPU has AVX-512, 8 with AVX2 (detected at run
    /// time), 4 elsewhere: the same operations in the same order each way
    /// (no fused multiply-adds), so the same results.
    fn apply_each(&self, x: &mut [f32], add: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F (checked just above).
                return unsafe { self.apply_each_avx512(x, add) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2 (checked just above).
                return unsafe { self.apply_each_avx2(x, add) };
            }
        }
        self.apply_each_body(x, add)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn apply_each_avx512(&self, x: &mut [f32], add: &[f32]) {
        self.apply_each_body(x, add)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn apply_each_avx2(&self, x: &mut [f32], add: &[f32]) {
        self.apply_each_body(x, add)
    }

    #[inline(always)]
    fn apply_each_body(&self, x: &mut [f32], add: &[f32]) {
        let width = self.weight.len();
        for (i, row) in x.chunks_exact_mut(width).enumerate() {
            let a = if add.is_empty() {
                add
            } else {
                &add[i * width..][..width]
            };
            self.apply(row, a);
        }
    }

    /// [`Norm::apply`] to every row of `x` (width `self.weight.len()`), with
    /// the matching row of `add` (or none), over the cores for large batches.
    fn apply_rows(&self, x: &mut [f32], add: &[f32]) {
        let width = self.weight.len();
        let rows = x.len() / width;
        let threads = threads_for(rows * width);
        if threads == 1 {
            return self.apply_each(x, add);
        }
        let per = rows.div_ceil(threads).max(1) * width;
        std::thread::scope(|s| {
            for (k, chunk) in x.chunks_mut(per).enumerate() {
                let a = if add.is_empty() {
                    add
                } else {
                    &add[k * per..][..chunk.len()]
                };
                s.spawn(move || self.apply_each(chunk, a));
            }
        });
    }
}

/// The sum of `f` of each value over eight running lanes (value `i` into
/// lane `i % 8`, in order): the order is fixed, so the result is too, and
/// the loop vectorizes.
#[inline(always)]
fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += f(*v);
        }
    }
    for (lane, v) in lanes.iter_mut().zip(chunks.remainder()) {
        *lane += f(*v);
    }
    ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
        + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
}

/// Below this many floats a step runs on the calling thread: starting the
/// others costs more than they save.
const PARALLEL_MIN_FLOATS: usize = 1 << 16;

std::thread_local! {
    /// Set on the threads that each run a part of a split batch: their
    /// steps stay on their own core.
    static ONE_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Keeps the current thread's steps on it until dropped (also when a
/// step panics: the thread may run other batches after).
struct OneThread(bool);

impl OneThread {
    fn enter() -> Self {
        OneThread(ONE_THREAD.replace(true))
    }
}

impl Drop for OneThread {
    fn drop(&mut self) {
        ONE_THREAD.set(self.0);
    }
}

/// Threads for an elementwise step over `floats` values.
fn threads_for(floats: usize) -> usize {
    if floats < PARALLEL_MIN_FLOATS || ONE_THREAD.get() {
        1
    } else {
        candle_core::utils::get_num_threads().max(1)
    }
}

/// A batch with fewer tokens than this per thread runs whole, its products
/// and steps spread over the threads; a larger one is split into one part
/// per thread, each run start to end on one core.
const SPLIT_MIN_TOKENS_PER_THREAD: usize = 48;

/// Cuts items `0..count` into `parts` (at most `count`) contiguous runs of
/// about equal total `weight`, each with at least one item; returns the
/// runs' bounds (`parts + 1` of them).
fn even_runs(count: usize, parts: usize, weight: impl Fn(usize) -> usize) -> Vec<usize> {
    let total: usize = (0..count).map(&weight).sum();
    let mut cuts = Vec::with_capacity(parts + 1);
    cuts.push(0);
    let mut acc = 0;
    for i in 0..count {
        acc += weight(i);
        if cuts.len() == parts {
            break;
        }
        // Each part after this cut needs an item of its own.
        let left = count - (i + 1);
        let parts_left = parts - cuts.len();
        if left == parts_left || (left > parts_left && acc * parts >= total * cuts.len()) {
            cuts.push(i + 1);
        }
    }
    cuts.push(count);
    cuts
}

/// The buffers a forward pass's products write into, reused from layer to
/// layer and, on each thread, from batch to batch: fresh buffers of a few
/// megabytes each are pages the kernel faults in and zeroes (page clearing
/// was ~3% of a one-thread profile at batch 32 before).
#[derive(Default)]
struct Scratch {
    /// Each token's query, key and value (n, 3h).
    qkv: Vec<f32>,
    /// The attention's context (n, h).
    ctx: Vec<f32>,
    /// A dense layer's output before it is added to the residual (n, h), or
    /// a feed-forward block's rows of it.
    dense: Vec<f32>,
    /// The feed-forward expansion of a block of rows (at most
    /// [`FEED_FORWARD_BLOCK_ROWS`], intermediate).
    inter: Vec<f32>,
}

impl Scratch {
    fn floats(&self) -> usize {
        self.qkv.capacity() + self.ctx.capacity() + self.dense.capacity() + self.inter.capacity()
    }
}

/// Rows of a feed-forward block: its expansion (256 × 1,536 floats, 1.5 MiB)
/// fits a core's L2 cache; MKL multiplies 128 rows and more as fast as more
/// (measured), and a row's result does not depend on the rows beside it.
const FEED_FORWARD_BLOCK_ROWS: usize = 256;

/// A thread keeps its scratch for the next batch up to this size (32 MiB:
/// a batch of 128 texts of ~15 tokens needs ~15); a longer batch's is given
/// back.
const SCRATCH_KEPT_FLOATS: usize = 8 << 20;

std::thread_local! {
    static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::new(Scratch::default());
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
    /// (max positions, hidden), row-major.
    position: Vec<f32>,
    token_type0: Vec<f32>,
    emb_norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    hidden: usize,
    /// The host BLAS when it can confine products to one thread: large
    /// batches are then split over the threads ([`Bert::forward`]).
    splits_on: Option<Blas>,
}

/// Where each text's rows are among a batch's packed token rows: text `i`
/// holds rows `starts[i]..starts[i + 1]`.
pub struct Packed {
    pub starts: Vec<usize>,
    /// (tokens, hidden), row-major.
    pub rows: Vec<f32>,
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
        let position = vb
            .get(
                (cfg.max_position_embeddings, h),
                "embeddings.position_embeddings.weight",
            )?
            .flatten_all()?
            .to_vec1()?;
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
            token_type0: token_types.get(0)?.to_vec1()?,
            emb_norm,
            layers,
            heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
            hidden: h,
            splits_on: blas.filter(Blas::controls_threads),
        })
    }

    /// The hidden states of every token of `batch` (token ids with [CLS] and
    /// [SEP], each at most the model's positions long), packed: no padding,
    /// so the dense layers multiply only real tokens and each text's
    /// attention runs over its own tokens alone. Every step but the dense
    /// products works on one row or one text at a time, and a product's row
    /// depends only on that row, so a text's states are the same whatever it
    /// is batched with.
    ///
    /// With several threads and a BLAS that can confine a product to one
    /// thread, a large batch is cut into one run of texts per thread, each
    /// run through every layer on its own core: the threads then meet once
    /// per batch instead of at each of the ~40 steps of a pass (measured in
    /// `benches/README.md`). The parts' states are the whole's, row for row.
    pub fn forward(&self, batch: &[&[u32]]) -> candle_core::Result<Packed> {
        let threads = candle_core::utils::get_num_threads().max(1);
        let tokens: usize = batch.iter().map(|s| s.len()).sum();
        let parts = threads.min(batch.len());
        let Some(blas) = self.splits_on else {
            return self.forward_whole(batch);
        };
        if parts < 2 || tokens < SPLIT_MIN_TOKENS_PER_THREAD * parts || ONE_THREAD.get() {
            return self.forward_whole(batch);
        }
        let cuts = even_runs(batch.len(), parts, |i| batch[i].len());
        let run_part = |part: &[&[u32]]| {
            blas.on_one_thread(|| {
                let _alone = OneThread::enter();
                self.forward_whole(part)
            })
        };
        let packed: Vec<candle_core::Result<Packed>> = std::thread::scope(|s| {
            let others: Vec<_> = cuts[1..]
                .windows(2)
                .map(|w| {
                    let part = &batch[w[0]..w[1]];
                    s.spawn(move || run_part(part))
                })
                .collect();
            let mut all = vec![run_part(&batch[..cuts[1]])];
            all.extend(others.into_iter().map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(candle_core::Error::Msg(
                        "a thread of the model's forward pass panicked".into(),
                    ))
                })
            }));
            all
        });
        let mut starts = Vec::with_capacity(batch.len() + 1);
        starts.push(0);
        let mut rows = Vec::with_capacity(tokens * self.hidden);
        for part in packed {
            let part = part?;
            let base = starts[starts.len() - 1];
            starts.extend(part.starts[1..].iter().map(|s| base + s));
            rows.extend_from_slice(&part.rows);
        }
        Ok(Packed { starts, rows })
    }

    /// [`Bert::forward`] of a whole batch at once.
    fn forward_whole(&self, batch: &[&[u32]]) -> candle_core::Result<Packed> {
        let h = self.hidden;
        let mut starts = Vec::with_capacity(batch.len() + 1);
        starts.push(0);
        for seq in batch {
            starts.push(starts[starts.len() - 1] + seq.len());
        }
        let n = starts[batch.len()];
        if n == 0 {
            return Ok(Packed {
                starts,
                rows: Vec::new(),
            });
        }
        let ids: Vec<u32> = batch.concat();
        let mut x: Vec<f32> = self
            .word
            .forward(&Tensor::from_vec(ids, n, &Device::Cpu)?)?
            .flatten_all()?
            .to_vec1()?;
        for (i, seq) in batch.iter().enumerate() {
            for p in 0..seq.len() {
                let row = &mut x[(starts[i] + p) * h..][..h];
                let pos = &self.position[p * h..][..h];
                for ((v, p), t) in row.iter_mut().zip(pos).zip(&self.token_type0) {
                    *v = (*v + p) + t;
                }
            }
        }
        self.emb_norm.apply_rows(&mut x, &[]);
        let mut scratch = SCRATCH.take();
        let Scratch {
            qkv,
            ctx,
            dense,
            inter,
        } = &mut scratch;
        for layer in &self.layers {
            layer.qkv.forward(&x, n, qkv)?; // (n, 3h)
            self.attention(qkv, &starts, ctx); // (n, h)
            layer.attn_out.forward(ctx, n, dense)?;
            layer.attn_norm.apply_rows(&mut x, dense);
            // The feed-forward is row by row: in blocks of rows, its widest
            // activations stay in the core's cache from the expansion through
            // the GELU to the product that reads them.
            for rows in x.chunks_mut(FEED_FORWARD_BLOCK_ROWS * h) {
                let block = rows.len() / h;
                layer.intermediate.forward_gelu(rows, block, inter)?;
                layer.output.forward(inter, block, dense)?;
                layer.out_norm.apply_rows(rows, dense);
            }
        }
        if scratch.floats() <= SCRATCH_KEPT_FLOATS {
            SCRATCH.set(scratch);
        }
        Ok(Packed { starts, rows: x })
    }

    /// Self-attention of each text over its own tokens: `qkv` holds each
    /// token's query, key and value side by side (n, 3h); returns the
    /// context (n, h). Texts are split over the cores in runs of about
    /// equal work; each text is computed alone, the same way wherever it is.
    fn attention(&self, qkv: &[f32], starts: &[usize], ctx: &mut Vec<f32>) {
        let h = self.hidden;
        let n = starts[starts.len() - 1];
        ctx.clear();
        ctx.resize(n * h, 0.0);
        let texts = starts.len() - 1;
        // Work grows with the square of a text's length.
        let cost = |i: usize| (starts[i + 1] - starts[i]).pow(2) * h;
        let total: usize = (0..texts).map(cost).sum();
        let threads = threads_for(total).min(texts).max(1);
        if threads == 1 {
            return self.attend(qkv, starts, 0..texts, ctx);
        }
        // Contiguous runs of texts (so of rows) of about total / threads each.
        let cuts = even_runs(texts, threads, cost);
        std::thread::scope(|s| {
            let mut rest = ctx.as_mut_slice();
            for run in cuts.windows(2).map(|w| w[0]..w[1]) {
                let rows = (starts[run.end] - starts[run.start]) * h;
                let (mine, tail) = std::mem::take(&mut rest).split_at_mut(rows);
                rest = tail;
                s.spawn(move || self.attend(qkv, starts, run, mine));
            }
        });
    }

    /// [`Bert::attention`] of the texts `run`, whose context rows are `ctx`:
    /// compiled twice, the loops vectorized 8 wide where the CPU has AVX2
    /// (detected at run time), 4 wide elsewhere. Both do the same operations
    /// in the same order (no fused multiply-adds), so the results are the same.
    fn attend(&self, qkv: &[f32], starts: &[usize], run: std::ops::Range<usize>, ctx: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2 (checked just above).
                return unsafe { self.attend_avx2(qkv, starts, run, ctx) };
            }
        }
        self.attend_body(qkv, starts, run, ctx)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn attend_avx2(
        &self,
        qkv: &[f32],
        starts: &[usize],
        run: std::ops::Range<usize>,
        ctx: &mut [f32],
    ) {
        self.attend_body(qkv, starts, run, ctx)
    }

    #[inline(always)]
    fn attend_body(
        &self,
        qkv: &[f32],
        starts: &[usize],
        run: std::ops::Range<usize>,
        ctx: &mut [f32],
    ) {
        let (h, d) = (self.hidden, self.head_dim);
        let scale = 1.0 / (d as f32).sqrt();
        let base = starts[run.start];
        let longest = run
            .clone()
            .map(|i| starts[i + 1] - starts[i])
            .max()
            .unwrap_or(0);
        // One head of one text at a time: its queries (scaled) and values
        // gathered contiguous, its keys transposed (so that a query's scores
        // against every key are one vectorized loop per dimension) in rows
        // padded with zeros to a multiple of 8 (no scalar tails; the padded
        // scores are never read), and a row of scores.
        let stride = longest.div_ceil(8) * 8;
        let mut q = vec![0f32; longest * d];
        let mut k_t = vec![0f32; d * stride];
        let mut v = vec![0f32; longest * d];
        let mut scores = vec![0f32; stride];
        for i in run {
            let (first, len) = (starts[i], starts[i + 1] - starts[i]);
            let width = len.div_ceil(8) * 8;
            for head in 0..self.heads {
                let at = head * d;
                k_t[..d * width].fill(0.0);
                for t in 0..len {
                    let row = &qkv[(first + t) * 3 * h..][..3 * h];
                    for (dst, src) in q[t * d..][..d].iter_mut().zip(&row[at..][..d]) {
                        *dst = src * scale;
                    }
                    for (c, x) in row[h + at..][..d].iter().enumerate() {
                        k_t[c * width + t] = *x;
                    }
                    v[t * d..][..d].copy_from_slice(&row[2 * h + at..][..d]);
                }
                for t in 0..len {
                    let qt = &q[t * d..][..d];
                    let row = &mut scores[..width];
                    // Eight scores at a time, summed over the dimensions in
                    // registers.
                    for (b, block) in row.chunks_exact_mut(8).enumerate() {
                        let mut acc = [0f32; 8];
                        for (c, qc) in qt.iter().enumerate() {
                            let keys = &k_t[c * width + b * 8..][..8];
                            for l in 0..8 {
                                acc[l] += qc * keys[l];
                            }
                        }
                        block.copy_from_slice(&acc);
                    }
                    // Scores are finite: a plain comparison, not `f32::max`'s
                    // NaN handling (a third of this loop's time).
                    let max = row[..len]
                        .iter()
                        .fold(f32::NEG_INFINITY, |m, &s| if s > m { s } else { m });
                    // Exponentials eight at a time, the padding's included
                    // (never read).
                    for block in row.chunks_exact_mut(8) {
                        for s in block {
                            *s = exp_nonpositive(*s - max);
                        }
                    }
                    let real = &row[..len];
                    let sum: f32 = real.iter().sum();
                    let out = &mut ctx[(first + t - base) * h + at..][..d];
                    for (j, s) in real.iter().enumerate() {
                        let p = s / sum;
                        for (o, x) in out.iter_mut().zip(&v[j * d..][..d]) {
                            *o += p * x;
                        }
                    }
                }
            }
        }
    }
}

/// `gelu(x + bias)` in place (erf form, as BERT uses) over all cores:
/// candle's elementwise ops run on one thread and allocate per op, and this is
/// the largest elementwise step in the model.
fn gelu_in_place(data: &mut [f32], width: usize, bias: Option<&[f32]>) {
    let threads = threads_for(data.len());
    let rows_per = (data.len() / width).div_ceil(threads).max(1);
    if threads == 1 {
        return gelu_rows(data, width, bias);
    }
    std::thread::scope(|s| {
        for part in data.chunks_mut(rows_per * width) {
            s.spawn(move || gelu_rows(part, width, bias));
        }
    });
}

/// [`gelu`] over `rows`, 16 wide where the CPU has AVX-512, 8 with AVX2
/// (detected at run time), 4 elsewhere: the same operations in the same
/// order each way (no fused multiply-adds), so the same results.
fn gelu_rows(rows: &mut [f32], width: usize, bias: Option<&[f32]>) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { gelu_rows_avx512(rows, width, bias) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { gelu_rows_avx2(rows, width, bias) };
        }
    }
    gelu_rows_body(rows, width, bias)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_rows_avx512(rows: &mut [f32], width: usize, bias: Option<&[f32]>) {
    gelu_rows_body(rows, width, bias)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gelu_rows_avx2(rows: &mut [f32], width: usize, bias: Option<&[f32]>) {
    gelu_rows_body(rows, width, bias)
}

#[inline(always)]
fn gelu_rows_body(rows: &mut [f32], width: usize, bias: Option<&[f32]>) {
    for row in rows.chunks_exact_mut(width) {
        match bias {
            Some(b) => row.iter_mut().zip(b).for_each(|(v, b)| *v = gelu(*v + b)),
            None => row.iter_mut().for_each(|v| *v = gelu(*v)),
        }
    }
}

#[inline(always)]
fn gelu(z: f32) -> f32 {
    0.5 * z * (1.0 + erf(z * std::f32::consts::FRAC_1_SQRT_2))
}

/// `e^x` for `x ≤ 0` (softmax's shifted scores), branch-free so that the
/// loop calling it vectorizes, where `f32::exp` is a libm call per score:
/// `2^n · e^r` with `n` the nearest integer to `x / ln 2` and Cephes'
/// polynomial for `e^r`; within 2 ulps of libm (tested). Below -87 it is
/// e^-87 (~1.6e-38), which is 0 to a softmax.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n · LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 · 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 0.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    e_r * f32::from_bits(((n as i32 + 127) as u32) << 23)
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
    fn even_runs_give_every_part_an_item_and_balance_weight() {
        let runs = |w: &[usize], parts| super::even_runs(w.len(), parts, |i| w[i]);
        assert_eq!(runs(&[10, 10, 10, 10], 2), vec![0, 2, 4]);
        assert_eq!(runs(&[10, 10, 10, 10], 4), vec![0, 1, 2, 3, 4]);
        assert_eq!(runs(&[1, 100], 2), vec![0, 1, 2]);
        assert_eq!(runs(&[90, 5, 5], 2), vec![0, 1, 3]);
        assert_eq!(runs(&[5, 5, 90], 2), vec![0, 2, 3]);
    }

    #[test]
    fn layer_norm_is_the_same_on_every_vector_width() {
        // Two rows of an odd width: the lanes' remainder is exercised too.
        let width = 389;
        let norm = super::Norm {
            weight: (0..width).map(|i| 1.0 + (i % 5) as f32 / 7.0).collect(),
            bias: (0..width).map(|i| (i % 3) as f32 / 11.0 - 0.1).collect(),
            eps: 1e-12,
        };
        let rows: Vec<f32> = (0..2 * width)
            .map(|i| ((i * 37) % 101) as f32 / 13.0 - 3.0)
            .collect();
        let add: Vec<f32> = (0..2 * width).map(|i| (i % 9) as f32 / 17.0).collect();
        for a in [&[][..], &add[..]] {
            let mut portable = rows.clone();
            norm.apply_each_body(&mut portable, a);
            let mut dispatched = rows.clone();
            norm.apply_each(&mut dispatched, a);
            assert_eq!(portable, dispatched);
            // Each row alone, as the lanes would sum it one value at a time.
            for (i, row) in portable.chunks_exact(width).enumerate() {
                let mut x: Vec<f32> = rows[i * width..][..width].to_vec();
                if !a.is_empty() {
                    x.iter_mut().zip(&a[i * width..]).for_each(|(x, a)| *x += a);
                }
                let mut lanes = [0f32; 8];
                x.iter().enumerate().for_each(|(j, v)| lanes[j % 8] += v);
                let sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
                    + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
                assert_eq!(super::lane_sum(&x, |v| v), sum);
                assert!(row.iter().all(|v| v.is_finite()));
            }
        }
    }

    #[test]
    fn gelu_is_the_same_on_every_vector_width() {
        let row: Vec<f32> = (0..1536).map(|i| (i as f32 - 768.0) / 97.0).collect();
        let bias: Vec<f32> = (0..1536).map(|i| (i % 7) as f32 / 10.0).collect();
        for b in [None, Some(bias.as_slice())] {
            let mut portable = row.clone();
            super::gelu_rows_body(&mut portable, 1536, b);
            let mut dispatched = row.clone();
            super::gelu_rows(&mut dispatched, 1536, b);
            assert_eq!(portable, dispatched);
        }
    }

    #[test]
    fn fast_exp_matches_libm() {
        let mut worst = 0f32;
        for i in 0..=870_000 {
            let x = -(i as f32) / 10_000.0;
            let (fast, libm) = (super::exp_nonpositive(x), x.exp());
            worst = worst.max(((fast - libm) / libm).abs());
        }
        assert!(worst < 2.5e-7, "max relative error {worst}");
        assert_eq!(super::exp_nonpositive(0.0), 1.0);
        assert!(super::exp_nonpositive(-1e30) < 1e-37);
    }

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
