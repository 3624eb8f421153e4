//! Matrix products for the model's dense layers. By default candle's built-in
//! gemm; when the host hands in a CBLAS `sgemm` (the pipeline loads Intel MKL
//! when present), dense layers call it directly on the packed token rows, and
//! with [`Precision::Bf16`] they call MKL's `cblas_gemm_bf16bf16f32` (bf16
//! inputs, f32 sums: AMX or AVX-512 BF16 where the CPU has them).

/// A CBLAS-style `gemm` over inputs of type `T` with f32 sums and output.
pub type Gemm<T> = unsafe extern "C" fn(
    layout: i32,
    trans_a: i32,
    trans_b: i32,
    m: i32,
    n: i32,
    k: i32,
    alpha: f32,
    a: *const T,
    lda: i32,
    b: *const T,
    ldb: i32,
    beta: f32,
    c: *mut f32,
    ldc: i32,
);

/// `cblas_sgemm`, as exported by any CBLAS (MKL, OpenBLAS).
pub type CblasSgemm = Gemm<f32>;

/// MKL's `cblas_gemm_bf16bf16f32`: `sgemm`'s contract with the two inputs
/// in bfloat16 (`MKL_BF16`, the top 16 bits of an f32) and f32 sums.
pub type CblasGemmBf16 = Gemm<u16>;

/// MKL's `cblas_sgemm_pack_get_size`: bytes for a packed matrix.
pub type CblasSgemmPackGetSize =
    unsafe extern "C" fn(identifier: i32, m: i32, n: i32, k: i32) -> usize;

/// MKL's `cblas_sgemm_pack`: a matrix copied once into the blocked layout
/// its products read, so that later products skip that copy.
pub type CblasSgemmPack = unsafe extern "C" fn(
    layout: i32,
    identifier: i32,
    trans: i32,
    m: i32,
    n: i32,
    k: i32,
    alpha: f32,
    src: *const f32,
    ld: i32,
    dest: *mut f32,
);

/// MKL's `cblas_sgemm_compute`: `sgemm` with an operand packed by
/// [`CblasSgemmPack`] (its `trans` given as `CBLAS_PACKED`).
pub type CblasSgemmCompute = unsafe extern "C" fn(
    layout: i32,
    trans_a: i32,
    trans_b: i32,
    m: i32,
    n: i32,
    k: i32,
    a: *const f32,
    lda: i32,
    b: *const f32,
    ldb: i32,
    beta: f32,
    c: *mut f32,
    ldc: i32,
);

/// MKL's `MKL_Set_Num_Threads_Local` (the C entry point; the lowercase name
/// is Fortran's, by reference): how many threads the products called
/// from this thread use (0: back to the global setting); returns the
/// previous setting.
pub type MklSetNumThreadsLocal = unsafe extern "C" fn(threads: i32) -> i32;

/// MKL's packed-product API, as one set.
#[derive(Clone, Copy, Debug)]
pub struct PackedApi {
    pub get_size: CblasSgemmPackGetSize,
    pub pack: CblasSgemmPack,
    pub compute: CblasSgemmCompute,
}

/// A dense layer's weight (k, m) packed by MKL for its products. It must
/// stay where it was packed (MKL's layout may hold addresses); the buffer
/// is a heap allocation that never moves or grows.
pub struct PackedWeight {
    data: Box<[f32]>,
    k: usize,
    m: usize,
}

/// The number format of the dense layers' products (`model.precision`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 throughout: vectors at cosine ≥ 0.999 to sentence-transformers'.
    #[default]
    F32,
    /// Weights and activations rounded to bfloat16 for the dense products,
    /// sums and everything else in f32; needs a BLAS with a bf16 product.
    Bf16,
}

const CBLAS_ROW_MAJOR: i32 = 101;
const CBLAS_NO_TRANS: i32 = 111;
const CBLAS_PACKED: i32 = 151;
const CBLAS_B_MATRIX: i32 = 162;

/// A host-provided CBLAS. Constructing one is a promise that the pointer is a
/// real `cblas_sgemm` that stays loaded for the life of the process.
#[derive(Clone, Copy, Debug)]
pub struct Blas {
    sgemm: CblasSgemm,
    gemm_bf16: Option<CblasGemmBf16>,
    packed: Option<PackedApi>,
    threads_local: Option<MklSetNumThreadsLocal>,
}

impl Blas {
    /// # Safety
    /// `sgemm` must implement the CBLAS `cblas_sgemm` contract and outlive every embedder.
    pub unsafe fn from_raw(sgemm: CblasSgemm) -> Self {
        Blas {
            sgemm,
            gemm_bf16: None,
            packed: None,
            threads_local: None,
        }
    }

