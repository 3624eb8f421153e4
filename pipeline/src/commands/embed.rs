//! `ideaflow embed`: texts in, embeddings out, in input order.

use anyhow::{Context, Result};
use ideaflow_sinks::JsonlWriter;
use serde_json::{json, Value};

use super::{open_input, output_path, set_model_threads};
use crate::cli::EmbedArgs;
use crate::config::Config;
use crate::model_files::load_embedder;

pub fn run(args: EmbedArgs) -> Result<()> {
    let config = Config::load(&args.config)?;
    set_model_threads(config.model.threads);
    let mut embedder = load_embedder(&config.model)?;
    let input = open_input(args.input.as_deref())?;
    let mut out = JsonlWriter::create(&output_path(args.out))?;
    let mut ids: Vec<Value> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    let mut refused = 0u64;
    let chunk = args.chunk.max(1);
    let mut flush =
        |ids: &mut Vec<Value>, texts: &mut Vec<String>, out: &mut JsonlWriter| -> Result<()> {
            let vectors = embedder.embed(texts)?;
            for (id, v) in ids.drain(..).zip(vectors) {
                out.write(&json!({"id": id, "embedding": v}))?;
            }
            texts.clear();
            Ok(())
        };
    for (n, line) in std::io::BufRead::split(input, b'\n').enumerate() {
        let line = line.context("reading input failed")?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse(&line) {
            Ok((id, text)) => {
                ids.push(id);
                texts.push(text);
            }
            Err(why) => {
                refused += 1;
                tracing::warn!(line = n + 1, reason = why, "skipped input line");
            }
        }
        if texts.len() >= chunk {
            flush(&mut ids, &mut texts, &mut out)?;
        }
    }
    flush(&mut ids, &mut texts, &mut out)?;
    out.flush()?;
    if refused > 0 {
        tracing::warn!(
            refused,
            "some lines were not {{\"id\",\"text\"}} objects and were skipped"
        );
    }
    Ok(())
}

fn parse(line: &[u8]) -> Result<(Value, String), &'static str> {
    let v: Value = serde_json::from_slice(line).map_err(|_| "not valid JSON")?;
    let id = v.get("id").cloned().ok_or("no id")?;
    let text = v
        .get("text")
        .and_then(Value::as_str)
        .ok_or("no string text")?;
    Ok((id, text.to_owned()))
}
