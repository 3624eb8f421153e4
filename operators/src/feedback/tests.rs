use super::*;
use crate::event::{EnvelopeMeta, FeedbackReceived, ListingPublished};
use crate::views::IdeaRow;

fn at(secs: i64) -> DateTime<Utc> {
    utc(1_727_740_800 + secs) // 2024-10-01T00:00:00Z, a day boundary
}

/// The idea id a test's short name stands for: feedback only knows ideas by
/// their real ids (UUIDs), as the idea state names them.
fn uid(name: &str) -> String {
    crate::idea::idea_id(name).to_string()
}

fn t0() -> i64 {
    1_727_740_800
}

fn feedback(secs: i64, idea: &str, variant: &str, impressions: u64, clicks: u64) -> Event {
    Event {
        time: at(secs),
        payload: Payload::Feedback(FeedbackReceived {
            idea_id: uid(idea),
            marketplace: "etsy".into(),
            variant: variant.into(),
            impressions,
            clicks,
            favorites: clicks / 2,
            add_to_cart: clicks / 4,
            sales: clicks / 8,
        }),
        meta: EnvelopeMeta::default(),
    }
}

fn listing(secs: i64, idea: &str, variant: &str) -> Event {
    Event {
        time: at(secs),
        payload: Payload::Listing(ListingPublished {
            idea_id: uid(idea),
            marketplace: "etsy".into(),
            listing_id: format!("l-{idea}-{variant}"),
            variant: variant.into(),
            published_at: at(secs),
        }),
        meta: EnvelopeMeta::default(),
    }
}

/// The idea state's changelog entries that make `id` known, first seen at `secs`.
fn idea_seen(name: &str, secs: i64, factors: Factors) -> Vec<Change> {
    let id = crate::idea::IdeaId::of_content_hash(name);
    let row = IdeaRow::bare(id, None, crate::views::IdeaStatus::Active, at(secs));
    vec![
        Change::upsert(ViewRow::Idea(Box::new(row))),
        Change::upsert(ViewRow::Score(crate::views::ScoreRow {
            idea_id: id,
            category: None,
            factors,
            score: 0.5,
            scored_at: at(secs),
        })),
    ]
}

fn factors(v: f64) -> Factors {
    Factors {
        freshness: v,
        engagement: v,
        novelty: v,
        community_fit: v,
        seasonality: v,
    }
}

fn rows<T>(changes: &[Change], pick: impl Fn(&ViewRow) -> Option<&T>) -> Vec<&T> {
    changes
        .iter()
        .filter_map(|c| c.row.as_ref().and_then(&pick))
        .collect()
}

fn windows(changes: &[Change]) -> Vec<&WindowRow> {
    rows(changes, |r| match r {
        ViewRow::Window(w) => Some(&**w),
        _ => None,
    })
}

#[test]
fn windows_match_a_hand_count_and_wait_for_the_watermark() {
    let mut s = FeedbackState::new(FeedbackParams::default(), Weights::default());
    let events = vec![
        listing(0, "i1", "A"),
        feedback(600, "i1", "A", 100, 5),
        feedback(3000, "i1", "A", 50, 1),
        feedback(3700, "i1", "A", 10, 2),
    ];
    let out = s.apply_epoch(t0() + 3600, events, &idea_seen("i1", 0, factors(0.5)));
    let w = windows(&out.changes);
    // Only the first hour has closed.
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].kind, WindowKind::Hour);
    assert_eq!(w[0].counts.impressions, 150);
    assert_eq!(w[0].counts.clicks, 6);
    assert!((w[0].ctr - 0.04).abs() < 1e-12);
    assert_eq!(w[0].window_end, at(3600));
    let out = s.apply_epoch(t0() + DAY, vec![], &[]);
    let w = windows(&out.changes);
    let day = w
        .iter()
        .find(|w| w.kind == WindowKind::Day)
        .expect("the day closed");
    assert_eq!((day.counts.impressions, day.counts.clicks), (160, 8));
    assert_eq!((day.window_start, day.window_end), (at(0), at(DAY)));
    let week = w
        .iter()
        .find(|w| w.kind == WindowKind::Week)
        .expect("a 7-day window ends");
    assert_eq!(
        (week.window_start, week.window_end),
        (at(DAY - WEEK), at(DAY))
    );
    assert_eq!(week.counts.impressions, 160);
    // favorites, add-to-cart and sales: clicks/2, /4, /8 per report (5, 1, 2 clicks).
    assert_eq!(
        (
            day.counts.favorites,
            day.counts.add_to_cart,
            day.counts.sales
        ),
        (3, 1, 0)
    );
    assert!((day.add_to_cart_rate - 1.0 / 8.0).abs() < 1e-12);
    assert_eq!(day.conversion, 0.0);
}

