//! Probe: the dense layers' products with weights packed once by MKL against
//! plain `sgemm` (time, and whether the rows' sums are bit-identical, also
//! when fewer rows are multiplied). Run from the repository root after
//! `scripts/setup.sh`: `cargo run --release -p ideaflow-operators --example pack_probe`
//! (`T=1` for one thread).
use std::time::Instant;

use ideaflow_operators::embed::{
    Blas, CblasSgemm, CblasSgemmCompute, CblasSgemmPack, CblasSgemmPackGetSize, PackedApi,
};

fn main() {
    std::env::set_var("MKL_THREADING_LAYER", "GNU");
    std::env::set_var("MKL_CBWR", "AUTO,STRICT");
    std::env::set_var("OMP_WAIT_POLICY", "PASSIVE");
    std::env::set_var("MKL_NUM_THREADS", std::env::var("T").unwrap_or("2".into()));
    // SAFETY: loading MKL runs its initializers; the symbols have the CBLAS
    // and MKL signatures their types state, and the library is never unloaded.
    let blas = unsafe {
        let lib = Box::leak(Box::new(
            libloading::Library::new("state/mkl/lib/libmkl_rt.so.2").expect("MKL installed"),
        ));
        let sgemm = *lib.get::<CblasSgemm>(b"cblas_sgemm\0").unwrap();
        Blas::from_raw(sgemm).with_packed(PackedApi {
            get_size: *lib
                .get::<CblasSgemmPackGetSize>(b"cblas_sgemm_pack_get_size\0")
                .unwrap(),
            pack: *lib.get::<CblasSgemmPack>(b"cblas_sgemm_pack\0").unwrap(),
            compute: *lib
                .get::<CblasSgemmCompute>(b"cblas_sgemm_compute\0")
                .unwrap(),
        })
    };
    let mut seed = 1u64;
    let mut rnd = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    for (k, m) in [(384usize, 1536usize), (1536, 384), (384, 1152), (384, 384)] {
        let w: Vec<f32> = (0..k * m).map(|_| rnd()).collect();
        let bias: Vec<f32> = (0..m).map(|_| rnd()).collect();
        let packed = blas.pack(&w, k, m).expect("MKL packs");
        for n in [2usize, 13, 450, 1800] {
            let x: Vec<f32> = (0..n * k).map(|_| rnd()).collect();
            let plain_of = |x: &[f32], n: usize| {
                let mut out = Vec::new();
                blas.dense(x, n, &w, &bias, &mut out);
                out
            };
            let packed_of = |x: &[f32], n: usize| {
                let mut out = Vec::new();
                blas.dense_packed(x, n, &packed, &bias, &mut out);
                out
            };
            let plain = plain_of(&x, n);
            let fast = packed_of(&x, n);
            let first_two = packed_of(&x[..2 * k], 2);
            let rounds = (200_000_000 / (n * k * m)).max(3);
            let time = |f: &dyn Fn() -> Vec<f32>| {
                let t = Instant::now();
                for _ in 0..rounds {
                    std::hint::black_box(f());
                }
                t.elapsed().as_secs_f64() / rounds as f64 * 1e3
            };
            let tp = time(&|| plain_of(&x, n));
            let tc = time(&|| packed_of(&x, n));
            println!(
                "({n}, {k}) x ({k}, {m}): plain {tp:.3} ms, packed {tc:.3} ms ({:.2}x); \
                 same as plain: {}; first rows alone the same: {}",
                tp / tc,
                plain == fast,
                first_two[..] == fast[..2 * m]
            );
        }
    }
}
