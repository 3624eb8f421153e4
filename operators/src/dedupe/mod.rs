//! Dedupe: exact duplicates by content hash behind a rotating Bloom filter,
//! near-duplicates by embedding similarity over an LSH index.

mod bloom;
mod lsh;

pub use bloom::{BloomSizing, RotatingBloom};
pub use lsh::{LshIndex, LshParams};
