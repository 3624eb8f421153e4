//! Dedupe: exact duplicates by content hash behind a rotating Bloom filter,
//! near-duplicates by embedding similarity over an LSH index.

mod bloom;
mod lsh;
mod near;

pub use bloom::{BloomSizing, RotatingBloom};
pub use lsh::{LshIndex, LshParams};
pub use near::{NearIndex, NearMatches, VectorId};
