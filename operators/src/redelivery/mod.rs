//! Redeliveries taken once. Every real bus delivers at least once, and
//! platforms are polled again: the idea state and the feedback operator use
//! these seen-sets so that a record delivered twice changes nothing, and a
//! signal polled again replaces its earlier figures instead of adding to them.
//!
//! Both sets are bounded (entries age out with a horizon in event time) and
//! deterministic: what they decide depends only on the records' contents and
//! event times, never on arrival order, since the caller applies an epoch's
//! records in a total order and epochs in time order.

mod event_ids;
mod repeat_log;
mod signals;

pub use event_ids::EventIdsSeen;
pub use repeat_log::{RecordDigest, RepeatLog};
pub use signals::{signal_key, SeenSignal, SeenSignals, SignalKey};

/// Default horizon of both seen-sets (`dedupe.event_id_horizon_secs`): 7 days.
pub const DEFAULT_HORIZON_SECS: i64 = 7 * 86_400;
