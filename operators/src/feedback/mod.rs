//! The feedback loop (seed 004 §feedback loop, A/B micro-tests, Thompson
//! sampling, online weight updates), in event time and without I/O.
//!
//! [`FeedbackState::apply_epoch`] takes one completed epoch's
//! `listing.published` and `feedback.received` events, together with the
//! idea state's changelog for the same epoch (which ideas exist, their current
//! factors), and returns view changes:
//!
//! - **windows** per idea × marketplace × variant: tumbling hourly and daily,
//!   and sliding 7-day windows ending at each day boundary, of impressions,
//!   clicks, favorites, add-to-cart and sales with CTR (clicks/impressions),
//!   add-to-cart rate (add-to-cart/clicks) and conversion (sales/clicks). A
//!   window is emitted by the first epoch whose end passes the window's end.
//!   Epochs complete only when the source watermark (max event time minus
//!   `pipeline.allowed_lateness_secs`) passes them, so feedback late within
//!   the allowed lateness is already in; later feedback is dead-lettered by
//!   the source as `late`. Feedback can name an archived idea until the idea
//!   state forgets it ([`IdeaFact::Forgotten`]), and longer while its
//!   listings' hourly counters are in use. Feedback for an idea not yet seen waits up to
//!   `unknown_idea_wait_secs`: when the idea appears, it is counted at its own
//!   event time and any window it falls in that was already emitted is
//!   emitted again with the new value (the revision replaces the old row);
//!   when the wait runs out, it is dead-lettered as `unknown_idea`.
//! - **A/B results** per idea × marketplace on each sliding 7-day window: the
//!   first variant (by name) is the control, every other variant is tested
//!   against it ([`ab_test`]); a winner is declared only when both variants
//!   have `ab_min_impressions` and p < `ab_alpha`.
//! - **allocations**: each day's promotion budget per idea split among its
//!   variants by Thompson sampling over the 7-day posterior ([`thompson`]).
//! - **weights**: at each day's end, the scoring weights re-estimated from
//!   that day's CTR per idea and the ideas' current factors
//!   ([`weight_learning`]); the caller hands them to the idea state, whose
//!   next epoch re-scores every active idea with them.
//! - **time to publish**: each listing's time from its idea's first signal,
//!   and an SLA alert when their average over `sla_window_secs` exceeds
//!   `sla_threshold_hours`, at most once per `sla_alert_cooldown_minutes`.

pub mod ab_test;
pub mod anchors;
mod known_ideas;
mod rows;
pub mod thompson;
pub mod weight_learning;

pub use known_ideas::KnownIdeasSize;
pub use rows::{
    window_key, AbResultRow, AllocationRow, Arm, Counts, PublishRow, SlaAlertRow, WeightsRow,
    WindowKind, WindowRow,
};

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, TimeZone, Utc};
use foldhash::fast::FixedState;
use serde::{Deserialize, Serialize};

use crate::event::{Event, Payload};
use crate::idea::{id_bits, id_text, IdeaId};
use crate::rejection::{DeadLetter, Position, RejectReason};
use crate::score::{Factors, Weights};
use crate::views::{Change, ViewRow};
use ab_test::{two_proportion_z, Trials};
use weight_learning::{LearningParams, Observation};

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
const WEEK: i64 = 7 * DAY;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedbackParams {
    /// How long (event time) listing and feedback events for an idea not yet
    /// seen wait for it before they are dead-lettered as `unknown_idea`.
    pub unknown_idea_wait_secs: i64,
    /// Impressions each variant needs in the 7-day window before a winner can be declared.
    pub ab_min_impressions: u64,
    /// Significance level of the A/B test (two-sided).
    pub ab_alpha: f64,
    /// Promotion budget per idea and day, split among its variants.
    pub daily_budget: f64,
    /// Posterior draws per Thompson allocation.
    pub thompson_draws: u32,
    /// Seed 004 §7: alert when the average time from an idea's first signal
    /// to its listing, over the listings of the last `sla_window_secs`,
    /// exceeds this (env `SLA_THRESHOLD_HOURS`).
    pub sla_threshold_hours: f64,
    pub sla_window_secs: i64,
    /// No second alert within this long after one (env `SLA_ALERT_COOLDOWN_MINUTES`).
    pub sla_alert_cooldown_minutes: i64,
    pub learning: LearningParams,
    pub anchors: anchors::AnchorParams,
}

