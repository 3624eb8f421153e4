//! Live sources on a message bus: Kafka topics, Redis streams and Fluvio
//! topics, one module each behind [`Bus`]. A bus source reads records with
//! their positions; [`runner`] drives it on a thread of its own (reads,
//! reconnects with backoff, acknowledgements after commit); [`in_flight`]
//! keeps each read record's position until the epoch holding it is
//! committed by every sink, and says what to acknowledge then.
//!
//! Positions that count are ours: what the sinks committed is kept with
//! their progress rows; the broker's consumer-group offsets and a stream's
//! pending entries are acknowledged after commit for monitoring and for the
//! bus's own bookkeeping, never trusted to resume from.

pub mod fluvio;
pub mod in_flight;
pub mod kafka;
pub mod kafka_group;
pub mod read_ahead;
pub mod redis_streams;
pub mod runner;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::input::InputSpec;

/// A Redis stream entry id, `MS-SEQ`, ordered as Redis orders them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// As Redis writes it: `"MS-SEQ"`.
impl Serialize for EntryId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EntryId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for EntryId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        match (ms.parse(), seq.parse()) {
            (Ok(ms), Ok(seq)) => Ok(EntryId { ms, seq }),
            _ => Err(format!("{s:?} is not a stream entry id (MS-SEQ)")),
        }
    }
}

/// Where a record sits in its partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BusPosition {
    /// A Kafka or Fluvio offset.
    Offset(i64),
    /// A Redis stream entry.
    Entry(EntryId),
}

impl fmt::Display for BusPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusPosition::Offset(o) => write!(f, "{o}"),
            BusPosition::Entry(e) => write!(f, "{e}"),
        }
    }
}

/// One record read from a bus.
#[derive(Clone, Debug)]
pub struct BusRecord {
    pub partition: u32,
    pub position: BusPosition,
    /// One line of the input format; `None` when the record has none (a
    /// Kafka record without a value, a stream entry without `data`).
    pub payload: Option<Vec<u8>>,
    /// Delivered before (read again after a restart, or from a stream's
    /// pending entries).
    pub redelivered: bool,
}

/// What one read brought.
#[derive(Debug, Default)]
pub struct Polled {
    pub records: Vec<BusRecord>,
    /// Partitions whose read came back empty (the source is caught up there).
    pub empty: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus cannot be reached or answered with a passing error: retried
    /// with backoff while the source reports itself not ready.
    #[error("{source_name}: {message}")]
    Unreachable {
        source_name: String,
        message: String,
    },
    /// Retrying cannot help (a committed position the bus no longer has, a
    /// topic that is not there): the pipeline stops and says why.
    #[error("{source_name}: {message}")]
    Fatal {
        source_name: String,
        message: String,
    },
}

impl BusError {
    pub fn is_fatal(&self) -> bool {
        matches!(self, BusError::Fatal { .. })
    }
}

/// A bus source. Calls come from one thread ([`runner`]), never at once.
pub trait Bus: Send {
    /// The source's name (its URL without credentials).
    fn name(&self) -> &str;
    /// Connects (again) and returns the partitions it reads.
    fn connect(&mut self) -> Result<Vec<u32>, BusError>;
    /// Reads what is there, waiting up to `wait` when nothing is.
    fn poll(&mut self, max: usize, wait: Duration) -> Result<Polled, BusError>;
    /// Acknowledges records whose epochs every sink has committed.
    fn ack(&mut self, done: &[(u32, BusPosition)]) -> Result<(), BusError>;
    /// Records behind the head, by partition, where the bus can say.
    fn lag(&mut self) -> Vec<(u32, Option<u64>)>;
    /// How a record's position reads in a dead letter (`topic/partition/offset`,
    /// `stream/entry-id`).
    fn describe_position(&self, partition: u32, position: BusPosition) -> String;
    /// Reads each partition named from just after its position (a
    /// checkpoint's resume point) instead of from its start; the others
    /// from their start. Called before [`Bus::connect`].
    fn resume_after(&mut self, positions: &BTreeMap<u32, BusPosition>);
}

/// The offset to read next in each partition, after the offset given.
pub(crate) fn next_offsets(
    positions: &BTreeMap<u32, BusPosition>,
) -> impl Iterator<Item = (u32, i64)> + '_ {
    positions.iter().filter_map(|(p, pos)| match pos {
        BusPosition::Offset(o) => Some((*p, o + 1)),
        BusPosition::Entry(_) => None,
    })
}

/// A bus that accepts records: what the webhook endpoint appends to.
pub trait Append: Send {
    fn name(&self) -> &str;
    /// Appends the payloads durably (acknowledged by the bus) and returns
    /// where each went.
    fn append(&mut self, payloads: &[Vec<u8>]) -> Result<Vec<String>, BusError>;
}

/// The source for a bus input; `None` for files.
pub fn open(spec: &InputSpec) -> Option<Result<Box<dyn Bus>, BusError>> {
    let name = spec.to_string();
    Some(match spec {
        InputSpec::File(_) => return None,
        InputSpec::Kafka(k) => Ok(Box::new(kafka::KafkaSource::new(k.clone(), name))),
        InputSpec::RedisStream(r) => {
            redis_streams::StreamSource::new(r.clone(), name).map(|s| Box::new(s) as Box<dyn Bus>)
        }
        InputSpec::Fluvio(f) => Ok(Box::new(fluvio::FluvioSource::new(f.clone(), name))),
    })
}

/// The appender for a bus input (the webhook endpoint's bus); `None` for files.
pub fn open_append(spec: &InputSpec) -> Option<Result<Box<dyn Append>, BusError>> {
    let name = spec.to_string();
    Some(match spec {
        InputSpec::File(_) => return None,
        InputSpec::Fluvio(f) => Ok(Box::new(fluvio::FluvioAppender::new(f.clone(), name))),
        InputSpec::Kafka(k) => Ok(Box::new(kafka::KafkaAppender::new(k.clone(), name))),
        InputSpec::RedisStream(r) => redis_streams::StreamAppender::new(r.clone(), name)
            .map(|s| Box::new(s) as Box<dyn Append>),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_order_and_print() {
        let a: EntryId = "1700000000000-5".parse().unwrap();
        let b: EntryId = "1700000000001-0".parse().unwrap();
        assert!(a < b);
        assert_eq!(a.to_string(), "1700000000000-5");
        assert!("x-1".parse::<EntryId>().is_err());
        assert_eq!(serde_json::to_string(&BusPosition::Offset(7)).unwrap(), "7");
        let entry = BusPosition::Entry(a);
        let text = serde_json::to_string(&entry).unwrap();
        assert_eq!(text, "\"1700000000000-5\"");
        assert_eq!(serde_json::from_str::<BusPosition>(&text).unwrap(), entry);
    }
}
