//! `ideaflow checkpoint inspect DIR`: what each checkpoint holds, for ops.

use anyhow::{bail, Result};
use chrono::DateTime;

use crate::checkpoint::format::Header;
use crate::checkpoint::store;
use crate::cli::CheckpointInspectArgs;

pub fn inspect(args: CheckpointInspectArgs) -> Result<()> {
    let paths = if args.dir.is_dir() {
        store::list(&args.dir)?
    } else if args.dir.is_file() {
        vec![args.dir.clone()]
    } else {
        bail!(
            "{} is neither a checkpoint directory nor a checkpoint file; give pipeline.checkpoint_dir",
            args.dir.display()
        );
    };
    if paths.is_empty() {
        println!("no checkpoints in {}", args.dir.display());
        return Ok(());
    }
    let mut newest_whole = true;
    for (i, path) in paths.iter().enumerate() {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let (header, state) = match store::inspect(path) {
            Ok((header, body)) => (Some(header), body.map_err(|e| e.to_string())),
            Err(e) => (None, Err(e.to_string())),
        };
        if i == 0 && state.is_err() {
            newest_whole = false;
        }
        if args.json {
            let line = serde_json::json!({
                "path": path,
                "bytes": size,
                "whole": state.is_ok(),
                "problem": state.as_ref().err(),
                "header": header,
            });
            println!("{line}");
        } else {
            print_text(path, size, header.as_ref(), &state);
        }
    }
    if !newest_whole {
        bail!(
            "the newest checkpoint is not whole: a restart falls back to an older one, or rebuilds"
        );
    }
    Ok(())
}

fn print_text(
    path: &std::path::Path,
    size: u64,
    header: Option<&Header>,
    state: &Result<(), String>,
) {
    let time = |secs: i64| {
        DateTime::from_timestamp(secs, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| secs.to_string())
    };
    println!("{}", path.display());
    println!("  size            {size} bytes");
    match state {
        Ok(()) => println!("  checksums       ok (header and state)"),
        Err(e) => println!("  checksums       NOT OK: {e}"),
    }
    let Some(h) = header else {
        return;
    };
    println!("  format version  {}", h.version);
    println!(
        "  holds epochs    before {} ({})",
        time(h.complete_before as i64),
        h.complete_before
    );
    println!(
        "  watermark       {}",
        h.watermark.map_or("none".into(), time)
    );
    println!("  written at      {}", h.written_at);
    println!("  settings        {}", h.fingerprint);
    println!(
        "  ideas           {} live, {} archived; {} signals remembered for redeliveries; {} feedback events waiting",
        h.counts.live_ideas, h.counts.archived_ideas, h.counts.seen_signals, h.counts.pending_feedback
    );
    println!("  vectors         {}", h.counts.vectors);
    for p in &h.positions {
        println!(
            "  source          {} partition {}: read through {}, read again from {}, watermark {}",
            p.source,
            p.partition,
            p.read_through,
            p.resume,
            p.watermark.map_or("none".into(), time)
        );
    }
}
