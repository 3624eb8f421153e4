//! The dead-letter sink: every refused record, with its reason and position,
//! appended as JSON Lines. Counts per reason are kept for metrics and summaries.

use std::collections::BTreeMap;
use std::path::Path;

use ideaflow_operators::{DeadLetter, RejectReason};

use crate::jsonl::{JsonlError, JsonlWriter};

pub struct DeadLetterSink {
    writer: JsonlWriter,
    counts: BTreeMap<RejectReason, u64>,
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
        })
    }

    pub fn write(&mut self, dl: &DeadLetter) -> Result<(), JsonlError> {
        *self.counts.entry(dl.reason).or_default() += 1;
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
