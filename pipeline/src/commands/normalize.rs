//! `ideaflow normalize`: raw platform payloads to canonical Signals.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use ideaflow_sinks::JsonlWriter;
use ideaflow_sources::adapters::{adapt, AdaptOptions};
use serde_json::json;

use super::{output_path, read_all};
use crate::cli::NormalizeArgs;

pub fn run(args: NormalizeArgs) -> Result<()> {
    let adapter = args.adapter;
    let captured_at = args
        .captured_at
        .as_deref()
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .with_context(|| {
                    format!("--captured-at {s:?} is not RFC 3339 (e.g. 2024-01-15T10:30:00Z)")
                })
        })
        .transpose()?;
    let input = read_all(args.input.as_deref())?;
    let source_name = args
        .input
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "-".into());
    let mut out = JsonlWriter::create(&output_path(args.out))?;
    let mut dead = match &args.dead_letter {
        Some(p) => Some(JsonlWriter::create(p)?),
        None => None,
    };
    let (mut ok, mut refused) = (0u64, 0u64);
    for item in adapt(adapter, &input, &AdaptOptions { captured_at }) {
        match item {
            Ok(signal) => {
                out.write(&signal)?;
                ok += 1;
            }
            Err((record, rejection)) => {
                refused += 1;
                let record = json!({
                    "reason": rejection.reason,
                    "message": rejection.message,
                    "position": {"file": source_name, "record": record},
                    "adapter": adapter.name(),
                });
                match dead.as_mut() {
                    Some(d) => d.write(&record)?,
                    None => eprintln!("{record}"),
                }
            }
        }
    }
    out.flush()?;
    tracing::info!(
        adapter = adapter.name(),
        signals = ok,
        refused,
        "normalized"
    );
    Ok(())
}
