//! Where each source would be read again from, should the run restart from
//! a checkpoint taken now.
//!
//! A checkpoint holds every epoch before its own, W. Records read before it
//! whose epochs are W or later are in no checkpoint: they are still on
//! their way through the dataflow. A restart must read them again, so each
//! source's resume point is where the first such record was read (or, when
//! there is none, where the source stands). What a restart reads between
//! its resume point and where the source had been read is skipped when the
//! checkpoint holds it, and taken again otherwise
//! ([`super::source`]'s catching up).
//!
//! With each point goes what the source's reader knew just before it (the
//! largest event time it had seen, that is its watermark), so that every
//! record read again is judged late or on time exactly as it was the first
//! time.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ideaflow_operators::watermark::PartKey;
use ideaflow_sources::bus::BusPosition;
use ideaflow_sources::replay::ChainMark;
use serde::{Deserialize, Serialize};

use crate::checkpoint::capture::SavedPosition;

/// A bus partition's resume point: read again after `after` (`None`: from
/// its start), with its own watermark set to `own`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BusMark {
    after: Option<BusPosition>,
    own: Option<DateTime<Utc>>,
}

/// The resume points as a checkpoint keeps them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedResume {
    /// The file chain's (`None`: from its start).
    pub files: Option<ChainMark>,
    pub buses: Vec<SavedBusResume>,
}

/// A bus partition's resume point, by source name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedBusResume {
    pub source: String,
    pub partition: u32,
    /// Read again after this position.
    pub after: SavedPosition,
    /// The partition's own watermark there.
    pub own: Option<DateTime<Utc>>,
}

/// The first record admitted into each epoch no checkpoint holds yet, per
/// source, and where each source stands.
#[derive(Default)]
pub struct ResumePoints {
    file_firsts: BTreeMap<u64, ChainMark>,
    /// The last item of the file chain read (read again, and skipped, when
    /// nothing after it is in flight: cheaper than keeping where it ended).
    file_last: Option<ChainMark>,
    bus_firsts: BTreeMap<PartKey, BTreeMap<u64, BusMark>>,
}

impl ResumePoints {
    /// Goes on from a checkpoint's points (a resumed run).
    pub fn resumed(saved: &SavedResume) -> Self {
        ResumePoints {
            file_last: saved.files,
            ..ResumePoints::default()
        }
    }

    /// An item of the file chain read at `mark`.
    pub fn file_read(&mut self, mark: ChainMark) {
        self.file_last = Some(mark);
    }

    /// The item read at `mark` was admitted into `epoch`.
    pub fn file_admitted(&mut self, mark: ChainMark, epoch: u64) {
        self.file_firsts.entry(epoch).or_insert(mark);
    }

    /// A bus record admitted into `epoch`, read after `after` in its
    /// partition `key` whose own watermark was `own` just before it.
    pub fn bus_record(
        &mut self,
        key: PartKey,
        epoch: u64,
        after: Option<BusPosition>,
        own: Option<DateTime<Utc>>,
    ) {
        self.bus_firsts
            .entry(key)
            .or_default()
            .entry(epoch)
            .or_insert(BusMark { after, own });
    }

    /// The resume points of a checkpoint of every epoch before
    /// `complete_before`, given where each bus partition stands now (its
    /// last position read and own watermark). Forgets the epochs before it:
    /// later checkpoints hold them.
    pub fn at(
        &mut self,
        complete_before: u64,
        buses: impl Iterator<Item = (PartKey, String, BusPosition, Option<DateTime<Utc>>)>,
    ) -> SavedResume {
        self.file_firsts = self.file_firsts.split_off(&complete_before);
        let files = self
            .file_firsts
            .values()
            .min_by_key(|m| m.item)
            .copied()
            .or(self.file_last);
        let mut saved = Vec::new();
        for (key, source, position, own) in buses {
            let firsts = self.bus_firsts.entry(key).or_default();
            *firsts = firsts.split_off(&complete_before);
            // Positions grow in read order within a partition.
            let first = firsts
                .values()
                .min_by_key(|m| m.after.map(SavedPosition::from))
                .copied();
            let mark = first.unwrap_or(BusMark {
                after: Some(position),
                own,
            });
            if let Some(after) = mark.after {
                saved.push(SavedBusResume {
                    source,
                    partition: key.1,
                    after: after.into(),
                    own: mark.own,
                });
            }
        }
        SavedResume {
            files,
            buses: saved,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(item: u64) -> ChainMark {
        ChainMark {
            item,
            file: 0,
            offset: item * 100,
            line: item + 1,
            max_seen: None,
        }
    }

    #[test]
    fn the_earliest_record_of_an_open_epoch_is_where_a_restart_reads_from() {
        let mut points = ResumePoints::default();
        let mut read = |m: ChainMark, epoch: Option<u64>| {
            points.file_read(m);
            if let Some(e) = epoch {
                points.file_admitted(m, e);
            }
        };
        read(mark(0), Some(0));
        read(mark(1), Some(3600));
        read(mark(2), None);
        read(mark(3), Some(0));
        read(mark(4), Some(7200));
        // Epoch 0 held: item 1 (epoch 3600) is the first still in flight.
        assert_eq!(points.at(3600, std::iter::empty()).files, Some(mark(1)));
        // Everything before 7200 held: item 4.
        assert_eq!(points.at(7200, std::iter::empty()).files, Some(mark(4)));
        // Nothing in flight: the last item read.
        points.file_read(mark(5));
        assert_eq!(points.at(10800, std::iter::empty()).files, Some(mark(5)));
    }

    #[test]
    fn a_bus_partition_resumes_after_the_record_before_its_first_open_one() {
        let mut points = ResumePoints::default();
        let key = (1, 0);
        let t = |s: i64| DateTime::from_timestamp(s, 0);
        points.bus_record(key, 0, None, None);
        points.bus_record(key, 3600, Some(BusPosition::Offset(0)), t(100));
        points.bus_record(key, 3600, Some(BusPosition::Offset(1)), t(200));
        let now = || std::iter::once((key, "k".to_owned(), BusPosition::Offset(2), t(300)));
        let saved = points.at(3600, now());
        assert_eq!(
            saved.buses,
            vec![SavedBusResume {
                source: "k".into(),
                partition: 0,
                after: SavedPosition::Offset(0),
                own: t(100),
            }]
        );
        // All held: after the last record read, with the watermark now.
        let saved = points.at(7200, now());
        assert_eq!(saved.buses[0].after, SavedPosition::Offset(2));
        assert_eq!(saved.buses[0].own, t(300));
        // A partition whose first record is still open resumes from its start.
        let mut points = ResumePoints::default();
        points.bus_record(key, 3600, None, None);
        assert!(points.at(3600, now()).buses.is_empty());
    }
}