#[test]
fn unknown_ideas_wait_then_revise_or_dead_letter() {
    let params = FeedbackParams {
        unknown_idea_wait_secs: 2 * HOUR,
        ..Default::default()
    };
    let mut s = FeedbackState::new(params, Weights::default());
    let out = s.apply_epoch(
        t0() + HOUR,
        vec![
            feedback(60, "late-idea", "A", 40, 4),
            feedback(120, "ghost", "A", 9, 1),
        ],
        &[],
    );
    assert!(windows(&out.changes).is_empty(), "nothing known yet");
    assert_eq!(s.pending(), 2);
    // The idea appears in the next epoch: its feedback is counted at its own
    // time, and the first hour (already past) is emitted with it.
    let out = s.apply_epoch(
        t0() + 2 * HOUR,
        vec![],
        &idea_seen("late-idea", 3000, factors(0.3)),
    );
    let w = windows(&out.changes);
    assert_eq!(w.len(), 1);
    assert_eq!((w[0].window_start, w[0].counts.impressions), (at(0), 40));
    // The ghost's wait (2 h after its event time) runs out.
    let out = s.apply_epoch(t0() + 3 * HOUR, vec![], &[]);
    let dead = rows(&out.changes, |r| match r {
        ViewRow::DeadLetter(_, d) => Some(d),
        _ => None,
    });
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, RejectReason::UnknownIdea);
    assert!(dead[0].raw.contains(&uid("ghost")), "{}", dead[0].raw);
    assert_eq!(s.pending(), 0);
}

#[test]
fn a_twice_as_good_variant_wins_once_the_sample_suffices() {
    let params = FeedbackParams {
        ab_min_impressions: 3000,
        ..Default::default()
    };
    let mut s = FeedbackState::new(params, Weights::default());
    let known = idea_seen("i", 0, factors(0.5));
    let mut results: Vec<AbResultRow> = Vec::new();
    let mut allocations: Vec<AllocationRow> = Vec::new();
    for day in 0..6 {
        // 1,000 impressions per variant per day; B clicks twice as often.
        let events = vec![
            feedback(day * DAY + 100, "i", "A", 1000, 20),
            feedback(day * DAY + 200, "i", "B", 1000, 40),
        ];
        let out = s.apply_epoch(
            t0() + (day + 1) * DAY,
            events,
            if day == 0 { &known } else { &[] },
        );
        for c in out.changes {
            match c.row {
                Some(ViewRow::AbResult(r)) => results.push(*r),
                Some(ViewRow::Allocation(a)) => allocations.push(a),
                _ => {}
            }
        }
    }
    results.sort_by_key(|r| r.window_end);
    let first_daily: Vec<&AbResultRow> = results
        .iter()
        .filter(|r| r.window_end <= at(6 * DAY))
        .collect();
    for r in &first_daily {
        let expect = r.control_impressions >= 3000 && r.treatment_impressions >= 3000;
        assert_eq!(r.sample_sufficient, expect, "{r:?}");
        if !r.sample_sufficient {
            assert_eq!(
                r.winner, None,
                "no winner before the sample suffices: {r:?}"
            );
        }
    }
    let day3 = first_daily
        .iter()
        .find(|r| r.window_end == at(3 * DAY))
        .unwrap();
    assert!(
        day3.sample_sufficient && day3.winner.as_deref() == Some("B"),
        "{day3:?}"
    );
    let day2 = first_daily
        .iter()
        .find(|r| r.window_end == at(2 * DAY))
        .unwrap();
    assert_eq!(day2.winner, None);
    // Thompson sampling puts almost all of the later budget on B.
    let last = allocations.iter().filter(|a| a.day_start == at(6 * DAY));
    let b: f64 = last
        .clone()
        .filter(|a| a.variant == "B")
        .map(|a| a.share)
        .sum();
    assert!(b > 0.95, "{allocations:?}");
    let total: f64 = last.map(|a| a.budget).sum();
    assert!((total - 100.0).abs() < 1e-9);
}

