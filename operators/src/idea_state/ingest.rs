//! One signal into the idea state: the Bloom filter, the exact lookup and
//! the near-duplicate lookup decide whether it merges into a live idea or
//! creates one.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::rescore::in_window;
use super::{row_key, sorted_topics, utc, IdeaState, KnownCohesion, LiveIdea, PreparedSignal};
use crate::content_hash::ContentHash;
use crate::idea::IdeaId;
use crate::redelivery::{signal_key, SeenSignal, SignalKey};
use crate::score;
use crate::views::{DedupeKind, IdeaRow, IdeaStatus, SignalRow, ViewKey, ViewRow};

impl IdeaState {
    /// A signal taken before is a re-poll ([`IdeaState::take_again`]);
    /// otherwise Bloom → exact → near → new idea. Returns the slot of the
    /// idea it changed, if any.
    pub(super) fn apply_signal(
        &mut self,
        s: PreparedSignal,
        changes: &mut BTreeMap<ViewKey, Option<ViewRow>>,
    ) -> Option<u32> {
        let key = self
            .seen_signals
            .enabled()
            .then(|| signal_key(s.signal.source, &s.signal.id));
        if let Some(prev) = key.and_then(|k| self.seen_signals.get(k).copied()) {
            return self.take_again(key.expect("looked up"), prev, s, changes);
        }
        self.stats.signals += 1;
        let time = s.signal.captured_at.timestamp();
        let maybe_seen = self.bloom.check_and_insert(&s.hash, time);
        let exact = if maybe_seen {
            let hit = self.by_hash.get(&s.hash).copied();
            if hit.is_none() {
                self.stats.bloom_false_positive += 1;
            }
            hit
        } else {
            self.stats.bloom_negative += 1;
            None
        };
        let (slot, kind, similarity) = match exact {
            Some(slot) => {
                self.stats.exact += 1;
                (slot, DedupeKind::Exact, None)
            }
            None => match self.nearest_live(&s) {
                Some((slot, sim)) => {
                    self.stats.near += 1;
                    (slot, DedupeKind::Near, Some(sim))
                }
                None => {
                    self.stats.new_ideas += 1;
                    (self.create(&s), DedupeKind::New, None)
                }
            },
        };
        if kind != DedupeKind::New {
            self.catch_up(slot);
            self.merge(slot, &s, kind);
        }
        let idea = self.ideas[slot as usize].as_ref().expect("live slot");
        let idea_id = idea.row.id;
        let category = idea.row.category.clone();
        self.rates.record(s.signal.source, time, s.rate);
        if let Some(c) = &category {
            for t in &s.signal.topics {
                self.topics.record(c, t, time);
            }
        }
        self.distinct.record(
            s.signal.source,
            time,
            &s.signal.id,
            idea_id.write(&mut [0; 36]),
            s.signal.community.as_deref(),
        );
        if let Some(key) = key {
            self.seen_signals.insert(
                key,
                SeenSignal {
                    idea: idea_id.bits(),
                    captured_at: s.signal.captured_at.timestamp_micros(),
                    engagement: s.signal.engagement,
                    dedupe: kind,
                    similarity,
                    content_hash: s.hash,
                },
            );
        }
        let hash = ContentHash(s.hash);
        let row = signal_row(s, idea_id, hash, kind, similarity);
        changes.insert(row_key(&row), Some(ViewRow::Signal(Box::new(row))));
        let idea = self.ideas[slot as usize].as_ref().expect("live slot");
        changes.insert(
            ViewKey::Idea(idea.row.id),
            Some(ViewRow::Idea(Box::new(idea.row.clone()))),
        );
        Some(slot)
    }