impl Default for FeedbackParams {
    fn default() -> Self {
        FeedbackParams {
            unknown_idea_wait_secs: 6 * HOUR,
            ab_min_impressions: 1000,
            ab_alpha: 0.05,
            daily_budget: 100.0,
            thompson_draws: 1000,
            sla_threshold_hours: 24.0,
            sla_window_secs: DAY,
            sla_alert_cooldown_minutes: 60,
            learning: LearningParams::default(),
            anchors: anchors::AnchorParams::default(),
        }
    }
}

fn utc(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
}

/// What feedback learns from the idea state's changelog: the ideas that
/// exist, their latest factors, and which content hashes were merged into
/// which idea (a listing may name the merged text's own id); and, beside
/// the changelog, which archived ideas the state forgot.
#[derive(Clone, Debug, PartialEq)]
pub enum IdeaFact {
    Seen {
        id: IdeaId,
        first_seen: i64,
    },
    Scored {
        id: IdeaId,
        factors: Factors,
    },
    Alias {
        own: IdeaId,
        idea: IdeaId,
    },
    /// The idea state forgot this archived idea (its id's bits:
    /// [`crate::idea_state::IdeaState::forgotten`]); it comes before the
    /// epoch's other facts, since the tick that forgot it precedes the
    /// epoch's signals (which may start the idea over).
    Forgotten {
        id: u128,
    },
}

impl IdeaFact {
    pub fn of(change: &Change) -> Option<IdeaFact> {
        match change.row.as_ref()? {
            ViewRow::Idea(i) => Some(IdeaFact::Seen {
                id: i.id,
                first_seen: i.first_seen.timestamp(),
            }),
            ViewRow::Score(s) => Some(IdeaFact::Scored {
                id: s.idea_id,
                factors: s.factors,
            }),
            ViewRow::Signal(s) => {
                let own = IdeaId::of_hash(s.content_hash);
                (own != s.idea_id).then_some(IdeaFact::Alias {
                    own,
                    idea: s.idea_id,
                })
            }
            _ => None,
        }
    }
}

/// The factors of the last score row an idea was given (`None`: never
/// scored): what [`IdeaFact::Scored`] facts would have told, read from the
/// idea state instead of sent once per idea per tick.
pub trait LatestFactors {
    fn factors(&self, idea_id: &str) -> Option<Factors>;
}

/// What an epoch of feedback produced.
#[derive(Debug, Default)]
pub struct FeedbackOutput {
    pub changes: Vec<Change>,
    /// New scoring weights for the idea state, when learned this epoch.
    pub new_weights: Option<Weights>,
    /// The classifier's anchors, moved by classification feedback this epoch.
    pub new_anchors: Option<Vec<crate::classify::Anchor>>,
}