    /// This BLAS with a per-thread thread count for its products, so that
    /// several threads can each run a part of a batch on one core
    /// ([`Blas::on_one_thread`]).
    ///
    /// # Safety
    /// `threads_local` must implement MKL's C `MKL_Set_Num_Threads_Local`
    /// contract and outlive every embedder.
    pub unsafe fn with_thread_control(self, threads_local: MklSetNumThreadsLocal) -> Self {
        Blas {
            threads_local: Some(threads_local),
            ..self
        }
    }

    /// Whether [`Blas::on_one_thread`] can confine products to their
    /// calling thread.
    pub fn controls_threads(&self) -> bool {
        self.threads_local.is_some()
    }

    /// Runs `f` with the products it calls on this thread alone (if this
    /// BLAS [controls threads](Blas::controls_threads)), then restores the
    /// thread's setting. MKL's strict reproducibility (`MKL_CBWR`) makes a
    /// product's sums the same on any number of threads.
    pub fn on_one_thread<R>(&self, f: impl FnOnce() -> R) -> R {
        let Some(set) = self.threads_local else {
            return f();
        };
        struct Restore(MklSetNumThreadsLocal, i32);
        impl Drop for Restore {
            fn drop(&mut self) {
                // SAFETY: the `with_thread_control` contract covers the function.
                unsafe { (self.0)(self.1) };
            }
        }
        // SAFETY: the `with_thread_control` contract covers the function.
        let _restore = Restore(set, unsafe { set(1) });
        f()
    }

    /// This BLAS with MKL's packed products: f32 weights are packed once at
    /// load and multiplied without being copied again per product (the
    /// copy was a tenth of a batch of 32 texts). The sums are the same as
    /// `sgemm`'s, bit for bit (probed at 2 to 1,800 rows of every layer's
    /// shape; the embedding tests compare against sentence-transformers
    /// and across batchings).
    ///
    /// # Safety
    /// The three functions must implement MKL's `cblas_sgemm_pack_get_size`,
    /// `cblas_sgemm_pack` and `cblas_sgemm_compute` contracts and outlive
    /// every embedder.
    pub unsafe fn with_packed(self, packed: PackedApi) -> Self {
        Blas {
            packed: Some(packed),
            ..self
        }
    }

    /// `w` (k, m) row-major packed for [`Blas::dense_packed`], if this
    /// BLAS packs.
    pub fn pack(&self, w: &[f32], k: usize, m: usize) -> Option<PackedWeight> {
        let api = self.packed?;
        assert_eq!(w.len(), k * m);
        // SAFETY: the `with_packed` contract covers the functions; the size
        // is asked for before the buffer it sizes is written.
        unsafe {
            let bytes = (api.get_size)(CBLAS_B_MATRIX, 1, m as i32, k as i32);
            let mut data = vec![0f32; bytes.div_ceil(4)].into_boxed_slice();
            (api.pack)(
                CBLAS_ROW_MAJOR,
                CBLAS_B_MATRIX,
                CBLAS_NO_TRANS,
                1,
                m as i32,
                k as i32,
                1.0,
                w.as_ptr(),
                m as i32,
                data.as_mut_ptr(),
            );
            Some(PackedWeight { data, k, m })
        }
    }

    /// `out = x · w + bias` for row-major x (n, k), `w` packed (k, m) by
    /// [`Blas::pack`], bias (m); `out`'s rows are replaced (its memory is
    /// kept for the caller's next product).
    pub fn dense_packed(
        &self,
        x: &[f32],
        n: usize,
        w: &PackedWeight,
        bias: &[f32],
        out: &mut Vec<f32>,
    ) {
        let api = self
            .packed
            .expect("weights are packed only by a BLAS that packs");
        let (k, m) = (w.k, w.m);
        assert!(x.len() >= n * k && bias.len() == m);
        fill_with_bias(out, n, bias);
        // SAFETY: x and out hold (n, k) and (n, m) elements, `w` was packed
        // for (k, m) by this API and has not moved; the `with_packed`
        // contract covers the function.
        unsafe {
            (api.compute)(
                CBLAS_ROW_MAJOR,
                CBLAS_NO_TRANS,
                CBLAS_PACKED,
                n as i32,
                m as i32,
                k as i32,
                x.as_ptr(),
                k as i32,
                w.data.as_ptr(),
                m as i32,
                1.0,
                out.as_mut_ptr(),
                m as i32,
            );
        }
    }

