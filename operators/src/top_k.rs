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

/// What an idea or score row says to the top lists: the row itself, or
/// what the idea state would have put in it.
#[derive(Clone, Copy, Debug)]
pub enum Ranking<'a> {
    Idea {
        id: IdeaId,
        category: &'a Option<Arc<str>>,
        active: bool,
    },
    Score {
        id: IdeaId,
        category: &'a Option<Arc<str>>,
        score: f64,
    },
    /// The idea's row was deleted.
    Gone(IdeaId),
}

impl<'a> Ranking<'a> {
    /// What a change says to the top lists, if it is an idea or score row.
    pub fn of(change: &'a Change) -> Option<Ranking<'a>> {
        let id = match &change.key {
            ViewKey::Idea(id) | ViewKey::Score(id) => *id,
            _ => return None,
        };
        Some(match &change.row {
            Some(ViewRow::Idea(i)) => Ranking::Idea {
                id,
                category: &i.category,
                active: i.status == IdeaStatus::Active,
            },
            Some(ViewRow::Score(s)) => Ranking::Score {
                id,
                category: &s.category,
                score: s.score,
            },
            None => Ranking::Gone(id),
            // A key of an idea or score holds no other row.
            Some(_) => return None,
        })
    }

    fn id(&self) -> IdeaId {
        match self {
            Ranking::Idea { id, .. } | Ranking::Score { id, .. } | Ranking::Gone(id) => *id,
        }
    }
}

/// What the top lists know of an idea: (category, score, active).
///
/// Only active ideas are kept between epochs: an idea archived (or removed)
/// is let go at the end of the epoch that archived it, so that the lists'
/// memory follows the live ideas, not every idea a long run ever saw. The
/// idea state never scores an archived idea, and one that comes back gets
/// a new score in the epoch whose idea row shows it active again; so
/// letting go changes no list and no move.
type Standing = (Option<Arc<str>>, Option<f64>, bool);

/// An epoch with at least this many idea and score rows, and at least one
/// for every `REBUILD_SHARE` ideas ranked, rebuilds the sets it touches
/// ([`TopK::apply`]): moving a row costs ~1 µs, rebuilding ~0.1 µs per
/// ranked idea, so past a tenth of them the rebuild is cheaper.
const REBUILD_MIN_ROWS: usize = 4096;
const REBUILD_SHARE: usize = 8;

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

    /// How many ideas the lists hold a standing for (the active ones).
    pub fn standings(&self) -> usize {
        self.ideas.len()
    }