/// A `classification.corrected` event with its sentence embedded.
pub struct EmbeddedCorrection {
    pub event: Event,
    pub embedding: std::sync::Arc<[f32]>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Pending {
    time: i64,
    /// As its JSON envelope: an event's serde form leaves absent fields out,
    /// which only a self-describing format reads back.
    #[serde(with = "crate::event::as_json_text")]
    event: Event,
}

/// Saved whole by [`FeedbackState::save`] and resumed by
/// [`FeedbackState::resume`]; cloned whole for a checkpoint to encode on a
/// thread of its own.
#[derive(Clone, Serialize, Deserialize)]
pub struct FeedbackState {
    params: FeedbackParams,
    prior: Weights,
    weights: Weights,
    started: bool,
    /// The ideas feedback may name (live or archived, until the idea state
    /// forgets them) and the near-duplicate texts merged into them.
    known: known_ideas::KnownIdeas,
    /// Ideas the idea state forgot whose listings' hourly counters are still
    /// in use: they stay known (their listings keep receiving feedback)
    /// until the counters age out ([`FeedbackState::prune`]).
    orphans: BTreeSet<u128>,
    /// Factors from [`IdeaFact::Scored`] facts, for a state given no
    /// [`LatestFactors`] (the pipeline always gives one, so this stays empty).
    scored: HashMap<u128, Factors, FixedState>,
    /// (deadline, arrival) → event waiting for its idea.
    pending: BTreeMap<(i64, u64), Pending>,
    arrivals: u64,
    dead_letters: u64,
    /// Hourly counters per arm; the windows are sums of them.
    hours: BTreeMap<Arm, BTreeMap<i64, Counts>>,
    windows_due: BTreeSet<(i64, WindowKind, i64, Arm)>,
    /// (window end, idea, marketplace): A/B tests and allocations to compute.
    ideas_due: BTreeSet<(i64, String, String)>,
    /// Day ends with feedback: weights to learn.
    days_due: BTreeSet<i64>,
    published: BTreeSet<Arm>,
    /// Event time from learning new weights to the idea state's first epoch
    /// scored with them (one epoch through the dataflow's feedback edge).
    weights_delay_secs: i64,
    /// (published_at, seconds to publish) of the listings in the SLA window.
    recent_listings: std::collections::VecDeque<(i64, f64)>,
    last_alert: Option<i64>,
    anchors: Option<anchors::AnchorFeedback>,
    /// Envelopes taken within `dedupe.event_id_horizon_secs`, by `eventId`:
    /// a redelivered listing, feedback report or correction changes nothing.
    event_ids: crate::redelivery::EventIdsSeen,
}

impl FeedbackState {
    pub fn new(params: FeedbackParams, prior: Weights) -> Self {
        FeedbackState {
            params,
            prior: prior.normalized(),
            weights: prior.normalized(),
            started: false,
            known: known_ideas::KnownIdeas::new(),
            orphans: BTreeSet::new(),
            scored: HashMap::with_hasher(FixedState::with_seed(0x1dea)),
            pending: BTreeMap::new(),
            arrivals: 0,
            dead_letters: 0,
            hours: BTreeMap::new(),
            windows_due: BTreeSet::new(),
            ideas_due: BTreeSet::new(),
            days_due: BTreeSet::new(),
            published: BTreeSet::new(),
            weights_delay_secs: 0,
            recent_listings: std::collections::VecDeque::new(),
            last_alert: None,
            anchors: None,
            event_ids: crate::redelivery::EventIdsSeen::new(
                crate::redelivery::DEFAULT_HORIZON_SECS,
            ),
        }
    }

    /// How long an envelope's `eventId` is remembered (0: not at all).
    pub fn with_event_id_horizon(mut self, secs: i64) -> Self {
        self.event_ids = crate::redelivery::EventIdsSeen::new(secs);
        self
    }

    /// The epoch's envelopes less those whose `eventId` was taken within
    /// the horizon (redeliveries), in a total order: events without an id
    /// are all kept. Call once per epoch, before applying its events and
    /// corrections; `watermark` is the epoch's end.
    pub fn take_once(&mut self, watermark: i64, events: Vec<Event>) -> Vec<Event> {
        let mut keyed: Vec<(i64, String, Event)> = events
            .into_iter()
            .map(|e| {
                let key = serde_json::to_string(&e.payload).unwrap_or_default();
                (e.time.timestamp(), key, e)
            })
            .collect();
        // The first of two copies in this order is the one taken, whatever
        // their arrival order.
        keyed.sort_by(|a, b| (a.0, &a.2.meta.event_id, &a.1).cmp(&(b.0, &b.2.meta.event_id, &b.1)));
        let taken = keyed
            .into_iter()
            .filter(|(time, _, e)| match &e.meta.event_id {
                Some(id) => self.event_ids.take(id, *time),
                None => true,
            })
            .map(|(_, _, e)| e)
            .collect();
        self.event_ids.expire(watermark);
        taken
    }

    /// Envelopes refused as redeliveries so far.
    pub fn repeated_events(&self) -> u64 {
        self.event_ids.repeats()
    }

    /// Keeps the digests of refused envelopes for [`Self::take_refused`].
    pub fn log_refused(&mut self) {
        self.event_ids.log_refused();
    }

    /// The envelopes refused as redeliveries since the last call.
    pub fn take_refused(&mut self) -> Vec<crate::redelivery::RecordDigest> {
        self.event_ids.take_refused()
    }

