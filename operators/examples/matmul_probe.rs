use candle_core::{Device, Tensor};
use std::time::Instant;
fn main() {
    let d = Device::Cpu;
    for (m, k, n) in [
        (512usize, 384usize, 1536usize),
        (512, 1536, 384),
        (512, 384, 1152),
        (16, 384, 1536),
    ] {
        let a = Tensor::randn(0f32, 1.0, (m, k), &d).unwrap();
        let b = Tensor::randn(0f32, 1.0, (k, n), &d).unwrap();
        let _ = a.matmul(&b).unwrap();
        let it = 50;
        let t = Instant::now();
        for _ in 0..it {
            let _ = a.matmul(&b).unwrap();
        }
        let s = t.elapsed().as_secs_f64() / it as f64;
        println!(
            "{m}x{k}x{n}: {:.3} ms, {:.1} GFLOPS",
            s * 1e3,
            2.0 * (m * k * n) as f64 / s / 1e9
        );
    }
    let x = Tensor::randn(0f32, 1.0, (512, 1536), &d).unwrap();
    let bias = Tensor::randn(0f32, 1.0, 1536, &d).unwrap();
    let t = Instant::now();
    for _ in 0..50 {
        let _ = x.broadcast_add(&bias).unwrap();
    }
    println!(
        "broadcast_add 512x1536: {:.3} ms",
        t.elapsed().as_secs_f64() / 50.0 * 1e3
    );
    let t = Instant::now();
    for _ in 0..50 {
        let _ = x.gelu_erf().unwrap();
    }
    println!(
        "gelu_erf 512x1536: {:.3} ms",
        t.elapsed().as_secs_f64() / 50.0 * 1e3
    );
    let s4 = Tensor::randn(0f32, 1.0, (32, 12, 16, 16), &d).unwrap();
    let t = Instant::now();
    for _ in 0..50 {
        let _ = candle_nn::ops::softmax_last_dim(&s4).unwrap();
    }
    println!(
        "softmax 32x12x16x16: {:.3} ms",
        t.elapsed().as_secs_f64() / 50.0 * 1e3
    );
    let q = Tensor::randn(0f32, 1.0, (32, 12, 16, 32), &d).unwrap();
    let kt = Tensor::randn(0f32, 1.0, (32, 12, 32, 16), &d).unwrap();
    let t = Instant::now();
    for _ in 0..50 {
        let _ = q.matmul(&kt).unwrap();
    }
    println!(
        "attn matmul 32x12 (16x32x16): {:.3} ms",
        t.elapsed().as_secs_f64() / 50.0 * 1e3
    );
    println!("threads {}", candle_core::utils::get_num_threads());
}