/// Twenty ideas seen (with their score rows) whose day of feedback has a
/// click-through rate that follows freshness only: the changelog, the
/// feedback events, and each idea's factors.
fn ctr_follows_freshness() -> (Vec<Change>, Vec<Event>, Vec<(String, Factors)>) {
    let mut known = Vec::new();
    let mut events = Vec::new();
    let mut factors = Vec::new();
    for i in 0..20 {
        let id = format!("idea{i}");
        let f = Factors {
            freshness: i as f64 / 20.0,
            engagement: 0.5,
            novelty: 0.5,
            community_fit: 0.5,
            seasonality: 0.5,
        };
        known.extend(idea_seen(&id, 0, f));
        let clicks = (2000.0 * 0.05 * f.freshness) as u64;
        events.push(feedback(100, &id, "A", 2000, clicks));
        factors.push((uid(&id), f));
    }
    (known, events, factors)
}

#[test]
fn learned_weights_leave_a_history_and_reach_the_caller() {
    let mut s = FeedbackState::new(FeedbackParams::default(), Weights::default());
    let (known, events, _) = ctr_follows_freshness();
    let first = s.apply_epoch(t0() + HOUR, events, &known);
    let configured = rows(&first.changes, |r| match r {
        ViewRow::Weights(w) => Some(w),
        _ => None,
    });
    assert_eq!(configured.len(), 1);
    assert_eq!(configured[0].origin, "configured");
    let out = s.apply_epoch(t0() + DAY, vec![], &[]);
    let w = out
        .new_weights
        .expect("a day of feedback teaches something");
    let prior = Weights::default().normalized();
    assert!(w.freshness > prior.freshness && w.freshness - prior.freshness <= 0.05 + 1e-9);
    let history = rows(&out.changes, |r| match r {
        ViewRow::Weights(w) => Some(w),
        _ => None,
    });
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].effective_from, at(DAY));
    assert_eq!(history[0].learned_from, at(0));
    assert_eq!(history[0].ideas, 20);
}

#[test]
fn arrival_order_within_an_epoch_does_not_matter() {
    let events = vec![
        listing(0, "i", "A"),
        listing(0, "i", "B"),
        feedback(100, "i", "A", 500, 10),
        feedback(200, "i", "B", 500, 30),
        feedback(4000, "i", "A", 300, 9),
    ];
    let run = |events: Vec<Event>| {
        let mut s = FeedbackState::new(FeedbackParams::default(), Weights::default());
        let mut out = s
            .apply_epoch(t0() + 2 * HOUR, events, &idea_seen("i", 0, factors(0.4)))
            .changes;
        out.extend(s.apply_epoch(t0() + 8 * DAY, vec![], &[]).changes);
        out
    };
    let mut reversed = events.clone();
    reversed.reverse();
    assert_eq!(run(events), run(reversed));
}

#[test]
fn time_to_publish_alerts_once_per_cooldown() {
    let params = FeedbackParams {
        sla_threshold_hours: 10.0,
        sla_window_secs: DAY,
        sla_alert_cooldown_minutes: 120,
        ..Default::default()
    };
    let mut s = FeedbackState::new(params, Weights::default());
    let mut known = Vec::new();
    for i in 0..4 {
        known.extend(idea_seen(&format!("i{i}"), 0, factors(0.5)));
    }
    // Listings 2 h, 20 h, 21 h and 30 h after the ideas' first signal:
    // averages 2, 11, 14.3 (in the cooldown) and 18.3 hours.
    let events = vec![
        listing(2 * HOUR, "i0", "A"),
        listing(20 * HOUR, "i1", "A"),
        listing(21 * HOUR, "i2", "A"),
        listing(30 * HOUR, "i3", "A"),
    ];
    let out = s.apply_epoch(t0() + 31 * HOUR, events, &known);
    let published = rows(&out.changes, |r| match r {
        ViewRow::Publish(p) => Some(p),
        _ => None,
    });
    assert_eq!(published.len(), 4);
    assert_eq!(published[1].seconds, 20.0 * 3600.0);
    let alerts = rows(&out.changes, |r| match r {
        ViewRow::SlaAlert(a) => Some(a),
        _ => None,
    });
    // The first alert at 20 h; 21 h is within the 2 h cooldown; at 30 h the
    // 2 h listing has left the day's window: (20 + 21 + 30) / 3 = 23.7 h.
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_eq!(alerts[0].at, at(20 * HOUR));
    assert!((alerts[0].average_hours - 11.0).abs() < 1e-9);
    assert_eq!(alerts[1].at, at(30 * HOUR));
    assert!((alerts[1].average_hours - 71.0 / 3.0).abs() < 1e-9);
}