    /// Lets go of the ideas that are not active: lists saved before they
    /// were let go epoch by epoch (checkpoints of 2026-12-07 and earlier)
    /// held every idea ever archived.
    pub fn let_go_of_inactive(&mut self) {
        self.ideas.retain(|_, (_, _, active)| *active);
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

    /// Each of `categories`' ordered sets made anew from the standings:
    /// what ranking idea by idea would leave, by one sort per category.
    /// `ranked_once` names those where it would have made a set.
    fn rebuild(&mut self, categories: &[Arc<str>], ranked_once: &[Arc<str>]) {
        let mut members: BTreeMap<&str, Vec<Ranked>> =
            categories.iter().map(|c| (&**c, Vec::new())).collect();
        for (id, standing) in &self.ideas {
            if let (Some(cat), Some(score), true) = standing {
                if let Some(list) = members.get_mut(&**cat) {
                    list.push(Ranked {
                        score: *score,
                        id: *id,
                    });
                }
            }
        }
        for (cat, mut list) in members {
            // Ranking idea by idea makes a set when it first ranks an idea
            // in the category, and keeps it when it empties.
            let made = self.ranked.contains_key(cat) || ranked_once.iter().any(|c| **c == *cat);
            if list.is_empty() && !made {
                continue;
            }
            list.sort_unstable();
            self.ranked
                .insert(cat.to_owned(), BTreeSet::from_iter(list));
        }
    }

    /// Applies an epoch; returns the categories whose top K changed.
    ///
    /// A tick re-scores every live idea, and moving each in its category's
    /// ordered set costs two searches down a tree too large for the cache
    /// (~1 µs a row: a third of a second per tick at a quarter of a million
    /// ideas). So an epoch that changes a good part of the ranked ideas
    /// rebuilds the sets it touches from the ideas' standings instead, by
    /// one sort each. Both ways leave the same sets, hence the same moves.
    pub fn apply(&mut self, changes: &[Change]) -> BTreeMap<String, TopKDelta> {
        let rows = changes.iter().filter_map(Ranking::of).count();
        self.apply_ranking(changes.iter().filter_map(Ranking::of), rows)
    }

    /// [`TopK::apply`] of an epoch given as what its idea and score rows say
    /// (`rows` of them), in changelog order: the idea state ranks the
    /// scores it computes without making a row of each (it emits the rows
    /// of a batch of epochs once, at its end).
    pub fn apply_ranking<'a>(
        &mut self,
        updates: impl Iterator<Item = Ranking<'a>>,
        rows: usize,
    ) -> BTreeMap<String, TopKDelta> {
        let ranked: usize = self.ranked.values().map(BTreeSet::len).sum();
        let rebuild = rows >= REBUILD_MIN_ROWS && rows.saturating_mul(REBUILD_SHARE) >= ranked;
        self.apply_with(updates, rebuild)
    }

    /// [`TopK::apply`] moving every row in its category's set, whatever the
    /// epoch's size: the reference the rebuild is measured and tested
    /// against (`cargo bench --bench top_k`).
    pub fn apply_row_by_row(&mut self, changes: &[Change]) -> BTreeMap<String, TopKDelta> {
        self.apply_with(changes.iter().filter_map(Ranking::of), false)
    }

