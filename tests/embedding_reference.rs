//! The in-process embedder reproduces sentence-transformers (cosine >= 0.999)
//! on texts that stress tokenization and pooling; the fixture was made with
//! sentence-transformers itself (tests/fixtures/make_embedding_reference.py).

#[path = "common/mod.rs"]
mod common;

use common::*;
use ideaflow_operators::embed::{Blas, Embedder, EmbedderOptions, ModelFiles, Precision};

fn reference() -> Vec<serde_json::Value> {
    read_jsonl(&repo_root().join("tests/fixtures/embedding_reference.jsonl"))
}

fn load(options: EmbedderOptions) -> Embedder {
    let dir = model_dir();
    let files = ModelFiles {
        config_json: std::fs::read(dir.join("config.json")).unwrap(),
        tokenizer_json: std::fs::read(dir.join("tokenizer.json")).unwrap(),
        weights_safetensors: std::fs::read(dir.join("model.safetensors")).unwrap(),
    };
    Embedder::load(&files, options).expect("model loads")
}

#[test]
fn library_matches_sentence_transformers() {
    let refs = reference();
    let texts: Vec<&str> = refs.iter().map(|r| r["text"].as_str().unwrap()).collect();
    let mut embedder = load(EmbedderOptions::default());
    let got = embedder.embed(&texts).unwrap();
    for (r, v) in refs.iter().zip(&got) {
        assert_eq!(v.len(), 384);
        let c = cosine(v, &floats(&r["embedding"]));
        assert!(c >= 0.999, "{}: cosine {c} for {:?}", r["id"], r["text"]);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not unit length: {norm}");
    }
    // Everything pending went through few forward passes, not one per text.
    assert!(
        embedder.forward_passes() < texts.len() as u64 / 2,
        "{} passes",
        embedder.forward_passes()
    );
}

#[test]
fn batching_and_cache_do_not_change_results() {
    let refs = reference();
    let texts: Vec<&str> = refs.iter().map(|r| r["text"].as_str().unwrap()).collect();
    let mut one_by_one = load(EmbedderOptions {
        max_batch: 1,
        cache_capacity: 0,
        ..Default::default()
    });
    let mut batched = load(EmbedderOptions::default());
    let a: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| one_by_one.embed(&[*t]).unwrap().remove(0))
        .collect();
    let b = batched.embed(&texts).unwrap();
    // Bit-identical: a text's vector never depends on what it was batched with.
    assert_eq!(a, b);
    assert_eq!(other_batches(None, Precision::F32, &texts), b);
    // Second call is served from the cache, identically.
    let passes = batched.forward_passes();
    let c = batched.embed(&texts).unwrap();
    assert_eq!(b, c);
    assert_eq!(batched.forward_passes(), passes);
}

/// The MKL path (what `ideaflow` uses when scripts/setup.sh installed MKL)
/// meets the same bar: reference cosine, and bit-identical across batching.
#[test]
fn mkl_path_matches_and_is_batch_invariant() {
    let blas = ideaflow::blas::load(&mkl_config("f32")).expect("MKL loads");
    assert!(blas.is_some());
    let refs = reference();
    let texts: Vec<&str> = refs.iter().map(|r| r["text"].as_str().unwrap()).collect();
    let (mut batched, mut single) = batched_and_single(blas, Precision::F32);
    let b = batched.embed(&texts).unwrap();
    for (r, v) in refs.iter().zip(&b) {
        let c = cosine(v, &floats(&r["embedding"]));
        assert!(c >= 0.999, "{}: cosine {c}", r["id"]);
    }
    assert_eq!(one_at_a_time(&mut single, &texts), b);
    assert_eq!(other_batches(blas, Precision::F32, &texts), b);
}

/// The texts' vectors when they arrive in another order, in small batches
/// mixed with other texts (the rows of a product and the batches' token
/// counts all change): nothing in a text's vector may depend on that.
fn other_batches(blas: Option<Blas>, precision: Precision, texts: &[&str]) -> Vec<Vec<f32>> {
    let mut embedder = load(EmbedderOptions {
        blas,
        precision,
        max_batch: 5,
        max_batch_tokens: 300,
        cache_capacity: 0,
    });
    let mut mixed: Vec<String> = Vec::new();
    for (i, t) in texts.iter().enumerate().rev() {
        mixed.push(t.to_string());
        mixed.push(format!("filler {i}: {}", "a few more words ".repeat(i % 4)));
    }
    let vectors = embedder.embed(&mixed).unwrap();
    let mut ours: Vec<Vec<f32>> = vectors.into_iter().step_by(2).collect();
    ours.reverse();
    ours
}

/// The model config for MKL (what scripts/setup.sh installs) in `precision`.
fn mkl_config(precision: &str) -> ideaflow::config::ModelConfig {
    let lib = std::env::var_os("IDEAFLOW_MKL_LIB")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo_root().join("state/mkl/lib/libmkl_rt.so.2"));
    assert!(
        lib.exists(),
        "MKL is not installed at {}: run scripts/setup.sh",
        lib.display()
    );
    ideaflow::config::ModelConfig {
        blas: "mkl".into(),
        mkl_lib: lib,
        precision: precision.into(),
        ..Default::default()
    }
}

