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
struct TopList {
    generation: u64,
    ranked: Vec<String>,
    set: Vec<String>,
}

pub struct TopicCounts {
    window_secs: i64,
    counts: BTreeMap<(String, String), u64>,
    /// (time, sequence) → (category, topic), for retraction at time + window.
    entries: BTreeMap<(i64, u64), (String, String)>,
    seq: u64,
    changed: BTreeSet<(String, String)>,
    /// Per category: its top list and the generation it was set at (a new
    /// generation only when the set of top topics changed, so that scores
    /// keep the hashtag cohesion they computed against an unchanged set; a
    /// reordering alone does not change cohesion). Looked up per live idea
    /// on every tick, never iterated: hashed.
    top: HashMap<String, TopList, FixedState>,
    generation: u64,
}

impl TopicCounts {
    pub fn new(window_secs: i64) -> Self {
        TopicCounts {
            window_secs: window_secs.max(1),
            counts: BTreeMap::new(),
            entries: BTreeMap::new(),
            seq: 0,
            changed: BTreeSet::new(),
            top: HashMap::with_hasher(FixedState::with_seed(0x1dea)),
            generation: 0,
        }
    }

    pub fn record(&mut self, category: &str, topic: &str, time: i64) {
        let key = (category.to_owned(), topic.to_owned());
        *self.counts.entry(key.clone()).or_default() += 1;
        self.seq += 1;
        self.entries.insert((time, self.seq), key.clone());
        self.changed.insert(key);
    }

    /// Retracts entries whose time + window ≤ `watermark`.
    pub fn expire(&mut self, watermark: i64) {
        let cutoff = watermark - self.window_secs;
        while let Some(entry) = self.entries.first_entry() {
            if entry.key().0 > cutoff {
                break;
            }
            let key = entry.remove();
            if let Some(n) = self.counts.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.counts.remove(&key);
                }
            }
            self.changed.insert(key);
        }
    }

    /// Recomputes every category's `k` most frequent topics (ties by name).
    pub fn refresh_top(&mut self, k: usize) {
        let mut by_category: BTreeMap<&str, Vec<(u64, &str)>> = BTreeMap::new();
        for ((c, t), n) in &self.counts {
            by_category.entry(c).or_default().push((*n, t));
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
        self.counts
            .get(&(category.to_owned(), topic.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// (category, topic) pairs whose count changed since the last call, sorted.
    pub fn take_changed(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.changed).into_iter().collect()
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
}
