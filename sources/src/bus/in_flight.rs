//! Records read from buses whose epochs are not committed yet.
//!
//! Each record read is noted with the epoch it went into (a dead-lettered
//! record with the epoch open when it was refused: its dead letter is
//! written with that epoch's batch). Epochs commit in order, so once every
//! sink has committed epochs ending at or before `E`, the longest prefix of
//! each partition's records whose epochs end by `E` is done: those are
//! acknowledged, and the last of them is the partition's committed position.
//! A record read later than one of a still-open epoch waits for it: what is
//! acknowledged is always a prefix, so a restart from the committed
//! positions misses nothing.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use super::BusPosition;

/// What a bus source's thread is told to do with committed records.
#[derive(Debug)]
pub enum AckMsg {
    /// Acknowledge these (partition, position) records.
    Done(Vec<(u32, BusPosition)>),
    /// No more acknowledgements: stop.
    Finish,
}

/// Per source, per partition: the last position committed.
pub type CommittedPositions = BTreeMap<String, BTreeMap<u32, BusPosition>>;

/// A partition's counters, for metrics.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct PartitionCounts {
    pub read: u64,
    pub acked: u64,
    pub redelivered: u64,
    pub in_flight: u64,
}

#[derive(Default)]
struct PartitionState {
    /// (position, epoch start in seconds), in read order.
    pending: VecDeque<(BusPosition, u64)>,
    committed: Option<BusPosition>,
    counts: PartitionCounts,
}

struct SourceState {
    name: String,
    acks: Sender<AckMsg>,
    partitions: BTreeMap<u32, PartitionState>,
}

struct Inner {
    sources: Vec<SourceState>,
}

/// Shared by the reader (which notes records), the sink writer (which
/// reports commits) and the metrics.
#[derive(Clone)]
pub struct InFlight {
    inner: Arc<Mutex<Inner>>,
}

/// One record read, for [`InFlight::read`].
#[derive(Clone, Copy, Debug)]
pub struct ReadRecord {
    pub source: usize,
    pub partition: u32,
    pub position: BusPosition,
    /// The epoch (start, seconds) it went into.
    pub epoch: u64,
    pub redelivered: bool,
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight {
            inner: Arc::new(Mutex::new(Inner {
                sources: Vec::new(),
            })),
        }
    }
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("holders do not panic")
    }

    /// A bus source, by name, and where its acknowledgements go. Returns its index.
    pub fn add_source(&self, name: String, acks: Sender<AckMsg>) -> usize {
        let mut inner = self.lock();
        inner.sources.push(SourceState {
            name,
            acks,
            partitions: BTreeMap::new(),
        });
        inner.sources.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.lock().sources.is_empty()
    }

    /// Notes records read (in read order per partition).
    pub fn read(&self, records: &[ReadRecord]) {
        let mut inner = self.lock();
        for r in records {
            let Some(source) = inner.sources.get_mut(r.source) else {
                continue;
            };
            let part = source.partitions.entry(r.partition).or_default();
            part.pending.push_back((r.position, r.epoch));
            part.counts.read += 1;
            part.counts.in_flight += 1;
            part.counts.redelivered += u64::from(r.redelivered);
        }
    }

    /// The positions that are committed once the epochs ending by
    /// `epoch_end` are: each partition's committed position, moved past
    /// the prefix of records in those epochs. Nothing changes yet.
    pub fn positions_through(&self, epoch_end: i64) -> CommittedPositions {
        let inner = self.lock();
        inner
            .sources
            .iter()
            .map(|s| {
                let parts = s
                    .partitions
                    .iter()
                    .filter_map(|(p, part)| {
                        let last = part
                            .pending
                            .iter()
                            .take_while(|(_, e)| (*e as i64) < epoch_end)
                            .last()
                            .map(|(pos, _)| *pos);
                        last.or(part.committed).map(|pos| (*p, pos))
                    })
                    .collect();
                (s.name.clone(), parts)
            })
            .collect()
    }

    /// Every sink committed the epochs ending by `epoch_end`: their records
    /// are acknowledged (sent to their sources' threads).
    pub fn committed(&self, epoch_end: i64) {
        let mut inner = self.lock();
        for source in &mut inner.sources {
            let mut done = Vec::new();
            for (p, part) in &mut source.partitions {
                while let Some(&(pos, e)) = part.pending.front() {
                    if (e as i64) >= epoch_end {
                        break;
                    }
                    part.pending.pop_front();
                    part.committed = Some(pos);
                    part.counts.acked += 1;
                    part.counts.in_flight -= 1;
                    done.push((*p, pos));
                }
            }
            if !done.is_empty() {
                // A source whose thread has stopped acknowledges nothing
                // more: its records are read again at the next start.
                let _ = source.acks.send(AckMsg::Done(done));
            }
        }
    }

    /// Counters by source name and partition.
    pub fn counts(&self) -> Vec<(String, u32, PartitionCounts)> {
        let inner = self.lock();
        inner
            .sources
            .iter()
            .flat_map(|s| {
                s.partitions
                    .iter()
                    .map(|(p, part)| (s.name.clone(), *p, part.counts.clone()))
            })
            .collect()
    }

    /// Records read and not yet committed, over every source.
    pub fn in_flight(&self) -> u64 {
        self.lock()
            .sources
            .iter()
            .flat_map(|s| s.partitions.values())
            .map(|p| p.counts.in_flight)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    fn rec(partition: u32, offset: i64, epoch: u64) -> ReadRecord {
        ReadRecord {
            source: 0,
            partition,
            position: BusPosition::Offset(offset),
            epoch,
            redelivered: offset < 2,
        }
    }

    #[test]
    fn only_a_committed_prefix_is_acknowledged() {
        let flight = InFlight::default();
        let (tx, rx) = channel();
        flight.add_source("kafka://h:1/t".into(), tx);
        // Partition 0: epochs 0, 60, 0 (late within lateness), 120.
        // Partition 1: epoch 60 only.
        flight.read(&[
            rec(0, 0, 0),
            rec(0, 1, 60),
            rec(0, 2, 0),
            rec(1, 0, 60),
            rec(0, 3, 120),
        ]);
        // Epochs ending by 60 (epoch 0): only the first record of partition
        // 0; the third waits behind the second.
        let positions = flight.positions_through(60);
        assert_eq!(
            positions["kafka://h:1/t"],
            BTreeMap::from([(0, BusPosition::Offset(0))])
        );
        flight.committed(60);
        match rx.try_recv().unwrap() {
            AckMsg::Done(d) => assert_eq!(d, vec![(0, BusPosition::Offset(0))]),
            other => panic!("{other:?}"),
        }
        flight.committed(120);
        match rx.try_recv().unwrap() {
            AckMsg::Done(d) => assert_eq!(
                d,
                vec![
                    (0, BusPosition::Offset(1)),
                    (0, BusPosition::Offset(2)),
                    (1, BusPosition::Offset(0))
                ]
            ),
            other => panic!("{other:?}"),
        }
        let positions = flight.positions_through(120);
        assert_eq!(positions["kafka://h:1/t"][&0], BusPosition::Offset(2));
        assert_eq!(positions["kafka://h:1/t"][&1], BusPosition::Offset(0));
        assert_eq!(flight.in_flight(), 1);
        let counts = flight.counts();
        assert_eq!(counts[0].2.read, 4);
        assert_eq!(counts[0].2.acked, 3);
        assert_eq!(counts[0].2.redelivered, 2);
        assert_eq!(counts[1].2.redelivered, 1);
        // Nothing new committed: nothing sent.
        flight.committed(120);
        assert!(rx.try_recv().is_err());
    }
}
