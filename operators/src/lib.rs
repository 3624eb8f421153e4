//! ideaflow's domain: signals and events, their validation, and the pure logic
//! of every operator. Nothing in this crate performs I/O; sources hand it
//! bytes, sinks take its values.

pub mod calendar;
pub mod centroid;
pub mod classify;
pub mod content_hash;
pub mod dedupe;
pub mod distinct;
pub mod embed;
pub mod engagement_stats;
pub mod event;
pub mod feedback;
pub mod idea;
pub mod idea_state;
pub mod pii;
pub mod prefetch;
pub mod redelivery;
pub mod rejection;
pub mod score;
pub mod shared_embedding;
pub mod signal;
pub mod top_k;
pub mod topic_counts;
pub mod validate;
pub mod views;
pub mod watermark;

pub use event::{Event, EventType, Payload};
pub use rejection::{DeadLetter, Position, RejectReason, Rejection};
pub use signal::{Engagement, Signal, Source, EMBEDDING_DIM};
