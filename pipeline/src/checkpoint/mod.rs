//! Checkpoints: the whole operator state at a committed epoch, so that a
//! restart resumes from it instead of rebuilding the state from the inputs.
//!
//! - [`format`]: a checkpoint file's layout (header, checksums, versions);
//! - [`store`]: the directory (atomic writes, the newest few kept, the
//!   newest usable one found);
//! - [`capture`]: taking one from a running pipeline, and what a restart
//!   takes back ([`capture::Resumed`]).
//!
//! What makes a checkpoint usable: it reads back whole (checksums), it is
//! of this build's format version, and it was taken under the same
//! [`fingerprint`]: the same inputs and the same settings that change
//! results. Otherwise the previous one is tried, else the state is rebuilt
//! from the inputs; the log says which and why.

pub mod capture;
pub mod format;
pub mod restart;
pub mod store;
pub mod trim;

use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::Config;

/// Hex SHA-256 of everything that changes what a run computes: the inputs
/// (in order), the settings of the operators, the model, the sinks'
/// identity, and the contents of the files the settings name. Settings
/// that only change how fast or where things go (workers, batch sizes,
/// addresses, the API) are left out.
pub fn fingerprint(config: &Config) -> String {
    #[derive(Serialize)]
    struct Results<'a> {
        inputs: &'a [String],
        epoch_secs: u64,
        allowed_lateness_secs: u64,
        max_future_secs: u64,
        model_dir: &'a Path,
        blas: &'a str,
        precision: &'a str,
        classifier: &'a crate::config::ClassifierConfig,
        classify: &'a crate::config::ClassifyConfig,
        categories: &'a std::collections::BTreeMap<String, String>,
        dedupe: &'a ideaflow_operators::idea_state::DedupeParams,
        windows: &'a ideaflow_operators::idea_state::WindowParams,
        scoring: &'a ideaflow_operators::score::ScoringParams,
        feedback: &'a ideaflow_operators::feedback::FeedbackParams,
        calendar: &'a Path,
        top_k: usize,
        namespace: &'a str,
        schema: &'a str,
    }
    let results = Results {
        inputs: &config.pipeline.inputs,
        epoch_secs: config.pipeline.epoch_secs,
        allowed_lateness_secs: config.pipeline.allowed_lateness_secs,
        max_future_secs: config.pipeline.max_future_secs,
        model_dir: &config.model.dir,
        blas: &config.model.blas,
        precision: &config.model.precision,
        classifier: &config.classifier,
        classify: &config.classify,
        categories: &config.categories,
        dedupe: &config.dedupe,
        windows: &config.windows,
        scoring: &config.scoring,
        feedback: &config.feedback,
        calendar: &config.calendar.path,
        top_k: config.redis.top_k,
        namespace: &config.redis.namespace,
        schema: &config.postgres.schema,
    };
    let mut hash = Sha256::new();
    hash.update(serde_json::to_vec(&results).unwrap_or_default());
    // The files the settings name: their contents, not their names.
    for path in [
        config.calendar.path.as_path(),
        config.classifier.examples.as_path(),
        config.classifier.category_examples.as_path(),
        config.classifier.weights_file.as_path(),
        config.classifier.category_weights_file.as_path(),
        &config.model.dir.join("model.safetensors"),
    ] {
        hash.update(path.as_os_str().as_encoded_bytes());
        match file_digest(path) {
            Some(d) => hash.update(d),
            None => hash.update(b"absent"),
        }
    }
    hex::encode(hash.finalize())
}

/// The SHA-256 of a file's contents; for the model's weights (~90 MB), of
/// its size and first and last megabyte, which any other weights change.
fn file_digest(path: &Path) -> Option<[u8; 32]> {
    use std::io::{Read, Seek, SeekFrom};
    const PART: u64 = 1 << 20;
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let mut hash = Sha256::new();
    hash.update(len.to_le_bytes());
    let mut buf = Vec::new();
    if len <= 4 * PART {
        file.read_to_end(&mut buf).ok()?;
        hash.update(&buf);
    } else {
        buf.resize(PART as usize, 0);
        file.read_exact(&mut buf).ok()?;
        hash.update(&buf);
        file.seek(SeekFrom::End(-(PART as i64))).ok()?;
        file.read_exact(&mut buf).ok()?;
        hash.update(&buf);
    }
    Some(hash.finalize().into())
}
