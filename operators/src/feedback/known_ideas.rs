//! The ideas feedback can name: every idea the idea state told of and has
//! not forgotten, with its first sighting, and the near-duplicate texts
//! merged into it (a listing may name a merged text's own id).
//!
//! Everything is keyed by an id's 128 bits: on a long stream this holds an
//! entry per idea within the idea state's horizon, and an id's text would
//! cost a 64-byte string per entry besides.

use std::collections::HashMap;

use foldhash::fast::FixedState;

use crate::idea::{id_bits, id_text};

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct KnownIdeas {
    /// Idea → its first sighting.
    first_seen: HashMap<u128, i64, FixedState>,
    /// The id a signal's own content would have had → the idea it merged into.
    aliases: HashMap<u128, u128, FixedState>,
    /// Idea → the aliases naming it: what to let go of with the idea.
    aliased: HashMap<u128, Vec<u128>, FixedState>,
}

/// How much [`KnownIdeas`] holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KnownIdeasSize {
    pub ideas: usize,
    pub aliases: usize,
}

impl Default for KnownIdeas {
    fn default() -> Self {
        Self::new()
    }
}

impl KnownIdeas {
    /// Empty, with fixed-seed hashers (like the rest of the state: nothing
    /// here may vary by process).
    pub fn new() -> Self {
        let hasher = || FixedState::with_seed(0x1dea);
        KnownIdeas {
            first_seen: HashMap::with_hasher(hasher()),
            aliases: HashMap::with_hasher(hasher()),
            aliased: HashMap::with_hasher(hasher()),
        }
    }

    pub fn size(&self) -> KnownIdeasSize {
        KnownIdeasSize {
            ideas: self.first_seen.len(),
            aliases: self.aliases.len(),
        }
    }

    pub fn contains(&self, idea: u128) -> bool {
        self.first_seen.contains_key(&idea)
    }

    /// An idea seen (again): its first sighting as the idea state says.
    pub fn see(&mut self, idea: u128, first_seen: i64) {
        self.first_seen.insert(idea, first_seen);
    }

    /// A text whose own id is `own` merged into `idea`.
    pub fn alias(&mut self, own: u128, idea: u128) {
        let before = self.aliases.insert(own, idea);
        if before == Some(idea) {
            return;
        }
        if let Some(before) = before {
            self.unlist(before, own);
        }
        self.aliased.entry(idea).or_default().push(own);
    }

    fn unlist(&mut self, idea: u128, own: u128) {
        if let Some(list) = self.aliased.get_mut(&idea) {
            list.retain(|o| *o != own);
            if list.is_empty() {
                self.aliased.remove(&idea);
            }
        }
    }

    /// Lets go of an idea and the aliases naming it.
    pub fn forget(&mut self, idea: u128) {
        self.first_seen.remove(&idea);
        for own in self.aliased.remove(&idea).unwrap_or_default() {
            if self.aliases.get(&own) == Some(&idea) {
                self.aliases.remove(&own);
            }
        }
    }

    /// The idea an event's ideaId names: itself, or the idea its text merged into.
    pub fn resolve(&self, idea_id: &str) -> Option<String> {
        let bits = id_bits(idea_id)?;
        if self.contains(bits) {
            return Some(idea_id.to_owned());
        }
        self.aliases
            .get(&bits)
            .filter(|id| self.contains(**id))
            .map(|id| id_text(*id))
    }

    /// When an idea (named as [`KnownIdeas::resolve`] names it) was first seen.
    pub fn first_seen(&self, idea_id: &str) -> Option<i64> {
        self.first_seen.get(&id_bits(idea_id)?).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> u128 {
        n * 0x1_0000_0001
    }

    #[test]
    fn aliases_resolve_and_go_with_their_idea() {
        let mut known = KnownIdeas::new();
        known.see(id(1), 10);
        known.see(id(2), 20);
        known.alias(id(7), id(1));
        known.alias(id(8), id(1));
        known.alias(id(8), id(1)); // the same text again
        known.alias(id(9), id(1));
        known.alias(id(9), id(2)); // later merged elsewhere
        assert_eq!(known.resolve(&id_text(id(7))), Some(id_text(id(1))));
        assert_eq!(known.resolve(&id_text(id(9))), Some(id_text(id(2))));
        assert_eq!(known.first_seen(&id_text(id(2))), Some(20));
        assert_eq!(known.aliased[&id(1)], vec![id(7), id(8)]);
        known.forget(id(1));
        assert_eq!(known.resolve(&id_text(id(7))), None);
        assert_eq!(known.resolve(&id_text(id(1))), None);
        assert_eq!(known.resolve(&id_text(id(9))), Some(id_text(id(2))));
        assert_eq!(
            known.size(),
            KnownIdeasSize {
                ideas: 1,
                aliases: 1
            }
        );
        known.forget(id(2));
        assert_eq!(known.size(), KnownIdeasSize::default());
        assert!(known.aliased.is_empty());
    }
}
