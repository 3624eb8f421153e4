//! Embedding throughput, ideaflow (candle) next to sentence-transformers on the
//! same texts, batch sizes and thread count, measured in the same run.
//!
//!     scripts/bench-embed.sh            # sets up sentence-transformers, then runs this
//!     cargo bench --bench embed_throughput -- --threads 2 --texts 512
//!     cargo bench --bench embed_throughput -- --precisions f32,bf16
//!
//! Prints texts/s for each side and the ratio ideaflow / sentence-transformers,
//! for each `model.precision` (by default f32, and bf16 where the CPU has
//! AVX-512 BF16), the precisions alternating within each batch size.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use ideaflow_operators::embed::{Embedder, EmbedderOptions, ModelFiles};
use ideaflow_sources::generator::{GenOptions, Generator};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    threads: usize,
    texts: usize,
    batches: Vec<usize>,
    min_secs: f64,
    python: String,
    blas: Option<String>,
    precisions: Vec<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        threads: 2,
        texts: 512,
        batches: vec![1, 32, 128],
        min_secs: 3.0,
        python: "python3".into(),
        blas: None,
        precisions: if ideaflow::blas::cpu_has_bf16() {
            vec!["f32".into(), "bf16".into()]
        } else {
            vec!["f32".into()]
        },
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let next = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--threads" => a.threads = next.parse().expect("--threads N"),
            "--texts" => a.texts = next.parse().expect("--texts N"),
            "--batches" => {
                a.batches = next
                    .split(',')
                    .map(|b| b.parse().expect("--batches 1,32,128"))
                    .collect()
            }
            "--min-secs" => a.min_secs = next.parse().expect("--min-secs S"),
            "--python" => a.python = next,
            "--blas" => a.blas = Some(next),
            "--precisions" => a.precisions = next.split(',').map(str::to_owned).collect(),
            _ => {
                i += 1;
                continue; // cargo bench passes --bench
            }
        }
        i += 2;
    }
    a
}

fn main() {
    let args = parse_args();
    // Before any thread pool exists.
    std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let model_dir = std::env::var_os("IDEAFLOW_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("models/all-MiniLM-L6-v2"));
    let texts: Vec<String> = Generator::new(GenOptions {
        signals: args.texts as u64 * 2,
        seed: 3,
        ..Default::default()
    })
    .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
    .filter_map(|v| v["content"].as_str().map(str::to_owned))
    .collect::<std::collections::BTreeSet<_>>()
    .into_iter()
    .take(args.texts)
    .collect();
    let texts_path = std::env::temp_dir().join("ideaflow-bench-texts.jsonl");
    std::fs::write(
        &texts_path,
        texts
            .iter()
            .map(|t| serde_json::json!({"text": t}).to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let files = ModelFiles {
        config_json: std::fs::read(model_dir.join("config.json"))
            .expect("model installed (scripts/setup.sh)"),
        tokenizer_json: std::fs::read(model_dir.join("tokenizer.json")).unwrap(),
        weights_safetensors: std::fs::read(model_dir.join("model.safetensors")).unwrap(),
    };
    let mut model_config = ideaflow::config::ModelConfig {
        threads: args.threads,
        ..Default::default()
    };
    if let Some(b) = &args.blas {
        model_config.blas = b.clone();
    }
    model_config.mkl_lib = root.join(&model_config.mkl_lib);
    let blas = ideaflow::blas::load(&model_config).expect("BLAS loads");
    let backend = if blas.is_some() { "MKL" } else { "candle gemm" };
    let precisions: Vec<_> = args
        .precisions
        .iter()
        .map(|p| {
            let config = ideaflow::config::ModelConfig {
                precision: p.clone(),
                ..model_config.clone()
            };
            ideaflow::blas::precision(&config, blas.as_ref())
                .expect("a precision this machine offers")
        })
        .collect();
    // ours[precision][batch]
    let mut ours = vec![Vec::new(); precisions.len()];
    for &b in &args.batches {
        for (i, &precision) in precisions.iter().enumerate() {
            // The cache is off: every text runs through the model.
            let mut e = Embedder::load(
                &files,
                EmbedderOptions {
                    max_batch: b,
                    cache_capacity: 0,
                    blas,
                    precision,
                    ..Default::default()
                },
            )
            .unwrap();
            e.embed(&texts[..32.min(texts.len())]).unwrap(); // warm up
            let (mut done, start) = (0usize, Instant::now());
            loop {
                for chunk in texts.chunks(b) {
                    e.embed(chunk).unwrap();
                }
                done += texts.len();
                if start.elapsed().as_secs_f64() >= args.min_secs {
                    break;
                }
            }
            ours[i].push(done as f64 / start.elapsed().as_secs_f64());
        }
    }
    let batches = args
        .batches
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let st = Command::new(&args.python)
        .arg(root.join("benches/st_throughput.py"))
        .arg(&model_dir)
        .arg(&texts_path)
        .arg(args.threads.to_string())
        .arg(&batches)
        .arg(args.min_secs.to_string())
        .env("HF_HUB_OFFLINE", "1")
        .output();
    let theirs: Option<serde_json::Value> = match st {
        Ok(o) if o.status.success() => serde_json::from_slice(
            o.stdout
                .rsplit(|b| *b == b'\n')
                .find(|l| !l.is_empty())
                .unwrap_or(b""),
        )
        .ok(),
        Ok(o) => {
            eprintln!(
                "sentence-transformers side failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!(
                "cannot run {}: {e}; run scripts/bench-embed.sh to set up sentence-transformers",
                args.python
            );
            None
        }
    };
    let avg_tokens: f64 = texts
        .iter()
        .map(|t| t.split_whitespace().count() as f64)
        .sum::<f64>()
        / texts.len() as f64;
    println!("embedding throughput: {} texts (~{avg_tokens:.1} words each), {} thread(s), dense layers on {backend}", texts.len(), args.threads);
    println!(
        "{:>6} {:>10} {:>16} {:>22} {:>8} {:>10}",
        "batch", "precision", "ideaflow texts/s", "sentence-transformers", "ratio", "vs f32"
    );
    for (j, &b) in args.batches.iter().enumerate() {
        let st = theirs
            .as_ref()
            .and_then(|v| v["texts_per_sec"][b.to_string()].as_f64());
        for (i, name) in args.precisions.iter().enumerate() {
            let rate = ours[i][j];
            let vs_f32 = format!("{:.2}x", rate / ours[0][j]);
            match st {
                Some(s) => println!(
                    "{b:>6} {name:>10} {rate:>16.1} {s:>22.1} {:>7.2}x {vs_f32:>10}",
                    rate / s
                ),
                None => println!(
                    "{b:>6} {name:>10} {rate:>16.1} {:>22} {:>8} {vs_f32:>10}",
                    "n/a", "n/a"
                ),
            }
        }
    }
}
