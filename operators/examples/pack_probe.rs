//! Probe: MKL's packed-B sgemm against plain sgemm (speed, bit-identity of rows).
use std::time::Instant;
type Sgemm = unsafe extern "C" fn(
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    f32,
    *const f32,
    i32,
    *const f32,
    i32,
    f32,
    *mut f32,
    i32,
);
type PackSize = unsafe extern "C" fn(i32, i32, i32, i32) -> usize;
type Pack = unsafe extern "C" fn(i32, i32, i32, i32, i32, i32, f32, *const f32, i32, *mut f32);
type Compute = unsafe extern "C" fn(
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    *const f32,
    i32,
    *const f32,
    i32,
    f32,
    *mut f32,
    i32,
);
fn main() {
    std::env::set_var("MKL_THREADING_LAYER", "GNU");
    std::env::set_var("MKL_CBWR", "AUTO,STRICT");
    std::env::set_var("OMP_WAIT_POLICY", "PASSIVE");
    let threads = std::env::var("T").unwrap_or("2".into());
    std::env::set_var("MKL_NUM_THREADS", &threads);
    let lib = unsafe { libloading::Library::new("state/mkl/lib/libmkl_rt.so.2").unwrap() };
    let sgemm: libloading::Symbol<Sgemm> = unsafe { lib.get(b"cblas_sgemm\0").unwrap() };
    let size: libloading::Symbol<PackSize> =
        unsafe { lib.get(b"cblas_sgemm_pack_get_size\0").unwrap() };
    let pack: libloading::Symbol<Pack> = unsafe { lib.get(b"cblas_sgemm_pack\0").unwrap() };
    let compute: libloading::Symbol<Compute> =
        unsafe { lib.get(b"cblas_sgemm_compute\0").unwrap() };
    let mut seed = 1u64;
    let mut rnd = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    for (k, n) in [(384usize, 1536usize), (1536, 384), (384, 1152), (384, 384)] {
        let w: Vec<f32> = (0..k * n).map(|_| rnd()).collect();
        let bytes = unsafe { size(162, 1, n as i32, k as i32) };
        let mut packed = vec![0f32; bytes / 4 + 16];
        unsafe {
            pack(
                101,
                162,
                111,
                1,
                n as i32,
                k as i32,
                1.0,
                w.as_ptr(),
                n as i32,
                packed.as_mut_ptr(),
            )
        };
        for m in [2usize, 13, 450, 1800] {
            let a: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
            let plain = |a: &[f32], m: usize| {
                let mut c = vec![0f32; m * n];
                unsafe {
                    sgemm(
                        101,
                        111,
                        111,
                        m as i32,
                        n as i32,
                        k as i32,
                        1.0,
                        a.as_ptr(),
                        k as i32,
                        w.as_ptr(),
                        n as i32,
                        0.0,
                        c.as_mut_ptr(),
                        n as i32,
                    )
                };
                c
            };
            let packd = |a: &[f32], m: usize| {
                let mut c = vec![0f32; m * n];
                unsafe {
                    compute(
                        101,
                        111,
                        151,
                        m as i32,
                        n as i32,
                        k as i32,
                        a.as_ptr(),
                        k as i32,
                        packed.as_ptr(),
                        n as i32,
                        0.0,
                        c.as_mut_ptr(),
                        n as i32,
                    )
                };
                c
            };
            let p1 = plain(&a, m);
            let c1 = packd(&a, m);
            // rows alone
            let first = packd(&a[..2 * k], 2);
            let same_rows = first[..] == c1[..2 * n];
            let same_plain = p1 == c1;
            let it = (200_000_000 / (m * k * n)).max(3);
            let t = Instant::now();
            for _ in 0..it {
                std::hint::black_box(plain(&a, m));
            }
            let tp = t.elapsed().as_secs_f64() / it as f64;
            let t = Instant::now();
            for _ in 0..it {
                std::hint::black_box(packd(&a, m));
            }
            let tc = t.elapsed().as_secs_f64() / it as f64;
            println!("k{k} n{n} m{m}: plain {:.3} ms, packed {:.3} ms ({:.2}x); rows alone same: {same_rows}; same as plain: {same_plain}", tp * 1e3, tc * 1e3, tp / tc);
        }
    }
}
