//! One module per subcommand; each turns its arguments into work and reports.

pub mod checkpoint;
pub mod classify;
pub mod embed;
pub mod gen;
pub mod migrate;
pub mod normalize;
pub mod produce;
pub mod replay;
pub mod run;
pub mod top;
pub mod validate;
pub mod verify;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::cluster::Cluster;
use crate::config::Config;
use crate::core_setup::CoreSetup;
use crate::model_files::ModelSource;

/// A following process of a cluster (`--process` > 0): its workers embed and
/// prepare signals for process 0, which reads the inputs and writes every
/// output, until process 0's run ends. `write_signals` tells whether the
/// leader's command writes the embedded signals (`run` does): every process
/// must build the same dataflow.
pub fn follow(
    config: &Config,
    cluster: &Cluster,
    write_signals: bool,
    command: &str,
) -> Result<()> {
    set_model_threads(config.model.threads);
    let (model, mut embedder) = ModelSource::open(&config.model)?;
    let core = Arc::new(CoreSetup::build(config, &mut embedder)?);
    drop(embedder);
    crate::dataflow::run_dataflow(config, Some(cluster), None, model, core, write_signals)?;
    println!(
        "ideaflow {command}: process {} of {} done (it embedded and prepared signals; process 0 wrote the outputs)",
        cluster.process,
        cluster.processes()
    );
    Ok(())
}

/// Standard input for `None` or `-`, the file otherwise.
pub fn open_input(path: Option<&Path>) -> Result<Box<dyn BufRead>> {
    match path {
        None => Ok(Box::new(BufReader::new(std::io::stdin()))),
        Some(p) if p.as_os_str() == "-" => Ok(Box::new(BufReader::new(std::io::stdin()))),
        Some(p) => {
            let f = std::fs::File::open(p)
                .with_context(|| format!("cannot open input {}: check the path", p.display()))?;
            Ok(Box::new(BufReader::new(f)))
        }
    }
}

pub fn read_all(path: Option<&Path>) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    open_input(path)?
        .read_to_end(&mut buf)
        .context("reading input failed")?;
    Ok(buf)
}

/// `-` for standard output when no path is given.
pub fn output_path(path: Option<PathBuf>) -> PathBuf {
    path.unwrap_or_else(|| PathBuf::from("-"))
}

/// Caps the threads the model's kernels use, before any pool starts.
pub fn set_model_threads(threads: usize) {
    if threads > 0 && std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
}