    /// Takes back `saved` (as [`FeedbackState`]'s serde form wrote it) in
    /// place of `fresh`, built from the configuration, which must have the
    /// same settings.
    pub fn resume(
        saved: FeedbackState,
        fresh: &FeedbackState,
    ) -> Result<FeedbackState, crate::idea_state::ResumeError> {
        use crate::idea_state::ResumeError;
        if saved.params != fresh.params || saved.prior != fresh.prior {
            return Err(ResumeError::Settings("feedback"));
        }
        if saved.event_ids.horizon_secs() != fresh.event_ids.horizon_secs() {
            return Err(ResumeError::Settings("dedupe"));
        }
        let same_anchors = match (&saved.anchors, &fresh.anchors) {
            (Some(a), Some(b)) => a.same_settings(b),
            (None, None) => true,
            _ => false,
        };
        if !same_anchors {
            return Err(ResumeError::Settings("classify"));
        }
        Ok(saved)
    }

    /// The anchors as classification feedback has moved them so far (`None`:
    /// no anchors are moved by feedback).
    pub fn current_anchors(&self) -> Option<Vec<crate::classify::Anchor>> {
        self.anchors.as_ref().map(|a| a.anchors())
    }

    /// Classification feedback moves these anchors (the classifier's, as
    /// embedded at start).
    pub fn with_anchors(mut self, base: Vec<crate::classify::Anchor>) -> Self {
        self.anchors = Some(anchors::AnchorFeedback::new(
            base,
            self.params.anchors.clone(),
        ));
        self
    }

    /// Applies one epoch's classification corrections (in any order).
    pub fn apply_corrections(
        &mut self,
        watermark: i64,
        mut corrections: Vec<EmbeddedCorrection>,
        out: &mut FeedbackOutput,
    ) {
        corrections.sort_by_cached_key(|c| {
            (
                c.event.time.timestamp(),
                serde_json::to_string(&c.event.payload).unwrap_or_default(),
            )
        });
        let mut changed = Vec::new();
        for c in corrections {
            let Payload::Correction(fix) = &c.event.payload else {
                continue;
            };
            let Some(state) = self.anchors.as_mut() else {
                continue;
            };
            if state.knows(&fix.correct) {
                state.correct(
                    c.event.time.timestamp(),
                    &fix.correct,
                    fix.rating,
                    c.embedding,
                );
                changed.push(fix.correct.clone());
            } else {
                let id = self.dead_letters;
                self.dead_letters += 1;
                out.changes.push(Change::upsert(ViewRow::DeadLetter(
                    id,
                    DeadLetter {
                        reason: RejectReason::InvalidValue,
                        message: format!(
                            "classification.corrected names the anchor {:?}, which is not one of [classifier.anchors]; use one of their names",
                            fix.correct
                        ),
                        position: Position {
                            file: "classification feedback".into(),
                            line: 0,
                            offset: 0,
                        },
                        raw: serde_json::to_string(&c.event).unwrap_or_default(),
                    },
                )));
            }
        }
        if let Some(state) = self.anchors.as_mut() {
            let (rows, moved) = state.refresh(watermark, changed);
            out.changes
                .extend(rows.into_iter().map(|r| Change::upsert(ViewRow::Anchor(r))));
            out.new_anchors = moved;
        }
    }

    /// Learned weights take effect this long after the epoch that learned
    /// them; `effective_from` in the history says so, so that every score can
    /// be explained with the weights it was computed with.
    pub fn with_weights_delay(mut self, secs: i64) -> Self {
        self.weights_delay_secs = secs;
        self
    }

    pub fn weights(&self) -> Weights {
        self.weights
    }

    /// Events waiting for their idea.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// `watermark`: the epoch's end (seconds); `events`: its listing and
    /// feedback events, in any order; `idea_changes`: the idea state's
    /// changelog for the same epoch.
    pub fn apply_epoch(
        &mut self,
        watermark: i64,
        events: Vec<Event>,
        idea_changes: &[Change],
    ) -> FeedbackOutput {
        let facts: Vec<IdeaFact> = idea_changes.iter().filter_map(IdeaFact::of).collect();
        self.apply_epoch_facts(watermark, events, &facts, None)
    }

