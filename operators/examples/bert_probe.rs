#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use ideaflow_operators::embed::{MiniLm, ModelFiles};
fn main() {
    let dir = std::path::PathBuf::from("models/all-MiniLM-L6-v2");
    let files = ModelFiles {
        config_json: std::fs::read(dir.join("config.json")).unwrap(),
        tokenizer_json: std::fs::read(dir.join("tokenizer.json")).unwrap(),
        weights_safetensors: std::fs::read(dir.join("model.safetensors")).unwrap(),
    };
    let m = MiniLm::load(&files).unwrap();
    let ids: Vec<u32> = (0..16).map(|i| 1000 + i).collect();
    let batch: Vec<&[u32]> = (0..32).map(|_| ids.as_slice()).collect();
    for _ in 0..3 { m.forward(&batch, 16).unwrap(); }
    std::env::set_var("PROF", "1");
    let t = std::time::Instant::now();
    m.forward(&batch, 16).unwrap();
    eprintln!("total {:.1}ms", t.elapsed().as_secs_f64() * 1e3);
}
