//! Which records the seen-sets refused, for whoever counts repeats by where
//! they were read (the pipeline, per bus partition). The state decides what
//! a repeat is; the source knows where a record came from; a record's digest
//! joins the two without carrying its origin through the dataflow.

use super::signals::{signal_key, SignalKey};
use crate::{Event, Payload};

/// A record as the seen-sets know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordDigest {
    /// A signal, by `(source, id)`.
    Signal(SignalKey),
    /// Any other envelope, by its `eventId`.
    Envelope(u128),
}

impl RecordDigest {
    /// The digest under which the seen-sets would take `event`: none for an
    /// envelope without an `eventId` (never refused).
    pub fn of(event: &Event) -> Option<Self> {
        match &event.payload {
            Payload::Signal(s) => Some(RecordDigest::Signal(signal_key(s.source, &s.id))),
            _ => event
                .meta
                .event_id
                .as_deref()
                .map(|id| RecordDigest::Envelope(super::event_ids::digest(id))),
        }
    }
}

/// The digests of the records refused as repeats since last taken. Off (and
/// empty) unless switched on, so that a run no one watches keeps nothing.
#[derive(Clone, Debug, Default)]
pub struct RepeatLog {
    on: bool,
    refused: Vec<RecordDigest>,
}

impl RepeatLog {
    pub fn switch_on(&mut self) {
        self.on = true;
    }

    pub fn refused(&mut self, digest: RecordDigest) {
        if self.on {
            self.refused.push(digest);
        }
    }

    /// The digests logged since the last call.
    pub fn take(&mut self) -> Vec<RecordDigest> {
        std::mem::take(&mut self.refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_kept_unless_switched_on() {
        let mut log = RepeatLog::default();
        log.refused(RecordDigest::Envelope(1));
        assert!(log.take().is_empty());
        log.switch_on();
        log.refused(RecordDigest::Envelope(1));
        log.refused(RecordDigest::Signal(2));
        assert_eq!(
            log.take(),
            vec![RecordDigest::Envelope(1), RecordDigest::Signal(2)]
        );
        assert!(log.take().is_empty());
    }
}