    /// A signal whose `(source, id)` was taken before: a redelivery or a
    /// re-poll. Newer figures replace the earlier ones in its idea's
    /// engagement and its row; anything else changes nothing. It is not a
    /// second signal: counts, centroids, topics and statistics stay as the
    /// first sighting left them.
    fn take_again(
        &mut self,
        key: SignalKey,
        prev: SeenSignal,
        s: PreparedSignal,
        changes: &mut BTreeMap<ViewKey, Option<ViewRow>>,
    ) -> Option<u32> {
        let captured_at = s.signal.captured_at.timestamp_micros();
        let slot = self.by_id.get(&IdeaId::from_bits(prev.idea)).copied();
        let (true, Some(slot)) = (prev.replaced_by(captured_at, &s.signal.engagement), slot) else {
            // An identical or older copy; or its idea is archived, whose
            // figures are frozen.
            self.stats.repeats += 1;
            self.refused
                .refused(crate::redelivery::RecordDigest::Signal(key));
            return None;
        };
        self.stats.repolls += 1;
        self.catch_up(slot);
        let mut idea = self.ideas[slot as usize].take().expect("live slot");
        idea.row.engagement = idea
            .row
            .engagement
            .saturating_sub(&prev.engagement)
            .saturating_add(&s.signal.engagement);
        self.refresh_derived(&mut idea);
        let idea_row = ViewRow::Idea(Box::new(idea.row.clone()));
        let idea_id = idea.row.id;
        self.ideas[slot as usize] = Some(idea);
        self.seen_signals.insert(
            key,
            SeenSignal {
                captured_at,
                engagement: s.signal.engagement,
                ..prev
            },
        );
        let hash = ContentHash(prev.content_hash);
        let row = signal_row(s, idea_id, hash, prev.dedupe, prev.similarity);
        changes.insert(row_key(&row), Some(ViewRow::Signal(Box::new(row))));
        changes.insert(ViewKey::Idea(idea_id), Some(idea_row));
        Some(slot)
    }

    /// The live idea most similar to `s` at or above the threshold, among the
    /// LSH candidates (ties: the earlier idea); none for an illegible text,
    /// whose vector says nothing (see [`PreparedSignal::legible`]).
    fn nearest_live(&mut self, s: &PreparedSignal) -> Option<(u32, f32)> {
        if !s.legible {
            return None;
        }
        let found = self
            .near
            .matches(&s.embedding, &s.signatures, self.dedupe.near_threshold);
        self.stats.lsh_candidates += found.candidates;
        let mut best: Option<(u32, f32, i64, IdeaId)> = None;
        for (slot, sim) in found.hits {
            let Some(idea) = self.ideas[slot as usize].as_ref() else {
                continue;
            };
            let better = match best {
                None => true,
                Some((_, b, first, id)) => {
                    sim > b || (sim == b && (idea.first_seen, idea.row.id) < (first, id))
                }
            };
            if better {
                best = Some((slot, sim, idea.first_seen, idea.row.id));
            }
        }
        best.map(|(slot, sim, _, _)| (slot, sim))
    }

    fn category_name(&mut self, category: &str) -> Arc<str> {
        if let Some(name) = self.category_names.get(category) {
            return name.clone();
        }
        let name: Arc<str> = Arc::from(category);
        self.category_names.insert(name.clone());
        name
    }