/// The dataflow does not send a `Scored` fact per score row: feedback reads
/// ideas' latest factors through [`LatestFactors`]. Learning must come out
/// the same as from the facts, and without either it has nothing to learn from.
#[test]
fn learning_from_latest_factors_equals_learning_from_scored_facts() {
    struct Table(HashMap<String, Factors>);
    impl LatestFactors for Table {
        fn factors(&self, idea_id: &str) -> Option<Factors> {
            self.0.get(idea_id).copied()
        }
    }
    let (known, events, factors) = ctr_follows_freshness();
    let table = Table(factors.into_iter().collect());
    let without_scores: Vec<IdeaFact> = known
        .iter()
        .filter_map(IdeaFact::of)
        .filter(|f| !matches!(f, IdeaFact::Scored { .. }))
        .collect();
    let fresh = || FeedbackState::new(FeedbackParams::default(), Weights::default());

    let mut from_facts = fresh();
    let a = (
        from_facts.apply_epoch(t0() + HOUR, events.clone(), &known),
        from_facts.apply_epoch(t0() + DAY, vec![], &[]),
    );
    let mut from_latest = fresh();
    let b = (
        from_latest.apply_epoch_facts(t0() + HOUR, events.clone(), &without_scores, Some(&table)),
        from_latest.apply_epoch_facts(t0() + DAY, vec![], &[], Some(&table)),
    );
    assert!(a.1.new_weights.is_some());
    assert_eq!((&a.0.changes, &a.1.changes), (&b.0.changes, &b.1.changes));
    assert_eq!(a.1.new_weights, b.1.new_weights);

    let mut blind = fresh();
    blind.apply_epoch_facts(t0() + HOUR, events, &without_scores, None);
    let c = blind.apply_epoch_facts(t0() + DAY, vec![], &[], None);
    assert!(c.new_weights.is_none(), "no factors, nothing learned");
}

fn dead_letters(changes: &[Change]) -> Vec<&DeadLetter> {
    rows(changes, |r| match r {
        ViewRow::DeadLetter(_, d) => Some(d),
        _ => None,
    })
}

fn forgotten(name: &str) -> IdeaFact {
    IdeaFact::Forgotten {
        id: id_bits(&uid(name)).expect("an idea id"),
    }
}

