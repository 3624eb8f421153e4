//! ideaflow's sources: where signals come from. Replay of JSONL streams,
//! adapters from platform payloads to Signals, and the stream generator.

pub mod adapters;
pub mod generator;
pub mod replay;
