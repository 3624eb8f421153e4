//! `pipeline.trim_sources`: once a checkpoint is written, each Redis stream
//! input drops the entries before the oldest kept checkpoint's resume point.
//! A restart reads after its checkpoint's resume point, and a fall-back
//! reads after an older kept one's, so neither needs what went.

use std::collections::BTreeMap;

use ideaflow_sources::bus::redis_streams;
use ideaflow_sources::bus::EntryId;
use ideaflow_sources::input::{InputSpec, RedisStreamSpec};

use super::capture::SavedPosition;
use super::format::Header;

/// The Redis stream inputs, by source name.
#[derive(Clone, Debug)]
pub struct Trimmer {
    streams: Vec<(String, RedisStreamSpec)>,
}

impl Trimmer {
    /// A trimmer for these inputs' Redis streams (`None` when there are none).
    pub fn new(inputs: &[InputSpec]) -> Option<Trimmer> {
        let streams: Vec<(String, RedisStreamSpec)> = inputs
            .iter()
            .filter_map(|spec| match spec {
                InputSpec::RedisStream(r) => Some((spec.to_string(), r.clone())),
                _ => None,
            })
            .collect();
        (!streams.is_empty()).then_some(Trimmer { streams })
    }

    /// Trims each stream to the oldest resume point among `kept` (the
    /// checkpoints kept); a stream some kept checkpoint reads from its start
    /// is left whole.
    pub fn trim(&self, kept: &[Header]) {
        for (name, spec) in &self.streams {
            let Some(keep_from) = oldest_resume_point(kept, name) else {
                continue;
            };
            match redis_streams::trim_before(spec, name, keep_from) {
                Ok(dropped) => tracing::info!(
                    source = %name,
                    keep_from = %keep_from,
                    dropped,
                    "trimmed the stream up to the oldest kept checkpoint's resume point"
                ),
                Err(e) => tracing::warn!(
                    source = %name,
                    error = %e,
                    "could not trim the stream; it is tried again after the next checkpoint"
                ),
            }
        }
    }
}

/// The earliest entry some kept checkpoint reads again after, if every one
/// of them has a resume point in `source` (partition 0: a stream has one).
fn oldest_resume_point(kept: &[Header], source: &str) -> Option<EntryId> {
    let mut points = BTreeMap::new();
    for header in kept {
        let after = header
            .positions
            .iter()
            .find(|p| p.source == source && p.partition == 0)
            .and_then(|p| p.resume_after);
        match after {
            Some(SavedPosition::Entry(ms, seq)) => {
                points.insert(EntryId { ms, seq }, ());
            }
            _ => return None,
        }
    }
    points.into_keys().next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::format::{Counts, SourcePosition};

    fn header(after: Option<SavedPosition>) -> Header {
        Header {
            version: 2,
            fingerprint: String::new(),
            complete_before: 0,
            watermark: None,
            written_at: String::new(),
            positions: vec![SourcePosition {
                source: "s".into(),
                partition: 0,
                read_through: String::new(),
                resume: String::new(),
                resume_after: after,
                watermark: None,
            }],
            counts: Counts::default(),
        }
    }

    #[test]
    fn the_oldest_kept_resume_point_bounds_the_trim() {
        let newer = header(Some(SavedPosition::Entry(20, 1)));
        let older = header(Some(SavedPosition::Entry(10, 4)));
        assert_eq!(
            oldest_resume_point(&[newer.clone(), older], "s"),
            Some(EntryId { ms: 10, seq: 4 })
        );
        // A kept checkpoint reading the stream from its start: nothing goes.
        assert_eq!(
            oldest_resume_point(&[newer.clone(), header(None)], "s"),
            None
        );
        assert_eq!(oldest_resume_point(&[newer], "other"), None);
    }
}
