//! Idea identity: an idea is the set of signals sharing content (or merged
//! into it as near-duplicates), named by a UUID v5 of its content hash so that
//! every replay, worker count and machine names it the same.

use std::sync::Arc;

use uuid::Uuid;

/// An idea id as rows and keys carry it: shared, not copied, because every
/// tick re-issues a score row (and its key and feedback fact) per live idea.
pub type IdeaId = Arc<str>;

/// Namespace for idea ids (a fixed random UUID; never change it: ids are stored).
pub const IDEA_NAMESPACE: Uuid = Uuid::from_u128(0x6a1d_ea5f_10e4_4c6b_9d0f_3b7a_52e8_c0d1);

/// The idea id for a content hash (32 hex digits, see [`crate::content_hash`]).
pub fn idea_id(content_hash: &str) -> Uuid {
    Uuid::new_v5(&IDEA_NAMESPACE, content_hash.as_bytes())
}
