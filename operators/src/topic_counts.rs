//! Topic counts per category over a sliding event-time window: the "hot
//! topics" view, and the top topics hashtag cohesion compares with.
//!
//! Counting is per record (a map update); the top list of a category is
//! recomputed on the scoring tick, O(distinct topics of the category).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use foldhash::fast::FixedState;

/// A category's top topics: ranked, and as a set sorted by name (what
/// cohesion reads: membership only), with the generation the set was first
/// seen at.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct TopList {
    generation: u64,
    ranked: Vec<String>,
    set: Vec<String>,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct TopicCounts {
    window_secs: i64,
    /// category → topic → the pair's slot in `pairs`.
    slots: HashMap<String, HashMap<String, u32, FixedState>, FixedState>,
    /// Per slot: a (category, topic) pair and its count in the window;
    /// `None` for a free slot.
    pairs: Vec<Option<Pair>>,
    free: Vec<u32>,
    /// (time, sequence) → slot, for retraction at time + window. One entry
    /// per recorded topic, so the window's entries are most of this
    /// structure's memory: a slot, not the two names (~20 bytes an entry
    /// instead of ~130 with the names copied).
    entries: BTreeMap<(i64, u64), u32>,
    seq: u64,
    /// Slots whose count changed since the last `take_changed`. A slot whose
    /// count fell to zero is freed only there, once the change is reported.
    changed: BTreeSet<u32>,
    /// Per category: its top list and the generation it was set at (a new
    /// generation only when the set of top topics changed, so that scores
    /// keep the hashtag cohesion they computed against an unchanged set; a
    /// reordering alone does not change cohesion). Looked up per live idea
    /// on every tick, never iterated: hashed.
    top: HashMap<String, TopList, FixedState>,
    generation: u64,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Pair {
    category: String,
    topic: String,
    count: u64,
}

impl TopicCounts {
    /// A copy that answers [`TopicCounts::top_set_with_generation`] as this
    /// one does now, and holds nothing else (scores evaluated later against
    /// today's top sets).
    pub fn top_sets_only(&self) -> Self {
        TopicCounts {
            top: self.top.clone(),
            generation: self.generation,
            ..TopicCounts::new(self.window_secs)
        }
    }

    pub fn new(window_secs: i64) -> Self {
        TopicCounts {
            window_secs: window_secs.max(1),
            slots: HashMap::with_hasher(FixedState::with_seed(0x1dea)),
            pairs: Vec::new(),
            free: Vec::new(),
            entries: BTreeMap::new(),
            seq: 0,
            changed: BTreeSet::new(),
            top: HashMap::with_hasher(FixedState::with_seed(0x1dea)),
            generation: 0,
        }
    }

    pub fn record(&mut self, category: &str, topic: &str, time: i64) {
        let slot = self.slot(category, topic);
        if let Some(pair) = &mut self.pairs[slot as usize] {
            pair.count += 1;
        }
        self.seq += 1;
        self.entries.insert((time, self.seq), slot);
        self.changed.insert(slot);
    }

    /// The pair's slot, taken for it if it has none.
    fn slot(&mut self, category: &str, topic: &str) -> u32 {
        if let Some(slot) = self.slots.get(category).and_then(|t| t.get(topic)) {
            return *slot;
        }
        let pair = Pair {
            category: category.to_owned(),
            topic: topic.to_owned(),
            count: 0,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.pairs[slot as usize] = Some(pair);
                slot
            }
            None => {
                self.pairs.push(Some(pair));
                (self.pairs.len() - 1) as u32
            }
        };
        self.slots
            .entry(category.to_owned())
            .or_insert_with(|| HashMap::with_hasher(FixedState::with_seed(0x1dea)))
            .insert(topic.to_owned(), slot);
        slot
    }

    /// Retracts entries whose time + window ≤ `watermark`.
    pub fn expire(&mut self, watermark: i64) {
        let cutoff = watermark - self.window_secs;
        while let Some(entry) = self.entries.first_entry() {
            if entry.key().0 > cutoff {
                break;
            }
            let slot = entry.remove();
            if let Some(pair) = &mut self.pairs[slot as usize] {
                pair.count -= 1;
            }
            self.changed.insert(slot);
        }
    }

    /// Recomputes every category's `k` most frequent topics (ties by name).
    pub fn refresh_top(&mut self, k: usize) {
        let mut by_category: BTreeMap<&str, Vec<(u64, &str)>> = BTreeMap::new();
        for pair in self.pairs.iter().flatten().filter(|p| p.count > 0) {
            by_category
                .entry(&pair.category)
                .or_default()
                .push((pair.count, &pair.topic));
        }
        let mut top = HashMap::with_hasher(FixedState::with_seed(0x1dea));
        for (c, mut v) in by_category {
            v.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
            let ranked: Vec<String> = v.into_iter().take(k).map(|(_, t)| t.to_owned()).collect();
            let mut set = ranked.clone();
            set.sort_unstable();
            let generation = match self.top.remove(c) {
                Some(old) if old.set == set => old.generation,
                _ => {
                    self.generation += 1;
                    self.generation
                }
            };
            let list = TopList {
                generation,
                ranked,
                set,
            };
            top.insert(c.to_owned(), list);
        }
        self.top = top;
    }

    /// The category's top topics, most frequent first (empty when it has none).
    pub fn top(&self, category: &str) -> &[String] {
        self.top
            .get(category)
            .map_or(&[][..], |t| t.ranked.as_slice())
    }

    /// The category's top topics as a set sorted by name, and its
    /// generation: equal generations mean equal sets (0: no list).
    pub fn top_set_with_generation(&self, category: &str) -> (u64, &[String]) {
        self.top
            .get(category)
            .map_or((0, &[][..]), |t| (t.generation, t.set.as_slice()))
    }

    pub fn count(&self, category: &str, topic: &str) -> u64 {
        self.slots
            .get(category)
            .and_then(|t| t.get(topic))
            .and_then(|slot| self.pairs[*slot as usize].as_ref())
            .map_or(0, |p| p.count)
    }

    /// (category, topic, count) of every pair whose count changed since the
    /// last call, sorted by category and topic; a count of 0 means the pair
    /// left the window (and is forgotten).
    pub fn take_changed(&mut self) -> Vec<(String, String, u64)> {
        let mut out = Vec::with_capacity(self.changed.len());
        for slot in std::mem::take(&mut self.changed) {
            let Some(pair) = &self.pairs[slot as usize] else {
                continue;
            };
            if pair.count > 0 {
                out.push((pair.category.clone(), pair.topic.clone(), pair.count));
                continue;
            }
            let Some(pair) = self.pairs[slot as usize].take() else {
                continue;
            };
            if let Some(topics) = self.slots.get_mut(&pair.category) {
                topics.remove(&pair.topic);
                if topics.is_empty() {
                    self.slots.remove(&pair.category);
                }
            }
            self.free.push(slot);
            out.push((pair.category, pair.topic, 0));
        }
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_top_list_keeps_its_generation_until_it_changes() {
        let mut t = TopicCounts::new(100);
        assert_eq!(t.top_set_with_generation("animals"), (0, &[][..]));
        t.record("animals", "cats", 0);
        t.record("food", "pie", 0);
        t.refresh_top(1);
        let (cats, list) = t.top_set_with_generation("animals");
        assert_eq!(list, ["cats"]);
        let (pie, _) = t.top_set_with_generation("food");
        assert!(cats > 0 && pie > 0 && cats != pie);
        // More counts, same lists: same generations.
        t.record("animals", "cats", 1);
        t.record("animals", "dogs", 1);
        t.refresh_top(1);
        assert_eq!(t.top_set_with_generation("animals").0, cats);
        assert_eq!(t.top_set_with_generation("food").0, pie);
        // A new leader: a new generation for that category only.
        t.record("animals", "dogs", 2);
        t.record("animals", "dogs", 2);
        t.refresh_top(1);
        let (now, list) = t.top_set_with_generation("animals");
        assert_eq!(list, ["dogs"]);
        assert!(now > cats && now != pie);
        assert_eq!(t.top_set_with_generation("food").0, pie);
        // The same two topics in the other order: ranked differently, same
        // set, same generation.
        t.refresh_top(2);
        let (two, set) = t.top_set_with_generation("animals");
        assert_eq!(
            (t.top("animals"), set),
            (
                &["dogs".to_owned(), "cats".to_owned()][..],
                &["cats".to_owned(), "dogs".to_owned()][..]
            )
        );
        for _ in 0..3 {
            t.record("animals", "cats", 3);
        }
        t.refresh_top(2);
        assert_eq!(t.top("animals"), ["cats", "dogs"]);
        assert_eq!(t.top_set_with_generation("animals").0, two);
    }

    #[test]
    fn counts_slide_and_rank() {
        let mut t = TopicCounts::new(100);
        t.record("animals", "cats", 0);
        t.record("animals", "cats", 10);
        t.record("animals", "dogs", 20);
        t.record("animals", "axolotl", 20);
        t.refresh_top(2);
        assert_eq!(t.top("animals"), ["cats", "axolotl"]);
        assert_eq!(t.take_changed().len(), 3);
        t.expire(105);
        assert_eq!(t.count("animals", "cats"), 1);
        t.expire(200);
        assert_eq!(t.count("animals", "cats"), 0);
        t.refresh_top(2);
        assert!(t.top("animals").is_empty());
    }

    use proptest::prelude::*;

    proptest! {
        /// Against a map of every recorded (time, category, topic): counts,
        /// the changes reported, and the top lists, as pairs leave the window
        /// and their slots are taken by others.
        #[test]
        fn matches_a_plain_window(
            steps in proptest::collection::vec((0i64..40, 0usize..3, 0usize..5, any::<bool>()), 1..200)
        ) {
            let categories = ["animals", "food", "gaming"];
            let topics = ["cats", "dogs", "pie", "retro", "x"];
            let window = 10;
            let mut t = TopicCounts::new(window);
            let mut recorded: Vec<(i64, &str, &str)> = Vec::new();
            let mut reported: BTreeMap<(String, String), u64> = BTreeMap::new();
            let mut watermark = 0;
            for (dt, c, topic, expire) in steps {
                if expire {
                    watermark += dt / 4;
                    t.expire(watermark);
                } else {
                    let time = watermark + dt % 8;
                    t.record(categories[c], topics[topic], time);
                    recorded.push((time, categories[c], topics[topic]));
                }
                let mut want: BTreeMap<(String, String), u64> = BTreeMap::new();
                for (time, c, topic) in &recorded {
                    if *time > watermark - window {
                        *want.entry((c.to_string(), topic.to_string())).or_default() += 1;
                    }
                }
                for ((c, topic), n) in &want {
                    prop_assert_eq!(t.count(c, topic), *n);
                }
                let changed = t.take_changed();
                prop_assert!(changed.windows(2).all(|w| (&w[0].0, &w[0].1) < (&w[1].0, &w[1].1)));
                for (c, topic, n) in changed {
                    reported.insert((c, topic), n);
                }
                reported.retain(|_, n| *n > 0);
                prop_assert_eq!(&reported, &want);
                t.refresh_top(2);
                for c in categories {
                    let mut ranked: Vec<(u64, &str)> = want
                        .iter()
                        .filter(|((wc, _), _)| wc == c)
                        .map(|((_, topic), n)| (*n, topic.as_str()))
                        .collect();
                    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
                    let ranked: Vec<&str> = ranked.into_iter().take(2).map(|(_, t)| t).collect();
                    prop_assert_eq!(t.top(c), &ranked[..]);
                }
            }
        }
    }
}