    /// [`FeedbackState::apply_epoch`] with the changelog already reduced to
    /// what feedback needs (the dataflow emits it beside the changelog
    /// without copying whole rows). With `latest`, ideas' factors come from
    /// it instead of from [`IdeaFact::Scored`] facts, which the caller then
    /// need not send: it must answer with the factors of the last score row
    /// emitted for the idea up to this epoch, as those facts would have.
    pub fn apply_epoch_facts(
        &mut self,
        watermark: i64,
        mut events: Vec<Event>,
        idea_changes: &[IdeaFact],
        latest: Option<&dyn LatestFactors>,
    ) -> FeedbackOutput {
        let mut out = FeedbackOutput::default();
        if !self.started {
            self.started = true;
            out.changes
                .push(Change::upsert(ViewRow::Weights(WeightsRow {
                    effective_from: utc(watermark),
                    learned_from: utc(watermark),
                    weights: self.weights,
                    origin: "configured".into(),
                    ideas: 0,
                    impressions: 0,
                })));
        }
        self.observe_ideas(idea_changes);
        // A total order on the epoch's events, whatever their arrival order.
        let mut keyed: Vec<(i64, String, Event)> = events
            .drain(..)
            .map(|e| {
                let key = serde_json::to_string(&e.payload).unwrap_or_default();
                (e.time.timestamp(), key, e)
            })
            .collect();
        keyed.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        for (time, _, event) in keyed {
            let seq = self.arrivals;
            self.arrivals += 1;
            self.pending.insert(
                (time + self.params.unknown_idea_wait_secs, seq),
                Pending { time, event },
            );
        }
        self.release_pending(watermark, &mut out);
        self.emit_windows(watermark, &mut out);
        self.emit_tests_and_allocations(watermark, &mut out);
        self.learn_weights(watermark, &mut out, latest);
        self.prune(watermark);
        out
    }

    /// How much of what grows with the stream the state holds: ideas and
    /// aliases it can resolve, arms with counters or listings, and the
    /// forgotten ideas kept for their arms.
    pub fn size(&self) -> FeedbackStateSize {
        FeedbackStateSize {
            known: self.known.size(),
            arms: self.hours.len(),
            published: self.published.len(),
            orphans: self.orphans.len(),
        }
    }

    fn observe_ideas(&mut self, facts: &[IdeaFact]) {
        for f in facts {
            match f {
                IdeaFact::Seen { id, first_seen } => {
                    let id = id.bits();
                    self.known.see(id, *first_seen);
                    // Started over (or never gone): not an orphan.
                    self.orphans.remove(&id);
                }
                IdeaFact::Scored { id, factors } => {
                    if self.known.contains(id.bits()) {
                        self.scored.insert(id.bits(), *factors);
                    }
                }
                IdeaFact::Alias { own, idea } => self.known.alias(own.bits(), idea.bits()),
                IdeaFact::Forgotten { id } => {
                    if !self.known.contains(*id) {
                        continue;
                    }
                    if self.has_counters(*id) {
                        self.orphans.insert(*id);
                    } else {
                        self.forget(*id);
                    }
                }
            }
        }
    }

    /// The arms of an idea, on every marketplace.
    fn arms_of(&self, id: u128) -> impl Iterator<Item = (&Arm, &BTreeMap<i64, Counts>)> {
        let idea_id = id_text(id);
        let from = Arm {
            idea_id: idea_id.clone(),
            marketplace: String::new(),
            variant: String::new(),
        };
        self.hours
            .range(from..)
            .take_while(move |(a, _)| a.idea_id == idea_id)
    }

    /// Whether any arm of the idea still has hourly counters (which later
    /// windows, tests or learning may read).
    fn has_counters(&self, id: u128) -> bool {
        self.arms_of(id).any(|(_, hours)| !hours.is_empty())
    }

    /// Lets go of an idea the idea state forgot: its arms (none has
    /// counters left, so no window still to come reads them), its listings,
    /// its factors and aliases. Feedback naming it from now on waits for it
    /// like feedback for an idea never seen.
    fn forget(&mut self, id: u128) {
        let arms: Vec<Arm> = self.arms_of(id).map(|(a, _)| a.clone()).collect();
        for arm in arms {
            self.hours.remove(&arm);
            self.published.remove(&arm);
        }
        self.scored.remove(&id);
        self.known.forget(id);
    }

