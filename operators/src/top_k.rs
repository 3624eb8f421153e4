//! The top K active ideas per category by score (ties: smaller id first),
//! maintained from the changelog, with what entered and left each category's
//! top K since the last epoch: what the Redis sink materializes and what
//! `idea.scored` events announce.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use foldhash::HashMap;

use crate::idea::IdeaId;
use crate::views::{Change, IdeaStatus, ViewKey, ViewRow};

/// Score order: higher first, then id.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Ranked {
    score: f64,
    id: IdeaId,
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then_with(|| self.id.cmp(&other.id))
    }
}

/// How one category's top K moved in an epoch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopKDelta {
    /// The new top K, best first: (idea id, score).
    pub top: Vec<(String, f64)>,
    pub entered: Vec<String>,
    pub left: Vec<String>,
}

/// What the top lists know of an idea: (category, score, active).
type Standing = (Option<Arc<str>>, Option<f64>, bool);

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct TopK {
    k: usize,
    ideas: HashMap<IdeaId, Standing>,
    ranked: BTreeMap<String, BTreeSet<Ranked>>,
    current: BTreeMap<String, Vec<(String, f64)>>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        TopK {
            k: k.max(1),
            ..TopK::default()
        }
    }

    /// How many ideas each category keeps.
    pub fn k(&self) -> usize {
        self.k
    }

    fn unrank(&mut self, id: &IdeaId) {
        if let Some((Some(cat), Some(score), true)) = self.ideas.get(id) {
            if let Some(set) = self.ranked.get_mut(&**cat) {
                set.remove(&Ranked {
                    score: *score,
                    id: *id,
                });
            }
        }
    }

    fn rank(&mut self, id: &IdeaId) {
        if let Some((Some(cat), Some(score), true)) = self.ideas.get(id) {
            let ranked = Ranked {
                score: *score,
                id: *id,
            };
            match self.ranked.get_mut(&**cat) {
                Some(set) => {
                    set.insert(ranked);
                }
                None => {
                    self.ranked
                        .insert(cat.to_string(), BTreeSet::from([ranked]));
                }
            }
        }
    }

    /// Applies an epoch; returns the categories whose top K changed.
    pub fn apply(&mut self, changes: &[Change]) -> BTreeMap<String, TopKDelta> {
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for c in changes {
            let id = match &c.key {
                ViewKey::Idea(id) | ViewKey::Score(id) => *id,
                _ => continue,
            };
            self.unrank(&id);
            let entry = self.ideas.entry(id).or_insert((None, None, true));
            match &c.row {
                Some(ViewRow::Idea(i)) => {
                    entry.0 = i.category.clone();
                    entry.2 = i.status == IdeaStatus::Active;
                }
                Some(ViewRow::Score(s)) => {
                    entry.0 = s.category.clone();
                    entry.1 = Some(s.score);
                }
                None => entry.2 = false,
                _ => {}
            }
            if let Some(cat) = &entry.0 {
                if !touched.contains(&**cat) {
                    touched.insert(cat.to_string());
                }
            }
            self.rank(&id);
        }
        let mut out = BTreeMap::new();
        for cat in touched {
            let top: Vec<(String, f64)> = self
                .ranked
                .get(&cat)
                .map(|set| {
                    set.iter()
                        .take(self.k)
                        .map(|r| (r.id.to_string(), r.score))
                        .collect()
                })
                .unwrap_or_default();
            let before = self.current.get(&cat).cloned().unwrap_or_default();
            if before == top {
                continue;
            }
            let was: BTreeSet<&String> = before.iter().map(|(id, _)| id).collect();
            let now: BTreeSet<&String> = top.iter().map(|(id, _)| id).collect();
            let delta = TopKDelta {
                entered: now.difference(&was).map(|s| (*s).clone()).collect(),
                left: was.difference(&now).map(|s| (*s).clone()).collect(),
                top: top.clone(),
            };
            self.current.insert(cat.clone(), top);
            out.insert(cat, delta);
        }
        out
    }

    /// The current top K of a category, best first.
    pub fn top(&self, category: &str) -> &[(String, f64)] {
        self.current.get(category).map_or(&[], Vec::as_slice)
    }

    pub fn categories(&self) -> impl Iterator<Item = &String> {
        self.current.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::Factors;
    use crate::views::ScoreRow;
    use chrono::Utc;

    fn score(id: &str, cat: &str, s: f64) -> Change {
        Change::upsert(ViewRow::Score(ScoreRow {
            idea_id: id.into(),
            category: Some(cat.into()),
            factors: Factors {
                freshness: s,
                engagement: s,
                novelty: s,
                community_fit: s,
                seasonality: s,
            },
            score: s,
            scored_at: Utc::now(),
        }))
    }

    #[test]
    fn keeps_the_best_k_and_reports_moves() {
        let mut t = TopK::new(2);
        let d = t.apply(&[
            score("a", "x", 0.5),
            score("b", "x", 0.7),
            score("c", "x", 0.6),
        ]);
        // Ids as they are written.
        let id = |name: &str| IdeaId::from(name).to_string();
        assert_eq!(d["x"].top, vec![(id("b"), 0.7), (id("c"), 0.6)]);
        assert_eq!(d["x"].entered, vec![id("b"), id("c")]);
        let d = t.apply(&[score("a", "x", 0.9)]);
        assert_eq!(d["x"].entered, vec![id("a")]);
        assert_eq!(d["x"].left, vec![id("c")]);
        // No change in the top: nothing reported.
        assert!(t.apply(&[score("c", "x", 0.1)]).is_empty());
        assert_eq!(t.top("x").len(), 2);
    }
}