/// When the idea state forgets an archived idea, feedback lets go of it too
/// (its arms, listings, aliases), unless its listings' counters are still
/// in use: then it stays, keeps taking feedback, and goes once they age out.
#[test]
fn forgotten_ideas_are_let_go_unless_their_listings_still_receive_feedback() {
    let mut s = FeedbackState::new(FeedbackParams::default(), Weights::default());
    let mut facts: Vec<IdeaFact> = ["quiet", "busy", "unlisted"]
        .into_iter()
        .flat_map(|name| idea_seen(name, 0, factors(0.5)))
        .filter_map(|c| IdeaFact::of(&c))
        .collect();
    facts.push(IdeaFact::Alias {
        own: crate::idea::IdeaId::of_content_hash("quiet, merged"),
        idea: crate::idea::IdeaId::of_content_hash("quiet"),
    });
    let events = vec![
        listing(60, "quiet", "A"),
        listing(60, "quiet", "B"),
        listing(60, "busy", "A"),
        feedback(120, "busy", "A", 100, 3),
    ];
    let out = s.apply_epoch_facts(t0() + HOUR, events, &facts, None);
    assert!(dead_letters(&out.changes).is_empty());
    assert_eq!(
        s.size(),
        FeedbackStateSize {
            known: KnownIdeasSize {
                ideas: 3,
                aliases: 1
            },
            arms: 3,
            published: 3,
            orphans: 0,
        }
    );

    // Forgotten a day later: "busy" still has counters a week window will
    // read, the others go at once.
    let forgetting = [forgotten("quiet"), forgotten("busy"), forgotten("unlisted")];
    let events = vec![
        feedback(DAY + 60, "busy", "A", 50, 1),
        listing(DAY + 60, "unlisted", "A"),
    ];
    let out = s.apply_epoch_facts(t0() + DAY + HOUR, events, &forgetting, None);
    assert!(
        !out.changes
            .iter()
            .any(|c| matches!(c.row, Some(ViewRow::Publish(_)))),
        "a listing in the epoch that forgot its idea waits for it"
    );
    assert_eq!(s.pending(), 1);
    assert_eq!(
        s.size(),
        FeedbackStateSize {
            known: KnownIdeasSize {
                ideas: 1,
                aliases: 0
            },
            arms: 1,
            published: 1,
            orphans: 1,
        }
    );
    // Feedback naming a let-go idea (or its merged text) waits like feedback
    // for an idea never seen, and is dead-lettered when the wait runs out.
    let mut quiet_copy = feedback(DAY + 2 * HOUR, "quiet", "A", 10, 1);
    if let Payload::Feedback(f) = &mut quiet_copy.payload {
        f.idea_id = uid("quiet, merged");
    }
    let events = vec![feedback(DAY + 2 * HOUR, "quiet", "A", 10, 1), quiet_copy];
    let out = s.apply_epoch_facts(t0() + DAY + 3 * HOUR, events, &[], None);
    assert!(dead_letters(&out.changes).is_empty());
    let wait = FeedbackParams::default().unknown_idea_wait_secs;
    let out = s.apply_epoch_facts(t0() + DAY + 3 * HOUR + wait, vec![], &[], None);
    let dead = dead_letters(&out.changes);
    assert_eq!(dead.len(), 3);
    assert!(dead.iter().all(|d| d.reason == RejectReason::UnknownIdea));

    // The busy idea's week windows count both days' feedback.
    let out = s.apply_epoch_facts(t0() + 8 * DAY, vec![], &[], None);
    let week = windows(&out.changes)
        .into_iter()
        .filter(|w| w.kind == WindowKind::Week && w.window_end == at(7 * DAY))
        .map(|w| w.counts.impressions)
        .collect::<Vec<_>>();
    assert_eq!(week, vec![150]);
    assert_eq!(s.size().orphans, 1, "its counters are still in range");

    // Once its counters age out, it goes too.
    s.apply_epoch_facts(t0() + 10 * DAY, vec![], &[], None);
    assert_eq!(s.size(), FeedbackStateSize::default());

    // Content back after the horizon starts the idea over: a listing is
    // published (and timed) again.
    let facts: Vec<IdeaFact> = idea_seen("quiet", 11 * DAY, factors(0.5))
        .iter()
        .filter_map(IdeaFact::of)
        .collect();
    let out = s.apply_epoch_facts(
        t0() + 11 * DAY + HOUR,
        vec![listing(11 * DAY + 60, "quiet", "A")],
        &facts,
        None,
    );
    let published = rows(&out.changes, |r| match r {
        ViewRow::Publish(p) => Some(&**p),
        _ => None,
    });
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].seconds, 60.0);
}

/// An idea that starts over before its counters age out is no orphan any
/// more: it stays, with its arms, after they do.
#[test]
fn an_orphan_that_starts_over_stays() {
    let mut s = FeedbackState::new(FeedbackParams::default(), Weights::default());
    let facts: Vec<IdeaFact> = idea_seen("back", 0, factors(0.5))
        .iter()
        .filter_map(IdeaFact::of)
        .collect();
    let events = vec![listing(60, "back", "A"), feedback(120, "back", "A", 10, 1)];
    s.apply_epoch_facts(t0() + HOUR, events, &facts, None);
    s.apply_epoch_facts(t0() + DAY, vec![], &[forgotten("back")], None);
    assert_eq!(s.size().orphans, 1);
    let again: Vec<IdeaFact> = idea_seen("back", 2 * DAY, factors(0.5))
        .iter()
        .filter_map(IdeaFact::of)
        .collect();
    s.apply_epoch_facts(t0() + 2 * DAY, vec![], &again, None);
    s.apply_epoch_facts(t0() + 20 * DAY, vec![], &[], None);
    let size = s.size();
    assert_eq!((size.known.ideas, size.arms, size.orphans), (1, 1, 0));
}