    /// Applies waiting events whose idea is known (in event-time order), and
    /// dead-letters those whose wait ran out.
    fn release_pending(&mut self, watermark: i64, out: &mut FeedbackOutput) {
        let ready: Vec<(i64, u64)> = self
            .pending
            .iter()
            .filter(|(_, p)| self.resolve(idea_of(&p.event)).is_some())
            .map(|(k, _)| *k)
            .collect();
        let mut released: Vec<(i64, u64, Pending)> = ready
            .into_iter()
            .filter_map(|k| self.pending.remove(&k).map(|p| (p.time, k.1, p)))
            .collect();
        released.sort_by_key(|(t, seq, _)| (*t, *seq));
        for (_, _, p) in released {
            self.apply_event(p, out);
        }
        let expired: Vec<(i64, u64)> = self
            .pending
            .range(..(watermark, 0))
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            let Some(p) = self.pending.remove(&k) else {
                continue;
            };
            let id = self.dead_letters;
            self.dead_letters += 1;
            out.changes.push(Change::upsert(ViewRow::DeadLetter(
                id,
                DeadLetter {
                    reason: RejectReason::UnknownIdea,
                    message: format!(
                        "{} for idea {} waited {}s (feedback.unknown_idea_wait_secs) and the idea never appeared; check the ideaId, or raise the wait if ideas arrive later than their listings",
                        p.event.payload.event_type().as_str(),
                        idea_of(&p.event),
                        self.params.unknown_idea_wait_secs
                    ),
                    position: Position {
                        file: "feedback join".into(),
                        line: 0,
                        offset: 0,
                    },
                    raw: serde_json::to_string(&p.event).unwrap_or_default(),
                },
            )));
        }
    }

    /// The idea an event's ideaId names: itself, or the idea its text merged into.
    fn resolve(&self, idea_id: &str) -> Option<String> {
        self.known.resolve(idea_id)
    }

    /// When an idea (named as [`FeedbackState::resolve`] names it) was first seen.
    fn first_seen(&self, idea_id: &str) -> Option<i64> {
        self.known.first_seen(idea_id)
    }

    fn apply_event(&mut self, p: Pending, out: &mut FeedbackOutput) {
        let Some(idea_id) = self.resolve(idea_of(&p.event)) else {
            return;
        };
        match p.event.payload {
            Payload::Listing(l) => {
                let arm = Arm {
                    idea_id,
                    marketplace: l.marketplace,
                    variant: l.variant,
                };
                self.hours.entry(arm.clone()).or_default();
                if self.published.insert(arm.clone()) {
                    if let Some(first_seen) = self.first_seen(&arm.idea_id) {
                        let at = l.published_at.timestamp();
                        let seconds = (at - first_seen).max(0) as f64;
                        out.changes
                            .push(Change::upsert(ViewRow::Publish(Box::new(PublishRow {
                                first_seen: utc(first_seen),
                                idea_id: arm.idea_id.clone(),
                                marketplace: arm.marketplace.clone(),
                                variant: arm.variant.clone(),
                                listing_id: l.listing_id.clone(),
                                published_at: l.published_at,
                                seconds,
                            }))));
                        self.check_sla(at, seconds, out);
                    }
                }
            }
            Payload::Feedback(f) => {
                let arm = Arm {
                    idea_id,
                    marketplace: f.marketplace,
                    variant: f.variant,
                };
                let counts = Counts {
                    impressions: f.impressions,
                    clicks: f.clicks,
                    favorites: f.favorites,
                    add_to_cart: f.add_to_cart,
                    sales: f.sales,
                };
                let hour = p.time.div_euclid(HOUR) * HOUR;
                let day = p.time.div_euclid(DAY) * DAY;
                self.hours
                    .entry(arm.clone())
                    .or_default()
                    .entry(hour)
                    .or_default()
                    .add(&counts);
                self.windows_due
                    .insert((hour + HOUR, WindowKind::Hour, hour, arm.clone()));
                // The day's window, the weeks that hold the day, their A/B
                // tests and the day's learning come due together, and none
                // ends before the day's window: if it is still waiting, so
                // is the rest (nothing of it can have been emitted), and
                // inserting them again would only cost sixteen searches of
                // string-keyed sets per event.
                if self
                    .windows_due
                    .insert((day + DAY, WindowKind::Day, day, arm.clone()))
                {
                    for k in 1..=7 {
                        let end = day + k * DAY;
                        self.windows_due
                            .insert((end, WindowKind::Week, end - WEEK, arm.clone()));
                        self.ideas_due
                            .insert((end, arm.idea_id.clone(), arm.marketplace.clone()));
                    }
                    self.days_due.insert(day + DAY);
                }
            }
            _ => {}
        }
    }