    /// This BLAS with a bf16 product for [`Precision::Bf16`].
    ///
    /// # Safety
    /// `gemm_bf16` must implement MKL's `cblas_gemm_bf16bf16f32` contract and
    /// outlive every embedder.
    pub unsafe fn with_bf16(self, gemm_bf16: CblasGemmBf16) -> Self {
        Blas {
            gemm_bf16: Some(gemm_bf16),
            ..self
        }
    }

    /// Whether [`Blas::dense_bf16`] can run.
    pub fn has_bf16(&self) -> bool {
        self.gemm_bf16.is_some()
    }

    /// `out = bf16(x) · w + bias` for row-major x (n, k) in f32, w (k, m) in
    /// bf16, bias (m); the sums in f32. A product of one row goes to another
    /// MKL kernel whose sums round differently from the same row's in a
    /// larger product, so one row is multiplied as two (the second zero):
    /// a text's vector never depends on what it was batched with.
    pub fn dense_bf16(
        &self,
        x: &[f32],
        n: usize,
        w: &[u16],
        bias: &[f32],
        out: &mut Vec<f32>,
    ) -> candle_core::Result<()> {
        let Some(gemm) = self.gemm_bf16 else {
            candle_core::bail!("this BLAS has no bf16 product: set model.precision = \"f32\"")
        };
        let k = x.len() / n.max(1);
        let rows = n.max(2);
        let mut a = vec![0u16; rows * k];
        for (b, &f) in a.iter_mut().zip(x) {
            *b = bf16_bits(f);
        }
        product(gemm, &a, rows, k, w, bias, out);
        out.truncate(n * bias.len());
        Ok(())
    }

    /// `out = x · w + bias` for row-major x (n, k), w (k, m), bias (m);
    /// `out`'s rows are replaced.
    pub fn dense(&self, x: &[f32], n: usize, w: &[f32], bias: &[f32], out: &mut Vec<f32>) {
        product(self.sgemm, x, n, x.len() / n.max(1), w, bias, out)
    }
}

/// `out` holds `rows` copies of `bias`, and nothing else: a product adds
/// to it (beta 1), so the bias is inside MKL's sums, as it always was.
fn fill_with_bias(out: &mut Vec<f32>, rows: usize, bias: &[f32]) {
    out.clear();
    out.reserve(rows * bias.len());
    for _ in 0..rows {
        out.extend_from_slice(bias);
    }
}

/// `out = a · w + bias` through `gemm`, for row-major a (rows, k), w (k, m),
/// bias (m).
fn product<T>(
    gemm: Gemm<T>,
    a: &[T],
    rows: usize,
    k: usize,
    w: &[T],
    bias: &[f32],
    out: &mut Vec<f32>,
) {
    let m = bias.len();
    assert!(a.len() >= rows * k && w.len() == k * m);
    fill_with_bias(out, rows, bias);
    // SAFETY: a, w and out hold (rows, k), (k, m) and (rows, m) elements, as
    // the call states (checked above); the `Blas` constructors' contracts
    // cover the function pointer.
    unsafe {
        gemm(
            CBLAS_ROW_MAJOR,
            CBLAS_NO_TRANS,
            CBLAS_NO_TRANS,
            rows as i32,
            m as i32,
            k as i32,
            1.0,
            a.as_ptr(),
            k as i32,
            w.as_ptr(),
            m as i32,
            1.0,
            out.as_mut_ptr(),
            m as i32,
        );
    }
}

/// `f` rounded to the nearest bfloat16 (ties to even), as its 16 bits. The
/// model's activations and weights are finite, so NaN needs no care.
#[inline]
pub fn bf16_bits(f: f32) -> u16 {
    let bits = f.to_bits();
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::bf16_bits;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        let back = |b: u16| f32::from_bits(u32::from(b) << 16);
        assert_eq!(back(bf16_bits(1.0)), 1.0);
        assert_eq!(back(bf16_bits(-2.5)), -2.5);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even 1.
        assert_eq!(back(bf16_bits(1.0 + 1.0 / 256.0)), 1.0);
        assert_eq!(back(bf16_bits(1.0 + 3.0 / 256.0)), 1.0 + 4.0 / 256.0);
        // Just above halfway rounds up.
        assert_eq!(
            back(bf16_bits(f32::from_bits(0x3f80_8001))),
            1.0 + 1.0 / 128.0
        );
        for x in [0.1f32, -3.7e-5, 123.456, 1e30] {
            assert!(((back(bf16_bits(x)) - x) / x).abs() <= 1.0 / 256.0);
        }
    }
}
