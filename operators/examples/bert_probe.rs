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
    std::env::set_var("MKL_THREADING_LAYER", "GNU");
    std::env::set_var("MKL_CBWR", "AUTO,STRICT");
    let lib = Box::leak(Box::new(unsafe {
        libloading::Library::new("state/mkl/lib/libmkl_rt.so.2").unwrap()
    }));
    let f: libloading::Symbol<ideaflow_operators::embed::CblasSgemm> =
        unsafe { lib.get(b"cblas_sgemm\0").unwrap() };
    let blas = if std::env::var_os("NOMKL").is_some() {
        None
    } else {
        Some(unsafe { ideaflow_operators::embed::Blas::from_raw(*f) })
    };
    let m = MiniLm::load(&files, blas, ideaflow_operators::embed::Precision::F32).unwrap();
    let ids: Vec<u32> = (0..16).map(|i| 1000 + i).collect();
    let batch: Vec<&[u32]> = (0..32).map(|_| ids.as_slice()).collect();
    for _ in 0..3 {
        m.forward(&batch).unwrap();
    }
    let t = std::time::Instant::now();
    m.forward(&batch).unwrap();
    eprintln!("total {:.1}ms", t.elapsed().as_secs_f64() * 1e3);
}
