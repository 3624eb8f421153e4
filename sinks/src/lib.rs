//! ideaflow's sinks: where results go. JSON Lines files and the dead-letter.

pub mod dead_letter;
pub mod jsonl;
pub mod postgres;
pub mod postgres_read_back;
pub mod redis_sink;
pub mod redis_transaction;
pub mod vector_index;
pub mod view_files;

pub use dead_letter::{DeadLetterSink, DeadLetterTap, KeyedDeadLetter};
pub use jsonl::{JsonlError, JsonlWriter};