/// The feedback state saved in the checkpoints' form (from a clone, as a
/// checkpoint does, which must save exactly as the state would) and resumed
/// into a fresh one built from the same settings.
fn saved_and_resumed(s: &FeedbackState) -> FeedbackState {
    let save = |s: &FeedbackState| {
        crate::shared_embedding::shared_while_writing(|| postcard::to_allocvec(s))
            .expect("the state saves")
    };
    let bytes = save(&s.clone());
    assert!(bytes == save(s), "the clone saves otherwise than the state");
    let saved: FeedbackState =
        crate::shared_embedding::shared_while_reading(|| postcard::from_bytes(&bytes))
            .expect("the state reads back");
    let fresh = FeedbackState::new(s.params.clone(), s.prior);
    FeedbackState::resume(saved, &fresh).expect("same settings")
}

#[test]
fn a_resumed_feedback_state_goes_on_as_if_it_never_stopped() {
    let (known, learning, _) = ctr_follows_freshness();
    let params = FeedbackParams {
        unknown_idea_wait_secs: 2 * HOUR,
        ..Default::default()
    };
    // Listings, feedback, an idea known only an epoch later (its feedback
    // waits across a restart), one never known, a day of learning.
    let epochs: Vec<(i64, Vec<Event>, Vec<Change>)> = vec![
        (
            HOUR,
            [
                vec![
                    listing(0, "i", "A"),
                    listing(0, "i", "B"),
                    feedback(100, "i", "A", 500, 10),
                    feedback(200, "late", "A", 40, 4),
                    feedback(300, "ghost", "A", 9, 1),
                ],
                learning,
            ]
            .concat(),
            [idea_seen("i", 0, factors(0.4)), known].concat(),
        ),
        (
            2 * HOUR,
            vec![feedback(4000, "i", "B", 300, 30)],
            idea_seen("late", 5000, factors(0.3)),
        ),
        (3 * HOUR, vec![feedback(8000, "i", "A", 300, 9)], vec![]),
        (DAY, vec![], vec![]),
        (2 * DAY, vec![feedback(DAY + 10, "i", "B", 700, 70)], vec![]),
        (9 * DAY, vec![], vec![]),
    ];
    let run = |restart: bool| {
        let mut s = FeedbackState::new(params.clone(), Weights::default());
        let mut outputs = Vec::new();
        for (end, events, facts) in &epochs {
            if restart {
                s = saved_and_resumed(&s);
            }
            let out = s.apply_epoch(t0() + end, events.clone(), facts);
            outputs.push((out.changes, out.new_weights));
        }
        (outputs, s.pending())
    };
    let (expected, pending) = run(false);
    assert!(expected.iter().any(|(_, w)| w.is_some()), "weights learned");
    assert!(
        dead_letters(
            &expected
                .iter()
                .flat_map(|(c, _)| c.clone())
                .collect::<Vec<_>>()
        )
        .len()
            == 1
    );
    let (got, got_pending) = run(true);
    assert!(got == expected, "a restart changed the feedback's output");
    assert_eq!(got_pending, pending);
}

#[test]
fn a_feedback_state_saved_under_other_settings_is_refused() {
    let s = FeedbackState::new(FeedbackParams::default(), Weights::default());
    let bytes = postcard::to_allocvec(&s).unwrap();
    let saved: FeedbackState = postcard::from_bytes(&bytes).unwrap();
    let other = FeedbackState::new(
        FeedbackParams {
            unknown_idea_wait_secs: 1,
            ..Default::default()
        },
        Weights::default(),
    );
    assert_eq!(
        FeedbackState::resume(saved, &other).err(),
        Some(crate::idea_state::ResumeError::Settings("feedback"))
    );
}
