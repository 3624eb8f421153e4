//! Dedupe: exact duplicates by content hash behind a rotating Bloom filter.
//! (Near-duplicate merging by embedding similarity is not built yet.)

mod bloom;

pub use bloom::{BloomSizing, RotatingBloom};
