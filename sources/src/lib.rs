//! ideaflow's sources: where signals come from. Replay of JSONL streams,
//! adapters from platform payloads to Signals, and the stream generator.

pub mod adapters;
pub mod bus;
pub mod generator;
pub mod input;
pub mod replay;