    fn create(&mut self, s: &PreparedSignal) -> u32 {
        let time = s.signal.captured_at.timestamp();
        let hash = ContentHash(s.hash);
        let id = IdeaId::of_hash(hash);
        let resumed = self.archived.remove(&s.hash);
        let sig = &s.signal;
        let first_seen = resumed.map_or(time, |a| a.first_seen.min(time));
        let row = IdeaRow {
            id,
            content_hash: hash,
            content: sig.content.clone(),
            source: sig.source,
            category: s.category.as_ref().map(|(c, _)| self.category_name(c)),
            category_similarity: s.category.as_ref().map(|(_, v)| *v),
            anchor_class: match &self.classifier {
                Some(c) => Some(c.route(&sig.content, &s.embedding).category),
                None => s.anchor_class.clone(),
            },
            community: sig.community.clone(),
            locale: sig.locale.clone(),
            topics: sorted_topics(&sig.topics),
            signal_count: resumed.map_or(1, |a| a.signal_count + 1),
            near_duplicates: resumed.map_or(0, |a| a.near_duplicates),
            engagement: resumed.map_or(sig.engagement, |a| {
                a.engagement.saturating_add(&sig.engagement)
            }),
            engagement_rate: 0.0,
            first_seen: utc(first_seen),
            last_seen: sig.captured_at,
            peak_at: sig.peak_time(),
            status: IdeaStatus::Active,
            embedding: s.embedding.clone(),
        };
        let mut idea = Box::new(LiveIdea {
            row,
            hashes: Box::new([s.hash]),
            vectors: Box::new([]),
            first_seen,
            last_seen: time,
            peak: sig.peak_time().timestamp(),
            earliest_published: sig.published_at.map(|p| p.timestamp()),
            seasonality: 0.0,
            norm2: crate::centroid::norm2(&s.embedding),
            cohesion: KnownCohesion::NONE,
            score: None,
            category_centroid: None,
            community_centroid: None,
        });
        self.refresh_derived(&mut idea);
        // An idea is in the centroids from its first sighting for a window:
        // one resumed after that (archived, then seen again) is not added
        // back, so the centroids agree with the `first_seen` the views show.
        let in_window = in_window(self.window_start(), first_seen);
        if let Some(c) = &idea.row.category {
            if in_window {
                self.categories
                    .insert(c, id, first_seen, s.embedding.clone());
            }
            idea.category_centroid = Some(self.categories.acquire(c));
        }
        if let Some(c) = &idea.row.community {
            if in_window {
                self.communities
                    .insert(c, id, first_seen, s.embedding.clone());
            }
            idea.community_centroid = Some(self.communities.acquire(c));
        }
        self.live_sources[idea.row.source as usize] += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.ideas[slot as usize] = Some(idea);
                slot
            }
            None => {
                self.ideas.push(Some(idea));
                (self.ideas.len() - 1) as u32
            }
        };
        // Not concerned by the ticks deferred before it existed.
        self.deferred.up_to_date(slot);
        self.by_hash.insert(s.hash, slot);
        self.archived_factors.remove(&id.bits());
        self.by_id.insert(id, slot);
        if s.legible {
            let v = self
                .near
                .insert(slot, s.embedding.clone(), &s.signatures, None);
            let idea = self.ideas[slot as usize].as_mut().expect("live slot");
            idea.vectors = Box::new([v]);
        }
        slot
    }

    fn merge(&mut self, slot: u32, s: &PreparedSignal, kind: DedupeKind) {
        let mut idea = self.ideas[slot as usize].take().expect("live slot");
        let sig = &s.signal;
        let time = sig.captured_at.timestamp();
        let row = &mut idea.row;
        row.signal_count += 1;
        if kind == DedupeKind::Near {
            row.near_duplicates += 1;
            if !idea.hashes.contains(&s.hash) {
                push(&mut idea.hashes, s.hash);
                self.by_hash.insert(s.hash, slot);
                let v = self.near.insert(
                    slot,
                    s.embedding.clone(),
                    &s.signatures,
                    idea.vectors.first().copied(),
                );
                push(&mut idea.vectors, v);
            }
        }
        row.engagement = row.engagement.saturating_add(&sig.engagement);
        if time > idea.last_seen {
            idea.last_seen = time;
            row.last_seen = sig.captured_at;
        }
        let peak = sig.peak_time().timestamp();
        if peak > idea.peak {
            idea.peak = peak;
            row.peak_at = sig.peak_time();
        }
        if let Some(p) = sig.published_at.map(|p| p.timestamp()) {
            idea.earliest_published = Some(idea.earliest_published.map_or(p, |e| e.min(p)));
        }
        if !sig.topics.is_empty() {
            let mut topics = row.topics.clone();
            topics.extend(sig.topics.iter().cloned());
            row.topics = sorted_topics(&topics);
            idea.cohesion = KnownCohesion::NONE;
        }
        self.refresh_derived(&mut idea);
        self.ideas[slot as usize] = Some(idea);
    }

    /// Rate and seasonality: they change only when signals merge in.
    fn refresh_derived(&self, idea: &mut LiveIdea) {
        let minutes = idea
            .earliest_published
            .map(|p| (idea.last_seen - p) as f64 / 60.0);
        idea.row.engagement_rate =
            score::engagement_rate(&idea.row.engagement, minutes, &self.scoring);
        let days = self
            .calendar
            .days_to_nearest(idea.row.last_seen, idea.row.locale.as_deref());
        idea.seasonality = score::seasonality(days, &self.scoring);
    }
}

/// A signal's row: the signal as taken, and how it was deduplicated.
fn signal_row(
    s: PreparedSignal,
    idea_id: IdeaId,
    content_hash: ContentHash,
    dedupe: DedupeKind,
    similarity: Option<f32>,
) -> SignalRow {
    let sig = s.signal;
    SignalRow {
        source: sig.source,
        id: sig.id,
        idea_id,
        content_hash,
        dedupe,
        similarity,
        captured_at: sig.captured_at,
        published_at: sig.published_at,
        content: sig.content,
        community: sig.community,
        topics: sig.topics,
        locale: sig.locale,
        url: sig.url,
        engagement: sig.engagement,
        engagement_rate: s.rate,
    }
}

/// Appends to a boxed slice (a near-duplicate's hash or vector joining an
/// idea: rare, so the copy costs less than a vector's spare capacity).
fn push<T>(items: &mut Box<[T]>, item: T) {
    let mut v = std::mem::take(items).into_vec();
    v.push(item);
    *items = v.into_boxed_slice();
}