    /// Seed 004 §7: the average time to publish over the window's listings,
    /// against the threshold, at most one alert per cooldown.
    fn check_sla(&mut self, at: i64, seconds: f64, out: &mut FeedbackOutput) {
        self.recent_listings.push_back((at, seconds));
        let from = at - self.params.sla_window_secs;
        self.recent_listings.retain(|(t, _)| *t > from);
        let n = self.recent_listings.len();
        let average_hours =
            self.recent_listings.iter().map(|(_, s)| s).sum::<f64>() / n as f64 / 3600.0;
        let cooled = self
            .last_alert
            .is_none_or(|t| at >= t + self.params.sla_alert_cooldown_minutes * 60);
        if average_hours > self.params.sla_threshold_hours && cooled {
            self.last_alert = Some(at);
            out.changes
                .push(Change::upsert(ViewRow::SlaAlert(SlaAlertRow {
                    at: utc(at),
                    average_hours,
                    threshold_hours: self.params.sla_threshold_hours,
                    listings: n as u64,
                    window_secs: self.params.sla_window_secs,
                })));
        }
    }

    fn sum(&self, arm: &Arm, start: i64, end: i64) -> Counts {
        let mut c = Counts::default();
        if let Some(hours) = self.hours.get(arm) {
            for (_, h) in hours.range(start..end) {
                c.add(h);
            }
        }
        c
    }

    fn emit_windows(&mut self, watermark: i64, out: &mut FeedbackOutput) {
        while let Some(first) = self.windows_due.first() {
            if first.0 > watermark {
                break;
            }
            let (end, kind, start, arm) = self.windows_due.pop_first().expect("not empty");
            let counts = self.sum(&arm, start, end);
            out.changes
                .push(Change::upsert(ViewRow::Window(Box::new(WindowRow::new(
                    kind,
                    (utc(start), utc(end)),
                    arm,
                    counts,
                )))));
        }
    }

    /// The arms of one idea on one marketplace, by variant name.
    fn arms(&self, idea_id: &str, marketplace: &str) -> Vec<Arm> {
        let from = Arm {
            idea_id: idea_id.to_owned(),
            marketplace: marketplace.to_owned(),
            variant: String::new(),
        };
        self.hours
            .range(from..)
            .map(|(a, _)| a)
            .take_while(|a| a.idea_id == idea_id && a.marketplace == marketplace)
            .cloned()
            .collect()
    }

    fn emit_tests_and_allocations(&mut self, watermark: i64, out: &mut FeedbackOutput) {
        while let Some(first) = self.ideas_due.first() {
            if first.0 > watermark {
                break;
            }
            let (end, idea, marketplace) = self.ideas_due.pop_first().expect("not empty");
            let arms = self.arms(&idea, &marketplace);
            let trials: Vec<Trials> = arms
                .iter()
                .map(|a| self.sum(a, end - WEEK, end).trials())
                .collect();
            if arms.len() >= 2 {
                let control = &trials[0];
                for (arm, treatment) in arms.iter().zip(&trials).skip(1) {
                    let z = two_proportion_z(*control, *treatment);
                    let sufficient = control.impressions >= self.params.ab_min_impressions
                        && treatment.impressions >= self.params.ab_min_impressions;
                    let winner = (sufficient && z.p_value < self.params.ab_alpha).then(|| {
                        if z.z > 0.0 {
                            arm.variant.clone()
                        } else {
                            arms[0].variant.clone()
                        }
                    });
                    out.changes
                        .push(Change::upsert(ViewRow::AbResult(Box::new(AbResultRow {
                            idea_id: idea.clone(),
                            marketplace: marketplace.clone(),
                            window_start: utc(end - WEEK),
                            window_end: utc(end),
                            control: arms[0].variant.clone(),
                            treatment: arm.variant.clone(),
                            control_impressions: control.impressions,
                            control_clicks: control.clicks,
                            treatment_impressions: treatment.impressions,
                            treatment_clicks: treatment.clicks,
                            control_ctr: control.ctr(),
                            treatment_ctr: treatment.ctr(),
                            lift: z.lift,
                            z: z.z,
                            p_value: z.p_value,
                            sample_sufficient: sufficient,
                            winner,
                        }))));
                }
            }
            // Tomorrow's budget, from the posterior of the week ending today.
            let mut rng = thompson::seeded_rng(end, &idea, &marketplace);
            let shares = thompson::win_shares(&trials, self.params.thompson_draws, &mut rng);
            for (arm, share) in arms.iter().zip(shares) {
                out.changes
                    .push(Change::upsert(ViewRow::Allocation(AllocationRow {
                        day_start: utc(end),
                        idea_id: idea.clone(),
                        marketplace: marketplace.clone(),
                        variant: arm.variant.clone(),
                        share,
                        budget: self.params.daily_budget * share,
                        draws: self.params.thompson_draws,
                    })));
            }
        }
    }

