//! What the benchmarks share: arguments, the repository's config, a null sink.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use ideaflow::config::Config;
use ideaflow::dataflow::deliver::EpochConsumer;
use ideaflow_operators::views::Change;

/// Counts changes (the rows a sink would write) and drops them.
pub struct NullSink(pub Arc<AtomicU64>);

impl EpochConsumer for NullSink {
    fn epoch(
        &mut self,
        _epoch_end: i64,
        changes: &mut Vec<Change>,
        _moves: std::collections::BTreeMap<String, ideaflow_operators::top_k::TopKDelta>,
    ) -> Result<()> {
        self.0.fetch_add(changes.len() as u64, Ordering::Relaxed);
        changes.clear();
        Ok(())
    }
}

/// `--name VALUE` from the command line, or `default`.
pub fn arg(name: &str, default: &str) -> String {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter()
        .position(|a| a == name)
        .and_then(|i| argv.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The repository's config file at `path`, with its paths made absolute.
pub fn config(path: &str) -> Result<Config> {
    let mut c = Config::load(&repo().join(path))?;
    c.model.dir = std::env::var_os("IDEAFLOW_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("models/all-MiniLM-L6-v2"));
    c.calendar.path = repo().join("config/calendar.csv");
    c.classifier.examples = repo().join(&c.classifier.examples);
    c.classifier.category_examples = repo().join(&c.classifier.category_examples);
    // The saved classifiers: without them every bench run would train both
    // at start (embedding 2,000 examples) before its first measurement.
    for file in [
        &mut c.classifier.weights_file,
        &mut c.classifier.category_weights_file,
    ] {
        if !file.as_os_str().is_empty() {
            *file = repo().join(&*file);
        }
    }
    c.model.mkl_lib = repo().join(&c.model.mkl_lib);
    Ok(c)
}
