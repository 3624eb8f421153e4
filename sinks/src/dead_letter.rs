//! The dead-letter sink: every refused record, with its reason and position,
//! appended as JSON Lines. Counts per reason are kept for metrics and summaries.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ideaflow_operators::{DeadLetter, RejectReason};

use crate::jsonl::{JsonlError, JsonlWriter};

/// Dead letters written but not yet materialized: the materializer drains it
/// with every epoch, so refused records reach Postgres while the run goes on.
pub type DeadLetterTap = Arc<Mutex<Vec<KeyedDeadLetter>>>;

/// A dead letter and the key that makes writing it again (after a restart)
/// leave one row: `r{n}` for the n-th record the sources refused, `d{n}`
/// for the dataflow's n-th refusal (its view key).
pub type KeyedDeadLetter = (String, DeadLetter);

pub struct DeadLetterSink {
    writer: JsonlWriter,
    counts: BTreeMap<RejectReason, u64>,
    tap: Option<DeadLetterTap>,
}

impl DeadLetterSink {
    pub fn open(path: &Path, append: bool) -> Result<Self, JsonlError> {
        let writer = if append {
            JsonlWriter::append(path)?
        } else {
            JsonlWriter::create(path)?
        };
        Ok(DeadLetterSink {
            writer,
            counts: BTreeMap::new(),
            tap: None,
        })
    }

    /// The dead-letter file cut back to its first `len` bytes and appended
    /// to, its counts going on from `counts` (a restart from a checkpoint).
    pub fn continue_at(
        path: &Path,
        len: u64,
        counts: BTreeMap<RejectReason, u64>,
    ) -> Result<Self, JsonlError> {
        Ok(DeadLetterSink {
            writer: JsonlWriter::continue_at(path, len)?,
            counts,
            tap: None,
        })
    }

    /// Also hands every dead letter to `tap`.
    pub fn with_tap(mut self, tap: DeadLetterTap) -> Self {
        self.tap = Some(tap);
        self
    }

    pub fn write(&mut self, dl: &DeadLetter) -> Result<(), JsonlError> {
        let n = self.total();
        *self.counts.entry(dl.reason).or_default() += 1;
        if let Some(tap) = &self.tap {
            tap.lock()
                .expect("not poisoned")
                .push((format!("r{n}"), dl.clone()));
        }
        self.writer.write(dl)
    }

    pub fn counts(&self) -> &BTreeMap<RejectReason, u64> {
        &self.counts
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    pub fn flush(&mut self) -> Result<(), JsonlError> {
        self.writer.flush()
    }

    pub fn path(&self) -> &Path {
        self.writer.path()
    }
}
