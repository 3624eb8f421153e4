//! How far a bus thread may read ahead of the pipeline, in records.
//!
//! The channel between a bus thread and the pipeline is bounded in events,
//! and one event carries a whole read (hundreds of records): bounding events
//! alone would let a thread park hundreds of thousands of parsed records in
//! memory while the pipeline is busy (embedding raw text, say), and hide the
//! backlog from the bus's lag. So each thread counts the records it handed
//! over and the pipeline counts those it took; the thread reads again only
//! while fewer than the limit wait. What it leaves unread stays on the bus,
//! where the lag shows it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Shared by one bus thread (which sends) and the pipeline (which takes).
#[derive(Clone, Debug)]
pub struct ReadAhead {
    waiting: Arc<AtomicUsize>,
    limit: usize,
}

impl ReadAhead {
    /// At most `limit` records waiting before the thread reads again (one
    /// read may bring a batch more).
    pub fn new(limit: usize) -> Self {
        ReadAhead {
            waiting: Arc::default(),
            limit: limit.max(1),
        }
    }

    /// Whether the thread may read now.
    pub fn has_room(&self) -> bool {
        self.waiting.load(Ordering::Acquire) < self.limit
    }

    /// The thread handed over `n` records.
    pub fn sent(&self, n: usize) {
        self.waiting.fetch_add(n, Ordering::AcqRel);
    }

    /// The pipeline took `n` records.
    pub fn taken(&self, n: usize) {
        let _ = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some(w.saturating_sub(n))
            });
    }

    /// Records handed over and not taken yet.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_comes_back_as_records_are_taken() {
        let gate = ReadAhead::new(10);
        let thread = gate.clone();
        assert!(thread.has_room());
        thread.sent(8);
        assert!(thread.has_room(), "8 of 10");
        thread.sent(8);
        assert!(!thread.has_room(), "16 waiting");
        gate.taken(8);
        assert!(thread.has_room());
        gate.taken(100);
        assert_eq!(gate.waiting(), 0);
    }
}
