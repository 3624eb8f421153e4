//! Finds and loads a BLAS for the model's dense layers (Intel MKL's runtime,
//! which scripts/setup.sh installs from PyPI). Loading is the pipeline's job;
//! the operators only receive the function.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use ideaflow_operators::embed::{
    Blas, CblasGemmBf16, CblasSgemm, CblasSgemmCompute, CblasSgemmPack, CblasSgemmPackGetSize,
    MklSetNumThreadsLocal, PackedApi, Precision,
};

use crate::config::ModelConfig;

/// Kept loaded for the life of the process: embedders hold its function pointer.
static MKL: OnceLock<libloading::Library> = OnceLock::new();

fn mkl_path(config: &ModelConfig) -> PathBuf {
    std::env::var_os("IDEAFLOW_MKL_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| config.mkl_lib.clone())
}

/// The BLAS `model.blas` asks for: `auto` (MKL when installed, else built-in),
/// `mkl` (MKL or an error), `builtin` (candle's gemm).
pub fn load(config: &ModelConfig) -> Result<Option<Blas>> {
    match config.blas.as_str() {
        "builtin" => Ok(None),
        "mkl" => load_mkl(&mkl_path(config), config.threads).map(Some),
        "auto" => {
            let path = mkl_path(config);
            if !path.exists() {
                tracing::info!(path = %path.display(), "MKL not installed; using candle's built-in gemm");
                return Ok(None);
            }
            match load_mkl(&path, config.threads) {
                Ok(b) => Ok(Some(b)),
                Err(e) => {
                    tracing::warn!(error = %e, "MKL did not load; using candle's built-in gemm");
                    Ok(None)
                }
            }
        }
        other => bail!("model.blas = {other:?}: use \"auto\", \"mkl\" or \"builtin\""),
    }
}

/// `model.precision`, checked against this CPU and `blas`: bf16 only where
/// the CPU multiplies bf16 natively (AVX-512 BF16 or AMX), through MKL.
pub fn precision(config: &ModelConfig, blas: Option<&Blas>) -> Result<Precision> {
    match config.precision.as_str() {
        "f32" => Ok(Precision::F32),
        "bf16" => {
            if !cpu_has_bf16() {
                bail!(
                    "model.precision = \"bf16\": this CPU has no AVX-512 BF16, \
                     so bf16 products would be emulated and slower than f32; set model.precision = \"f32\""
                );
            }
            if !blas.is_some_and(Blas::has_bf16) {
                bail!(
                    "model.precision = \"bf16\" needs Intel MKL's cblas_gemm_bf16bf16f32: set \
                     model.blas = \"auto\" or \"mkl\" and run scripts/setup.sh (it installs MKL), or set \
                     model.precision = \"f32\""
                );
            }
            Ok(Precision::Bf16)
        }
        "int8" => bail!(
            "model.precision = \"int8\" is not offered: 8-bit products (MKL's, activations scaled per row, \
             weights per column) gave vectors at cosine 0.986 to f32's, below the 0.999 every precision \
             must hold; use \"f32\" or \"bf16\""
        ),
        other => bail!("model.precision = {other:?}: use \"f32\" or \"bf16\""),
    }
}

/// Whether the CPU multiplies bfloat16 natively.
pub fn cpu_has_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // Every CPU with AMX-BF16 has AVX-512 BF16 too.
        std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn load_mkl(path: &Path, threads: usize) -> Result<Blas> {
    if MKL.get().is_none() {
        // MKL reads these once, at load. GNU OpenMP ships with gcc on Debian;
        // Intel's own OpenMP runtime is not installed.
        if std::env::var_os("MKL_THREADING_LAYER").is_none() {
            std::env::set_var("MKL_THREADING_LAYER", "GNU");
        }
        // Strict conditional numerical reproducibility: a row's result never
        // depends on how many rows were multiplied with it, so embeddings are
        // bit-identical whatever the batch, worker count or replay speed.
        // OpenMP workers otherwise spin after each product, starving the
        // elementwise steps that run between products (measured: ~30% slower).
        if std::env::var_os("OMP_WAIT_POLICY").is_none() {
            std::env::set_var("OMP_WAIT_POLICY", "PASSIVE");
        }
        if std::env::var_os("MKL_CBWR").is_none() {
            std::env::set_var("MKL_CBWR", "AUTO,STRICT");
        }
        if threads > 0 && std::env::var_os("MKL_NUM_THREADS").is_none() {
            std::env::set_var("MKL_NUM_THREADS", threads.to_string());
        }
        // SAFETY: loading MKL runs its initializers, which have no preconditions.
        let lib = unsafe { libloading::Library::new(path) }.with_context(|| {
            format!(
                "cannot load {}: run scripts/setup.sh, or set model.blas = \"builtin\"",
                path.display()
            )
        })?;
        let _ = MKL.set(lib);
    }
    let lib = MKL.get().expect("set above");
    // SAFETY: MKL exports cblas_sgemm with the CBLAS signature; the library
    // stays loaded in the static above.
    unsafe {
        let sgemm: libloading::Symbol<'_, CblasSgemm> = lib
            .get(b"cblas_sgemm\0")
            .context("the MKL library has no cblas_sgemm")?;
        let mut blas = Blas::from_raw(*sgemm);
        // Weights packed once at load (bit-identical sums, no copy per product).
        if let (Ok(get_size), Ok(pack), Ok(compute)) = (
            lib.get::<CblasSgemmPackGetSize>(b"cblas_sgemm_pack_get_size\0"),
            lib.get::<CblasSgemmPack>(b"cblas_sgemm_pack\0"),
            lib.get::<CblasSgemmCompute>(b"cblas_sgemm_compute\0"),
        ) {
            blas = blas.with_packed(PackedApi {
                get_size: *get_size,
                pack: *pack,
                compute: *compute,
            });
        }
        // A batch's parts run on one core each (no hand-offs inside a product).
        // (The C entry point: the lowercase one is Fortran's, by reference.)
        if let Ok(threads_local) = lib.get::<MklSetNumThreadsLocal>(b"MKL_Set_Num_Threads_Local\0")
        {
            blas = blas.with_thread_control(*threads_local);
        }
        // MKL since 2019 has the bf16 product; an older one still serves f32.
        Ok(
            match lib.get::<CblasGemmBf16>(b"cblas_gemm_bf16bf16f32\0") {
                Ok(gemm_bf16) => blas.with_bf16(*gemm_bf16),
                Err(_) => blas,
            },
        )
    }
}

/// Gives back the work buffers MKL keeps after a product (~45 MB after the
/// model's first batch), if MKL is loaded. Call it only while no other
/// thread can be inside MKL (at startup, before workers and the API start);
/// MKL allocates buffers again on need.
pub fn release_buffers() {
    let Some(lib) = MKL.get() else {
        return;
    };
    // SAFETY: `mkl_free_buffers(void)` is part of MKL's support API, and the
    // caller guarantees no product is running. The library stays loaded.
    unsafe {
        if let Ok(free) = lib.get::<unsafe extern "C" fn()>(b"mkl_free_buffers\0") {
            free();
        }
    }
}