    fn learn_weights(
        &mut self,
        watermark: i64,
        out: &mut FeedbackOutput,
        latest: Option<&dyn LatestFactors>,
    ) {
        while let Some(&end) = self.days_due.first() {
            if end > watermark {
                break;
            }
            self.days_due.pop_first();
            if !self.params.learning.enabled {
                continue;
            }
            // One observation per idea: its day's counts over all arms.
            let mut per_idea: BTreeMap<&str, Counts> = BTreeMap::new();
            for arm in self.hours.keys() {
                let c = self.sum(arm, end - DAY, end);
                if c.impressions > 0 {
                    per_idea.entry(arm.idea_id.as_str()).or_default().add(&c);
                }
            }
            let obs: Vec<Observation> = per_idea
                .iter()
                .filter_map(|(id, c)| {
                    let bits = id_bits(id).filter(|b| self.known.contains(*b))?;
                    let factors = match latest {
                        Some(latest) => latest.factors(id)?,
                        None => *self.scored.get(&bits)?,
                    };
                    Some(Observation {
                        factors,
                        impressions: c.impressions,
                        clicks: c.clicks,
                    })
                })
                .collect();
            let Some(target) = weight_learning::estimate(&obs, &self.prior, &self.params.learning)
            else {
                continue;
            };
            let next =
                weight_learning::step_toward(&self.weights, &target, self.params.learning.max_step);
            if next == self.weights {
                continue;
            }
            self.weights = next;
            out.new_weights = Some(next);
            out.changes
                .push(Change::upsert(ViewRow::Weights(WeightsRow {
                    effective_from: utc(watermark + self.weights_delay_secs),
                    learned_from: utc(end - DAY),
                    weights: next,
                    origin: "learned".into(),
                    ideas: obs.len() as u64,
                    impressions: obs.iter().map(|o| o.impressions).sum(),
                })));
        }
    }

    /// Hourly counters older than any window still to come are dropped;
    /// forgotten ideas whose counters are all gone go with them.
    fn prune(&mut self, watermark: i64) {
        let keep_from = watermark - WEEK - DAY;
        for hours in self.hours.values_mut() {
            while let Some(e) = hours.first_entry() {
                if *e.key() >= keep_from {
                    break;
                }
                e.remove();
            }
        }
        let done: Vec<u128> = self
            .orphans
            .iter()
            .copied()
            .filter(|id| !self.has_counters(*id))
            .collect();
        for id in done {
            self.orphans.remove(&id);
            self.forget(id);
        }
    }
}

/// What [`FeedbackState::size`] reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeedbackStateSize {
    pub known: KnownIdeasSize,
    /// Idea × marketplace × variant with a listing or counters.
    pub arms: usize,
    pub published: usize,
    pub orphans: usize,
}

fn idea_of(e: &Event) -> &str {
    match &e.payload {
        Payload::Listing(l) => &l.idea_id,
        Payload::Feedback(f) => &f.idea_id,
        _ => "",
    }
}

#[cfg(test)]
mod tests;
