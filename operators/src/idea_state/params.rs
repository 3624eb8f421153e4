//! The idea state's settings: `[dedupe]` and `[windows]` in the config.

use serde::{Deserialize, Serialize};

use crate::dedupe::LshParams;

/// Dedupe settings (`[dedupe]` in the config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DedupeParams {
    /// Cosine at or above which a signal merges into a live idea.
    pub near_threshold: f32,
    /// An idea not seen for this long is archived and no longer merged into.
    pub retention_secs: i64,
    /// An archived idea is forgotten this long after it was archived: what
    /// it kept to resume (counts, first sighting, last factors) leaves
    /// memory, and its content seen again starts it over. 0: never.
    pub forget_archived_secs: i64,
    /// Expected distinct contents per Bloom generation.
    pub bloom_capacity: usize,
    /// False-positive rate per generation.
    pub bloom_fp_rate: f64,
    /// Generations the retention is split into (memory = generations × one).
    pub bloom_generations: usize,
    /// LSH bands and bits per band (see `dedupe::lsh` for the collision law).
    pub lsh_bands: usize,
    pub lsh_bits: usize,
    /// How long (event time) a delivered record is remembered so that a
    /// redelivery changes nothing: an envelope's `eventId`, and a signal's
    /// `(source, id)` after its latest capture (a later poll of it replaces
    /// its engagement instead of adding to it). 0: no redelivery protection.
    pub event_id_horizon_secs: i64,
}

impl DedupeParams {
    pub fn lsh(&self) -> LshParams {
        LshParams {
            bands: self.lsh_bands,
            bits: self.lsh_bits,
            ..LshParams::default()
        }
    }
}

impl Default for DedupeParams {
    fn default() -> Self {
        DedupeParams {
            near_threshold: 0.88,
            retention_secs: 7 * 86_400,
            forget_archived_secs: 30 * 86_400,
            bloom_capacity: 1_000_000,
            bloom_fp_rate: 0.001,
            bloom_generations: 8,
            lsh_bands: LshParams::default().bands,
            lsh_bits: LshParams::default().bits,
            event_id_horizon_secs: crate::redelivery::DEFAULT_HORIZON_SECS,
        }
    }
}

/// Window settings (`[windows]` in the config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WindowParams {
    /// Sliding window of the centroids, the topic counts and the engagement statistics.
    pub window_secs: i64,
    /// Tumbling window of the distinct counts.
    pub distinct_window_secs: i64,
    pub distinct_error_rate: f64,
    /// Event-time period on which time-driven factors are re-evaluated.
    pub tick_secs: i64,
}

impl Default for WindowParams {
    fn default() -> Self {
        WindowParams {
            window_secs: 7 * 86_400,
            distinct_window_secs: 86_400,
            distinct_error_rate: 0.01,
            tick_secs: 3_600,
        }
    }
}