    fn apply_with<'a>(
        &mut self,
        updates: impl Iterator<Item = Ranking<'a>>,
        rebuild: bool,
    ) -> BTreeMap<String, TopKDelta> {
        // The categories rows moved ideas into (whose top K is compared
        // below), and with a rebuild, every one an idea left or joined
        // (whose set is made anew). A handful each, scanned by pointer
        // first: the rows of a tick share a few names.
        let mut touched: Vec<Arc<str>> = Vec::new();
        let mut stale: Vec<Arc<str>> = Vec::new();
        // With a rebuild: the categories some idea was ranked in after one of
        // the rows, where ranking row by row would have made a set, even if
        // it is empty again by the end.
        let mut ranked_once: Vec<Arc<str>> = Vec::new();
        // Ideas a row left inactive: let go at the end of the epoch if no
        // later row made them active again.
        let mut inactive: Vec<IdeaId> = Vec::new();
        for update in updates {
            let id = update.id();
            if !rebuild {
                self.unrank(&id);
            }
            let entry = self.ideas.entry(id).or_insert((None, None, true));
            if rebuild {
                if let Some(cat) = &entry.0 {
                    note(&mut stale, cat);
                }
            }
            match update {
                Ranking::Idea {
                    category, active, ..
                } => {
                    set_category(&mut entry.0, category);
                    entry.2 = active;
                }
                Ranking::Score {
                    category, score, ..
                } => {
                    set_category(&mut entry.0, category);
                    entry.1 = Some(score);
                }
                Ranking::Gone(_) => entry.2 = false,
            }
            if let Some(cat) = &entry.0 {
                note(&mut touched, cat);
                if rebuild {
                    note(&mut stale, cat);
                    if entry.1.is_some() && entry.2 {
                        note(&mut ranked_once, cat);
                    }
                }
            }
            if !entry.2 {
                inactive.push(id);
            }
            if !rebuild {
                self.rank(&id);
            }
        }
        if rebuild {
            self.rebuild(&stale, &ranked_once);
        }
        for id in inactive {
            if let Some((_, _, false)) = self.ideas.get(&id) {
                self.ideas.remove(&id);
            }
        }
        let touched: BTreeSet<String> = touched.iter().map(|c| c.to_string()).collect();
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

/// Adds `cat` to `list` unless it holds the same name.
fn note(list: &mut Vec<Arc<str>>, cat: &Arc<str>) {
    if !list.iter().any(|c| Arc::ptr_eq(c, cat) || **c == **cat) {
        list.push(cat.clone());
    }
}

/// Sets a standing's category, cloning the name only when it changed.
fn set_category(standing: &mut Option<Arc<str>>, category: &Option<Arc<str>>) {
    if standing.as_deref() != category.as_deref() {
        standing.clone_from(category);
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

    fn idea(id: IdeaId, cat: Option<&str>, active: bool) -> Change {
        let status = if active {
            IdeaStatus::Active
        } else {
            IdeaStatus::Archived
        };
        Change::upsert(ViewRow::Idea(Box::new(crate::views::IdeaRow::bare(
            id,
            cat.map(Arc::from),
            status,
            Utc::now(),
        ))))
    }

    proptest::proptest! {
        /// Rebuilding the touched sets leaves what moving row by row does:
        /// the same sets, the same top lists, the same moves, epoch after
        /// epoch, whichever way each epoch goes. Epochs mix score rows
        /// (ties included), ideas changing category or archived, and
        /// removals.
        #[test]
        fn rebuilding_the_sets_moves_the_same_as_ranking_row_by_row(
            epochs in proptest::collection::vec(
                (
                    proptest::collection::vec((0u8..40, 0u8..5, 0u8..4, 0u8..6), 0..60),
                    proptest::bool::ANY,
                ),
                1..12,
            )
        ) {
            let cats = [Some("a"), Some("b"), Some("c"), None];
            let mut by_row = TopK::new(3);
            let mut rebuilt = TopK::new(3);
            for (rows, rebuild) in epochs {
                let changes: Vec<Change> = rows
                    .iter()
                    .map(|&(idea_no, kind, cat, value)| {
                        let id = IdeaId::from(format!("i{idea_no}").as_str());
                        let cat = cats[usize::from(cat)];
                        match kind {
                            0 => idea(id, cat, true),
                            1 => idea(id, cat, false),
                            2 => Change::delete(ViewKey::Score(id)),
                            // Few distinct scores: ties, broken by id.
                            _ => {
                                let mut c = score("x", "a", f64::from(value) / 4.0);
                                if let Some(ViewRow::Score(s)) = &mut c.row {
                                    s.idea_id = id;
                                    s.category = cat.map(Arc::from);
                                }
                                c.key = ViewKey::Score(id);
                                c
                            }
                        }
                    })
                    .collect();
                let expected = by_row.apply_with(changes.iter().filter_map(Ranking::of), false);
                let got = rebuilt.apply_with(changes.iter().filter_map(Ranking::of), rebuild);
                proptest::prop_assert_eq!(&got, &expected);
                proptest::prop_assert_eq!(&rebuilt.ranked, &by_row.ranked);
                proptest::prop_assert_eq!(&rebuilt.current, &by_row.current);
                proptest::prop_assert_eq!(&rebuilt.ideas, &by_row.ideas);
            }
        }
    }

    /// A score row for `id` in `cat`.
    fn score_of(id: IdeaId, cat: &str, s: f64) -> Change {
        let mut c = score("x", cat, s);
        if let Some(ViewRow::Score(row)) = &mut c.row {
            row.idea_id = id;
        }
        c.key = ViewKey::Score(id);
        c
    }

    proptest::proptest! {
        /// Letting archived ideas go changes no list: epochs shaped as the
        /// idea state makes them (new and returning ideas come with their
        /// idea row and a score; archived ones get no score until they come
        /// back) leave, after every epoch, each category's top K as a sort
        /// of every active idea's standing would, and the lists hold
        /// standings for the active ideas only.
        #[test]
        fn letting_archived_ideas_go_keeps_the_lists_of_the_active_ones(
            epochs in proptest::collection::vec(
                proptest::collection::vec((0u8..30, 0u8..3, 0u8..3, 0u8..6), 0..40),
                1..12,
            )
        ) {
            let cats = ["a", "b", "c"];
            let mut top = TopK::new(3);
            // Every idea ever seen: (category, score, active).
            let mut model: BTreeMap<u8, (&str, f64, bool)> = BTreeMap::new();
            for rows in epochs {
                let mut changes = Vec::new();
                for (idea_no, kind, cat, value) in rows {
                    let id = IdeaId::from(format!("i{idea_no}").as_str());
                    let value = f64::from(value) / 4.0;
                    let active = model.get(&idea_no).is_some_and(|m| m.2);
                    match (kind, active) {
                        // Archived: its idea row, no score.
                        (0, true) => {
                            let m = model.get_mut(&idea_no).expect("active");
                            m.2 = false;
                            changes.push(idea(id, Some(m.0), false));
                        }
                        // Re-scored while active.
                        (1, true) => {
                            let m = model.get_mut(&idea_no).expect("active");
                            m.1 = value;
                            changes.push(score_of(id, m.0, value));
                        }
                        // New, or back: its idea row and a new score.
                        (_, false) => {
                            let cat = cats[usize::from(cat)];
                            model.insert(idea_no, (cat, value, true));
                            changes.push(idea(id, Some(cat), true));
                            changes.push(score_of(id, cat, value));
                        }
                        _ => {}
                    }
                }
                top.apply(&changes);
                for cat in cats {
                    let mut want: Vec<Ranked> = model
                        .iter()
                        .filter(|(_, m)| m.0 == cat && m.2)
                        .map(|(no, m)| Ranked {
                            score: m.1,
                            id: IdeaId::from(format!("i{no}").as_str()),
                        })
                        .collect();
                    want.sort();
                    let want: Vec<(String, f64)> = want
                        .iter()
                        .take(3)
                        .map(|r| (r.id.to_string(), r.score))
                        .collect();
                    proptest::prop_assert_eq!(top.top(cat), want.as_slice());
                }
                let active = model.values().filter(|m| m.2).count();
                proptest::prop_assert_eq!(top.standings(), active);
            }
        }
    }

    #[test]
    fn an_archived_idea_is_let_go_and_ranks_again_when_it_comes_back() {
        let mut t = TopK::new(2);
        let [a, b, c] = ["a", "b", "c"].map(IdeaId::from);
        t.apply(&[
            score_of(a, "x", 0.5),
            score_of(b, "x", 0.7),
            score_of(c, "x", 0.6),
        ]);
        let d = t.apply(&[idea(b, Some("x"), false)]);
        assert_eq!(d["x"].left, vec![b.to_string()]);
        assert_eq!(d["x"].entered, vec![a.to_string()]);
        assert_eq!(t.standings(), 2, "the archived idea is let go");
        let d = t.apply(&[idea(b, Some("x"), true), score_of(b, "x", 0.9)]);
        assert_eq!(d["x"].top, vec![(b.to_string(), 0.9), (c.to_string(), 0.6)]);
        assert_eq!(t.standings(), 3);
    }

    #[test]
    fn lists_saved_with_inactive_ideas_let_them_go_when_resumed() {
        let mut t = TopK::new(2);
        let [a, b] = ["a", "b"].map(IdeaId::from);
        t.apply(&[score_of(a, "x", 0.5), score_of(b, "x", 0.7)]);
        // What lists saved before 2026-12-07 held: an archived idea's standing.
        t.ideas
            .insert(IdeaId::from("old"), (Some("x".into()), Some(0.9), false));
        t.let_go_of_inactive();
        assert_eq!(t.standings(), 2);
        assert_eq!(t.top("x").len(), 2);
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
