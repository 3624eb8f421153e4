//! `ideaflow produce`: appends JSON Lines to a bus, one record per line,
//! each batch acknowledged by the bus before the next: a real producer for
//! tests, benchmarks and backfills.

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use ideaflow_sources::input::InputSpec;

use crate::cli::ProduceArgs;

pub fn run(args: ProduceArgs) -> Result<()> {
    let spec = InputSpec::parse(&args.to)?;
    let mut bus = ideaflow_sources::bus::open_append(&spec).ok_or_else(|| {
        anyhow!(
            "{} is not a bus: produce takes kafka:// or redis:// URLs",
            args.to
        )
    })??;
    let reader = open(args.input.as_deref())?;
    let batch_size = args.batch.max(1);
    let started = Instant::now();
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(batch_size);
    let mut sent = 0u64;
    let mut lines = reader.split(b'\n');
    loop {
        let line = lines
            .next()
            .transpose()
            .context("reading the input failed")?;
        let end = line.is_none();
        if let Some(mut line) = line {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                batch.push(line);
            }
        }
        if batch.len() >= batch_size || (end && !batch.is_empty()) {
            append_with_retries(bus.as_mut(), &batch)?;
            sent += batch.len() as u64;
            batch.clear();
            if args.rate > 0.0 {
                let due = Duration::from_secs_f64(sent as f64 / args.rate);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        if end {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "ideaflow produce: {sent} records to {} in {secs:.2}s ({:.0}/s)",
        bus.name(),
        sent as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// A batch appended, tried again for a while if the bus is unreachable.
fn append_with_retries(
    bus: &mut dyn ideaflow_sources::bus::Append,
    batch: &[Vec<u8>],
) -> Result<()> {
    let started = Instant::now();
    let mut wait = Duration::from_millis(100);
    loop {
        match bus.append(batch) {
            Ok(_) => return Ok(()),
            Err(e) if !e.is_fatal() && started.elapsed() < Duration::from_secs(30) => {
                tracing::warn!(error = %e, "appending failed; retrying");
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                return Err(anyhow!(
                    "{e}; nothing after the records already acknowledged was appended"
                ))
            }
        }
    }
}

fn open(path: Option<&std::path::Path>) -> Result<Box<dyn BufRead>> {
    let raw: Box<dyn Read> = match path {
        None => Box::new(std::io::stdin()),
        Some(p) if p.as_os_str() == "-" => Box::new(std::io::stdin()),
        Some(p) => Box::new(
            std::fs::File::open(p)
                .with_context(|| format!("cannot open input {}: check the path", p.display()))?,
        ),
    };
    let mut buffered = BufReader::with_capacity(1 << 16, raw);
    let gzip = buffered.fill_buf().map(|b| b.starts_with(&[0x1f, 0x8b]))?;
    Ok(if gzip {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(buffered)))
    } else {
        Box::new(buffered)
    })
}