/// An embedder that batches as the pipeline does, and one that embeds each
/// text alone with no cache.
fn batched_and_single(blas: Option<Blas>, precision: Precision) -> (Embedder, Embedder) {
    let batched = load(EmbedderOptions {
        blas,
        precision,
        ..Default::default()
    });
    let single = load(EmbedderOptions {
        blas,
        precision,
        max_batch: 1,
        cache_capacity: 0,
        ..Default::default()
    });
    (batched, single)
}

fn one_at_a_time(embedder: &mut Embedder, texts: &[&str]) -> Vec<Vec<f32>> {
    texts
        .iter()
        .map(|t| embedder.embed(&[*t]).unwrap().remove(0))
        .collect()
}

/// `model.precision = "bf16"` where the CPU has AVX-512 BF16: every vector
/// of the fixture (many languages, emoji, empty, past 256 tokens) at cosine
/// ≥ 0.999 to the f32 path's and to sentence-transformers', and bit-identical
/// whatever it is batched with. Elsewhere the setting is refused, saying why.
#[test]
fn bf16_path_holds_the_f32_vectors_and_is_batch_invariant() {
    let config = mkl_config("bf16");
    let blas = ideaflow::blas::load(&config).expect("MKL loads (scripts/setup.sh)");
    if !ideaflow::blas::cpu_has_bf16() {
        let err = ideaflow::blas::precision(&config, blas.as_ref()).unwrap_err();
        assert!(err.to_string().contains("AVX-512 BF16"), "{err}");
        eprintln!("this CPU has no AVX-512 BF16: checked that bf16 is refused");
        return;
    }
    let precision = ideaflow::blas::precision(&config, blas.as_ref()).expect("bf16 offered");
    assert_eq!(precision, Precision::Bf16);
    let refs = reference();
    let texts: Vec<&str> = refs.iter().map(|r| r["text"].as_str().unwrap()).collect();
    let mut f32_path = load(EmbedderOptions {
        blas,
        ..Default::default()
    });
    let (mut batched, mut single) = batched_and_single(blas, precision);
    let full = f32_path.embed(&texts).unwrap();
    let b = batched.embed(&texts).unwrap();
    for ((r, v), w) in refs.iter().zip(&b).zip(&full) {
        assert_ne!(
            v, w,
            "{}: bf16 gave the f32 vector: is bf16 in use?",
            r["id"]
        );
        let to_f32 = cosine(v, w);
        let to_st = cosine(v, &floats(&r["embedding"]));
        assert!(
            to_f32 >= 0.999 && to_st >= 0.999,
            "{}: cosine {to_f32} / {to_st}",
            r["id"]
        );
    }
    assert_eq!(one_at_a_time(&mut single, &texts), b);
    assert_eq!(other_batches(blas, precision, &texts), b);
}

/// Precisions this build does not offer are refused with what to set instead.
#[test]
fn unoffered_precisions_are_refused_with_the_alternative() {
    for (precision, blas, says) in [
        ("int8", "mkl", "not offered"),
        ("fp8", "mkl", "use \"f32\" or \"bf16\""),
        ("bf16", "builtin", "MKL"),
    ] {
        let config = ideaflow::config::ModelConfig {
            blas: blas.into(),
            mkl_lib: repo_root().join("state/mkl/lib/libmkl_rt.so.2"),
            precision: precision.into(),
            ..Default::default()
        };
        let loaded = ideaflow::blas::load(&config).unwrap();
        let err = ideaflow::blas::precision(&config, loaded.as_ref()).unwrap_err();
        assert!(err.to_string().contains(says), "{precision}: {err}");
    }
}

#[test]
fn embed_command_matches_in_input_order() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let out = dir.path().join("out.jsonl");
    let refs = reference();
    let mut lines: Vec<String> = refs
        .iter()
        .map(|r| serde_json::json!({"id": r["id"], "text": r["text"]}).to_string())
        .collect();
    lines.insert(3, "not json at all".into());
    std::fs::write(&input, lines.join("\n")).unwrap();
    ok(ideaflow()
        .args(["embed", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out));
    let got = read_jsonl(&out);
    assert_eq!(got.len(), refs.len());
    for (r, g) in refs.iter().zip(&got) {
        assert_eq!(r["id"], g["id"], "output keeps input order");
        let c = cosine(&floats(&g["embedding"]), &floats(&r["embedding"]));
        assert!(c >= 0.999, "{}: cosine {c}", r["id"]);
    }
}

#[test]
fn embed_command_reads_stdin() {
    use std::io::Write;
    let mut child = ideaflow()
        .arg("embed")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"id\":1,\"text\":\"cats in hats\"}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["id"], 1);
    assert_eq!(v["embedding"].as_array().unwrap().len(), 384);
}
