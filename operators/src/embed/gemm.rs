//! Matrix products for the model's dense layers. By default candle's built-in
//! gemm; when the host hands in a CBLAS `sgemm` (the pipeline loads Intel MKL
//! when present), dense layers call it directly on the tensors' buffers.

use candle_core::{Device, Storage, Tensor};

/// `cblas_sgemm`, as exported by any CBLAS (MKL, OpenBLAS).
pub type CblasSgemm = unsafe extern "C" fn(
    layout: i32,
    trans_a: i32,
    trans_b: i32,
    m: i32,
    n: i32,
    k: i32,
    alpha: f32,
    a: *const f32,
    lda: i32,
    b: *const f32,
    ldb: i32,
    beta: f32,
    c: *mut f32,
    ldc: i32,
);

const CBLAS_ROW_MAJOR: i32 = 101;
const CBLAS_NO_TRANS: i32 = 111;

/// A host-provided CBLAS. Constructing one is a promise that the pointer is a
/// real `cblas_sgemm` that stays loaded for the life of the process.
#[derive(Clone, Copy, Debug)]
pub struct Blas {
    sgemm: CblasSgemm,
}

impl Blas {
    /// # Safety
    /// `sgemm` must implement the CBLAS `cblas_sgemm` contract and outlive every embedder.
    pub unsafe fn from_raw(sgemm: CblasSgemm) -> Self {
        Blas { sgemm }
    }

    /// `out = x · w + bias` for row-major x (n, k), w (k, m), bias (m).
    pub fn dense(&self, x: &Tensor, w: &[f32], bias: &[f32]) -> candle_core::Result<Vec<f32>> {
        let (n, k) = x.dims2()?;
        let m = bias.len();
        debug_assert_eq!(w.len(), k * m);
        let x = x.contiguous()?;
        let (storage, layout) = x.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            candle_core::bail!("BLAS dense layers need CPU tensors")
        };
        let xs = &cpu.as_slice::<f32>()?[layout.start_offset()..layout.start_offset() + n * k];
        let mut out = Vec::with_capacity(n * m);
        for _ in 0..n {
            out.extend_from_slice(bias);
        }
        // SAFETY: slices are sized (n,k), (k,m), (n,m) as the call states; the
        // constructor's contract covers the function pointer.
        unsafe {
            (self.sgemm)(
                CBLAS_ROW_MAJOR,
                CBLAS_NO_TRANS,
                CBLAS_NO_TRANS,
                n as i32,
                m as i32,
                k as i32,
                1.0,
                xs.as_ptr(),
                k as i32,
                w.as_ptr(),
                m as i32,
                1.0,
                out.as_mut_ptr(),
                m as i32,
            );
        }
        Ok(out)
    }
}

pub fn tensor(data: Vec<f32>, rows: usize, cols: usize) -> candle_core::Result<Tensor> {
    Tensor::from_vec(data, (rows, cols), &Device::Cpu)
}
