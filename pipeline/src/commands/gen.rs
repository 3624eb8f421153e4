//! `ideaflow gen`: write a generated stream.

use std::io::Write;

use anyhow::{Context, Result};
use chrono::{DateTime, Duration, Utc};
use flate2::write::GzEncoder;
use ideaflow_sources::generator::{GenOptions, Generator};
use serde_json::Value;

use super::set_model_threads;
use crate::cli::GenArgs;
use crate::config::Config;
use crate::model_files::load_embedder;

pub fn run(args: GenArgs) -> Result<()> {
    let start: DateTime<Utc> = DateTime::parse_from_rfc3339(&args.start)
        .with_context(|| format!("--start {:?} is not RFC 3339", args.start))?
        .with_timezone(&Utc);
    let generator = Generator::new(GenOptions {
        signals: args.signals,
        seed: args.seed,
        feedback: args.feedback,
        corrections: args.corrections,
        synthetic_embeddings: args.synthetic_embeddings,
        base64_embeddings: args.base64_embeddings,
        start,
        span: Duration::days(args.days.max(1) as i64),
        max_delay: Duration::seconds(args.max_delay_secs as i64),
        ..GenOptions::default()
    });
    let mut embedder = if args.with_embeddings {
        let config = Config::load(&args.config)?;
        set_model_threads(config.model.threads);
        Some(load_embedder(&config.model)?)
    } else {
        None
    };
    let raw: Box<dyn Write> = if args.out.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let f = std::fs::File::create(&args.out)
            .with_context(|| format!("cannot create {}", args.out.display()))?;
        if args.out.extension().is_some_and(|e| e == "gz") {
            Box::new(GzEncoder::new(f, flate2::Compression::fast()))
        } else {
            Box::new(f)
        }
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 20, raw);
    let mut batch: Vec<String> = Vec::new();
    let mut lines = 0u64;
    let mut write_batch = |batch: &mut Vec<String>, out: &mut dyn Write| -> Result<()> {
        if let Some(embedder) = embedder.as_mut() {
            let mut values: Vec<Value> = batch
                .iter()
                .map(|l| serde_json::from_str(l))
                .collect::<Result<_, _>>()?;
            let idx: Vec<usize> = (0..values.len())
                .filter(|&i| values[i].get("content").is_some())
                .collect();
            let texts: Vec<&str> = idx
                .iter()
                .map(|&i| values[i]["content"].as_str().unwrap_or(""))
                .collect();
            let vectors = embedder.embed(&texts)?;
            for (&i, v) in idx.iter().zip(vectors) {
                values[i]["embedding"] = serde_json::json!(v);
            }
            for v in values {
                serde_json::to_writer(&mut *out, &v)?;
                out.write_all(b"\n")?;
            }
        } else {
            for l in batch.iter() {
                out.write_all(l.as_bytes())?;
                out.write_all(b"\n")?;
            }
        }
        batch.clear();
        Ok(())
    };
    for line in generator {
        batch.push(line);
        lines += 1;
        if batch.len() >= 512 {
            write_batch(&mut batch, &mut out)?;
        }
    }
    write_batch(&mut batch, &mut out)?;
    out.flush()?;
    drop(out);
    tracing::info!(lines, out = %args.out.display(), "generated");
    Ok(())
}
