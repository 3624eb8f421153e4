//! An embedding shared by the places that hold it (the idea, its row, the
//! near-duplicate index, the centroid windows), allocated in its own size
//! class.
//!
//! Why not `Arc<[f32]>`: its two counters sit in the same allocation as the
//! floats, so a 384-d vector asks for 1,552 bytes, and size-class allocators
//! (mimalloc, our global allocator, and jemalloc alike) round that up to 1,792: 240
//! bytes, 15%, lost on every live vector, which is most of the idea state's
//! memory. Here the floats are a boxed slice of exactly 1,536 bytes (a size
//! class of its own) and the counters a separate 32-byte allocation: 224
//! bytes saved per vector for one more pointer to follow.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone)]
pub struct SharedEmbedding(Arc<Box<[f32]>>);

impl SharedEmbedding {
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }

    /// Where its counters and the floats' pointer live (the first of the two
    /// pointers a read follows), for [`crate::prefetch`].
    pub fn header(&self) -> *const Box<[f32]> {
        Arc::as_ptr(&self.0)
    }
}

impl Deref for SharedEmbedding {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl From<Vec<f32>> for SharedEmbedding {
    /// Takes the vector's buffer (no copy when it has no spare capacity).
    fn from(v: Vec<f32>) -> Self {
        SharedEmbedding(Arc::new(v.into_boxed_slice()))
    }
}

impl PartialEq for SharedEmbedding {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl fmt::Debug for SharedEmbedding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_slice().fmt(f)
    }
}

impl Serialize for SharedEmbedding {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_slice().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SharedEmbedding {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<f32>::deserialize(deserializer).map(SharedEmbedding::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floats_are_allocated_alone() {
        let v = SharedEmbedding::from(vec![0.5f32; crate::EMBEDDING_DIM]);
        // The boxed slice is exactly the floats: no header beside them.
        assert_eq!(std::mem::size_of_val(&**v.0), 4 * crate::EMBEDDING_DIM);
        let w = v.clone();
        assert!(std::ptr::eq(v.as_slice(), w.as_slice()), "clones share");
    }

    #[test]
    fn serializes_as_a_plain_sequence() {
        let v = SharedEmbedding::from(vec![1.0f32, -0.25]);
        let text = serde_json::to_string(&v).unwrap();
        assert_eq!(text, "[1.0,-0.25]");
        let back: SharedEmbedding = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
    }
}
