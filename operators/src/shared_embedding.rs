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
        let pooled = POOL.with_borrow_mut(|pool| match pool {
            Pool::Writing(seen) => {
                let next = seen.len() as u32;
                Some(match seen.entry(Arc::as_ptr(&self.0) as usize) {
                    std::collections::hash_map::Entry::Occupied(e) => Pooled::Seen(*e.get()),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(next);
                        Pooled::New(LeFloats(self.as_slice()))
                    }
                })
            }
            _ => None,
        });
        match pooled {
            Some(p) => p.serialize(serializer),
            None => self.as_slice().serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for SharedEmbedding {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if !POOL.with_borrow(|pool| matches!(pool, Pool::Reading(_))) {
            return Vec::<f32>::deserialize(deserializer).map(SharedEmbedding::from);
        }
        match PooledOwned::deserialize(deserializer)? {
            PooledOwned::New(LeFloatsOwned(v)) => {
                let e = SharedEmbedding::from(v);
                POOL.with_borrow_mut(|pool| {
                    if let Pool::Reading(read) = pool {
                        read.push(e.clone());
                    }
                });
                Ok(e)
            }
            PooledOwned::Seen(i) => POOL
                .with_borrow(|pool| match pool {
                    Pool::Reading(read) => read.get(i as usize).cloned(),
                    _ => None,
                })
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "embedding {i} referred to before it was written"
                    ))
                }),
        }
    }
}

/// Within [`shared_while_writing`] and [`shared_while_reading`], an
/// embedding held in several places (an idea, its row, the near-duplicate
/// index, the centroid windows) is written once and referred to by its
/// number afterwards, and read back as one shared allocation: a snapshot of
/// the idea state would otherwise hold each vector three or four times, and
/// its restored state would, too.
enum Pool {
    Off,
    /// Address of each embedding written → its number.
    Writing(std::collections::HashMap<usize, u32>),
    /// The embeddings read so far, by number.
    Reading(Vec<SharedEmbedding>),
}

thread_local! {
    static POOL: std::cell::RefCell<Pool> = const { std::cell::RefCell::new(Pool::Off) };
}

#[derive(Serialize)]
enum Pooled<'a> {
    New(LeFloats<'a>),
    Seen(u32),
}

#[derive(Deserialize)]
enum PooledOwned {
    New(LeFloatsOwned),
    Seen(u32),
}

/// A pooled embedding's floats as one run of little-endian bytes: a binary
/// format (the checkpoints' postcard) writes and reads them as a block
/// copy, not float by float, which at a million embeddings is most of the
/// time a checkpoint takes to encode and a restart to decode.
struct LeFloats<'a>(&'a [f32]);

impl Serialize for LeFloats<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if cfg!(target_endian = "little") {
            serializer.serialize_bytes(bytemuck::cast_slice(self.0))
        } else {
            let bytes: Vec<u8> = self.0.iter().flat_map(|f| f.to_le_bytes()).collect();
            serializer.serialize_bytes(&bytes)
        }
    }
}

struct LeFloatsOwned(Vec<f32>);

impl<'de> Deserialize<'de> for LeFloatsOwned {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl serde::de::Visitor<'_> for Bytes {
            type Value = LeFloatsOwned;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an embedding's floats as little-endian bytes")
            }

            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Self::Value, E> {
                if !bytes.len().is_multiple_of(4) {
                    return Err(E::invalid_length(bytes.len(), &self));
                }
                Ok(LeFloatsOwned(
                    bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                ))
            }

            fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Self::Value, E> {
                self.visit_bytes(&bytes)
            }
        }
        deserializer.deserialize_bytes(Bytes)
    }
}

/// Runs `f` (which serializes) with shared embeddings written once each.
/// Only for formats read back by [`shared_while_reading`]: the form differs
/// from the plain sequence written elsewhere.
pub fn shared_while_writing<R>(f: impl FnOnce() -> R) -> R {
    with_pool(Pool::Writing(Default::default()), f)
}

/// Runs `f` (which deserializes what [`shared_while_writing`] wrote) with
/// each embedding read once and shared by every place that refers to it.
pub fn shared_while_reading<R>(f: impl FnOnce() -> R) -> R {
    with_pool(Pool::Reading(Vec::new()), f)
}

fn with_pool<R>(pool: Pool, f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            POOL.with_borrow_mut(|p| *p = Pool::Off);
        }
    }
    POOL.with_borrow_mut(|p| *p = pool);
    let _reset = Reset;
    f()
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

    #[test]
    fn a_pooled_embedding_is_written_once_and_read_back_shared() {
        let v = SharedEmbedding::from(vec![1.0f32, -0.25]);
        let w = SharedEmbedding::from(vec![3.0f32]);
        let held = vec![v.clone(), w.clone(), v.clone()];
        let bytes = shared_while_writing(|| postcard::to_allocvec(&held).unwrap());
        // Three embeddings: the first two written (variant, length, the
        // floats' little-endian bytes), the third a reference to the first.
        let mut expected = vec![3, 0, 8];
        expected.extend(1.0f32.to_le_bytes());
        expected.extend((-0.25f32).to_le_bytes());
        expected.extend([0, 4]);
        expected.extend(3.0f32.to_le_bytes());
        expected.extend([1, 0]);
        assert_eq!(bytes, expected);
        let back: Vec<SharedEmbedding> =
            shared_while_reading(|| postcard::from_bytes(&bytes).unwrap());
        assert_eq!(back, held);
        assert!(std::ptr::eq(back[0].as_slice(), back[2].as_slice()));
        // Outside the pool, the plain form again.
        assert_eq!(serde_json::to_string(&v).unwrap(), "[1.0,-0.25]");
    }
}
