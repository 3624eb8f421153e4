//! ideaflow's domain: signals and events, their validation, and the pure logic
//! of every operator. Nothing in this crate performs I/O; sources hand it
//! bytes, sinks take its values.

pub mod classify;
pub mod content_hash;
pub mod dedupe;
pub mod embed;
pub mod event;
pub mod idea;
pub mod pii;
pub mod rejection;
pub mod score;
pub mod signal;
pub mod validate;
pub mod watermark;

pub use event::{Event, EventType, Payload};
pub use rejection::{DeadLetter, Position, RejectReason, Rejection};
pub use signal::{Engagement, Signal, Source, EMBEDDING_DIM};
