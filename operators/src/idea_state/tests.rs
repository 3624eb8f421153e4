use chrono::{TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use std::collections::BTreeSet;

use super::*;
use crate::classify::Anchor;
use crate::dedupe::{LshIndex, LshParams};
use crate::embed::l2_normalize;
use crate::score;
use crate::views::{DedupeKind, ScoreRow, ViewState};
use crate::{Signal, Source, EMBEDDING_DIM};

fn unit(seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut v: Vec<f32> = (0..EMBEDDING_DIM)
        .map(|_| rng.random::<f32>() - 0.5)
        .collect();
    l2_normalize(&mut v);
    v
}

/// `v` moved a little: cosine about 0.97.
fn nudged(v: &[f32], seed: u64) -> Vec<f32> {
    let n = unit(seed);
    let mut w: Vec<f32> = v.iter().zip(&n).map(|(a, b)| a + 0.25 * b).collect();
    l2_normalize(&mut w);
    w
}

fn signal(id: &str, minute: i64, content: &str, embedding: Vec<f32>) -> Signal {
    Signal {
        id: id.into(),
        source: Source::Reddit,
        captured_at: Utc.with_ymd_and_hms(2024, 10, 1, 0, 0, 0).unwrap()
            + chrono::Duration::minutes(minute),
        content: content.into(),
        published_at: None,
        community: Some("r/cats".into()),
        topics: vec!["cats".into()],
        locale: None,
        engagement: crate::Engagement {
            views: 100 + minute as u64,
            ..Default::default()
        },
        url: None,
        metadata: Default::default(),
        embedding: Some(embedding),
    }
}

/// The start of the test streams' first day (midnight: a tick boundary).
fn day_start() -> i64 {
    Utc.with_ymd_and_hms(2024, 10, 1, 0, 0, 0)
        .unwrap()
        .timestamp()
}

fn fresh_state(scoring: &ScoringParams) -> IdeaState {
    IdeaState::new(
        DedupeParams::default(),
        WindowParams::default(),
        scoring.clone(),
        Calendar::default(),
    )
}

/// `n` unrelated signals a minute apart, texts t0, t1, ..., prepared.
fn distinct_ideas(
    n: u64,
    lsh: &LshIndex,
    labels: &Labels,
    scoring: &ScoringParams,
) -> Vec<PreparedSignal> {
    (0..n)
        .map(|i| {
            prepare(
                signal(&format!("s{i}"), i as i64, &format!("t{i}"), unit(i)),
                lsh,
                labels,
                scoring,
            )
        })
        .collect()
}

fn labels() -> Labels {
    Labels {
        categories: crate::classify::Categories::Nearest(vec![
            Anchor {
                name: "animals".into(),
                embedding: unit(1000),
            },
            Anchor {
                name: "food".into(),
                embedding: unit(1001),
            },
        ]),
        classifier: None,
    }
}

fn run(signals: &[Signal], epoch_secs: i64) -> (ViewState, DedupeStats) {
    let (epochs, stats) = changelog(signals, epoch_secs, 1);
    let mut views = ViewState::default();
    for changes in epochs {
        views.apply(changes);
    }
    (views, stats)
}

/// Every epoch's changelog, with re-scoring split over `scoring_threads`
/// threads for any number of ideas.
fn changelog(
    signals: &[Signal],
    epoch_secs: i64,
    scoring_threads: usize,
) -> (Vec<Vec<Change>>, DedupeStats) {
    let (changes, state) = replay_epochs(
        signals,
        epoch_secs,
        scoring_threads,
        DedupeParams::default(),
    );
    (changes, state.stats())
}

/// [`changelog`] with these dedupe settings, and the state it leaves.
fn replay_epochs(
    signals: &[Signal],
    epoch_secs: i64,
    scoring_threads: usize,
    dedupe: DedupeParams,
) -> (Vec<Vec<Change>>, IdeaState) {
    let mut state = IdeaState::new(
        dedupe,
        WindowParams::default(),
        ScoringParams::default(),
        Calendar::default(),
    );
    state.set_scoring_threads(scoring_threads);
    state.parallel_scoring_min = 1;
    let changes = prepared_epochs(signals, epoch_secs)
        .into_iter()
        .map(|(t, batch)| state.apply_epoch(t + epoch_secs, batch))
        .collect();
    (changes, state)
}

/// `signals` prepared, by the start of their `epoch_secs` epoch.
fn prepared_epochs(signals: &[Signal], epoch_secs: i64) -> BTreeMap<i64, Vec<PreparedSignal>> {
    let lsh = LshIndex::new(LshParams::default());
    let (labels, scoring) = (labels(), ScoringParams::default());
    let mut epochs: BTreeMap<i64, Vec<PreparedSignal>> = BTreeMap::new();
    for s in signals {
        let t = s.captured_at.timestamp().div_euclid(epoch_secs) * epoch_secs;
        epochs
            .entry(t)
            .or_default()
            .push(prepare(s.clone(), &lsh, &labels, &scoring));
    }
    epochs
}

/// `state` saved in the checkpoints' form (from its snapshot, as a
/// checkpoint does, which must save exactly as the state would) and resumed
/// into a fresh state built from the same settings (as a restart does).
fn saved_and_resumed(state: &IdeaState) -> IdeaState {
    assert!(state.savable());
    let save = |s: &IdeaState| {
        crate::shared_embedding::shared_while_writing(|| postcard::to_allocvec(s))
            .expect("the state saves")
    };
    let bytes = save(&state.snapshot().expect("savable"));
    assert!(
        bytes == save(state),
        "the snapshot saves otherwise than the state"
    );
    let saved: IdeaState =
        crate::shared_embedding::shared_while_reading(|| postcard::from_bytes(&bytes))
            .expect("the state reads back");
    let mut fresh = IdeaState::new(
        state.dedupe.clone(),
        state.windows.clone(),
        state.scoring.clone(),
        state.calendar.clone(),
    );
    fresh.set_scoring_threads(state.scoring_threads);
    fresh.parallel_scoring_min = state.parallel_scoring_min;
    IdeaState::resume(saved, fresh, state.moved_anchors(), None).expect("same settings")
}

#[test]
fn a_resumed_state_goes_on_as_if_it_never_stopped() {
    let signals = churning_stream();
    let scoring = ScoringParams::default();
    let epochs = prepared_epochs(&signals, 60);
    let (expected, _) = changelog(&signals, 60, 1);
    assert_eq!(expected.len(), epochs.len());
    // Saved and resumed after every epoch: ticks, archives, reused slots,
    // near-duplicates and re-polls all cross a restart somewhere.
    let mut state = fresh_state(&scoring);
    for (i, (t, batch)) in epochs.into_iter().enumerate() {
        state = saved_and_resumed(&state);
        let got = state.apply_epoch(t + 60, batch);
        assert!(got == expected[i], "epoch {i} differs after a restart");
    }
    assert!(state.stats().archived > 100);
}

#[test]
fn a_saved_state_holds_each_vector_once() {
    let signals = churning_stream();
    let (_, state) = replay_epochs(&signals[..300], 3600, 1, DedupeParams::default());
    let bytes =
        crate::shared_embedding::shared_while_writing(|| postcard::to_allocvec(&state)).unwrap();
    let plain = postcard::to_allocvec(&state).unwrap();
    // Each live vector is held by its idea, its row, the near-duplicate
    // index and the centroid windows: pooled, each is written once.
    let live = state.active_ideas();
    assert!(live > 100);
    let vector = 4 * EMBEDDING_DIM + 2;
    assert!(
        plain.len() - bytes.len() > 2 * live * vector,
        "pooled {} bytes, plain {}",
        bytes.len(),
        plain.len()
    );
}

#[test]
fn a_state_saved_under_other_settings_is_refused() {
    let (_, state) = replay_epochs(&churning_stream()[..50], 60, 1, DedupeParams::default());
    let bytes =
        crate::shared_embedding::shared_while_writing(|| postcard::to_allocvec(&state)).unwrap();
    let read = || -> IdeaState {
        crate::shared_embedding::shared_while_reading(|| postcard::from_bytes(&bytes)).unwrap()
    };
    let other = DedupeParams {
        near_threshold: 0.5,
        ..DedupeParams::default()
    };
    let fresh = IdeaState::new(
        other,
        WindowParams::default(),
        ScoringParams::default(),
        Calendar::default(),
    );
    assert_eq!(
        IdeaState::resume(read(), fresh, None, None).err(),
        Some(ResumeError::Settings("dedupe"))
    );
    let mut scoring = ScoringParams::default();
    scoring.weights.freshness += 0.1;
    assert_eq!(
        IdeaState::resume(read(), fresh_state(&scoring), None, None).err(),
        Some(ResumeError::Settings("scoring"))
    );
    assert!(IdeaState::resume(read(), fresh_state(&ScoringParams::default()), None, None).is_ok());
}

/// 35 hours of distinct ideas in five communities: ticks re-score all of
/// them. Then, 8 days on, a third of them again and new ones: the others
/// are archived, so live slots have gaps and freed slots are reused.
fn churning_stream() -> Vec<Signal> {
    let minute = |i: i64| {
        if i < 300 {
            i * 7
        } else {
            300 * 7 + 8 * 1440 + (i - 300) * 7
        }
    };
    (0..300)
        .chain((300..400).map(|i| if i % 3 == 0 { i - 300 } else { i }))
        .enumerate()
        .map(|(n, i)| {
            let mut s = signal(
                &n.to_string(),
                minute(n as i64),
                &format!("idea {i}"),
                unit(5000 + i as u64),
            );
            s.community = Some(format!("r/c{}", i % 5));
            s
        })
        .collect()
}

#[test]
fn scoring_threads_do_not_change_the_changelog() {
    let signals = churning_stream();
    let (one, _) = changelog(&signals, 60, 1);
    let scores = one
        .iter()
        .flatten()
        .filter(|c| matches!(c.key, ViewKey::Score(_)));
    assert!(scores.count() > 3_000, "ticks re-score every live idea");
    let archived = one
        .iter()
        .flatten()
        .filter(|c| matches!(&c.row, Some(ViewRow::Idea(i)) if i.status == IdeaStatus::Archived));
    assert!(archived.count() > 100, "ideas not seen again are archived");
    for threads in [2, 3] {
        assert!(
            one == changelog(&signals, 60, threads).0,
            "{threads} threads"
        );
    }
}

fn signal_row<'a>(views: &'a ViewState, id: &str) -> &'a SignalRow {
    match views.get(&ViewKey::Signal("reddit", id.into())) {
        Some(ViewRow::Signal(s)) => s,
        other => panic!("no signal {id}: {other:?}"),
    }
}

#[test]
fn exact_near_and_new() {
    let a = unit(1);
    let signals = vec![
        signal("1", 0, "Cat in a hat", a.clone()),
        signal("2", 5, "CAT in a hat!!", a.clone()),
        signal("3", 10, "Cat inside a hat", nudged(&a, 2)),
        signal("4", 15, "Something else entirely", unit(3)),
    ];
    let (views, stats) = run(&signals, 60);
    assert_eq!(signal_row(&views, "2").dedupe, DedupeKind::Exact);
    assert_eq!(signal_row(&views, "3").dedupe, DedupeKind::Near);
    assert!(signal_row(&views, "3").similarity.unwrap() > 0.9);
    assert_eq!(signal_row(&views, "4").dedupe, DedupeKind::New);
    let ideas: Vec<&IdeaRow> = views.ideas().collect();
    assert_eq!(ideas.len(), 2);
    let cat = ideas.iter().find(|i| i.content == "Cat in a hat").unwrap();
    assert_eq!((cat.signal_count, cat.near_duplicates), (3, 1));
    assert_eq!(cat.engagement.views, 100 + 105 + 110);
    assert_eq!(signal_row(&views, "3").idea_id, cat.id);
    assert_eq!(stats.bloom_negative, 3, "{stats:?}");
    // An exact copy of the near-duplicate's text joins the same idea.
    let mut more = signals.clone();
    more.push(signal("5", 20, "cat inside a hat", unit(99)));
    let (views, _) = run(&more, 60);
    assert_eq!(signal_row(&views, "5").dedupe, DedupeKind::Exact);
    assert_eq!(signal_row(&views, "5").idea_id, cat.id);
}

#[test]
fn texts_without_letters_or_digits_match_only_exactly() {
    // The model reads all of these as unknown tokens: one vector for all.
    let unknown = unit(7);
    let signals = vec![
        signal("1", 0, "🐱🐱🐱", unknown.clone()),
        signal("2", 5, "🔥🔥", unknown.clone()),
        signal("3", 10, "!!!", unknown.clone()),
        signal("4", 15, "🐱 🐱🐱", unknown.clone()),
        signal("5", 20, "  🐱🐱🐱 ", unknown.clone()),
        // A legible text with that vector neither joins them nor is joined.
        signal("6", 25, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", unknown.clone()),
        signal("7", 30, "🔥🔥", unknown.clone()),
    ];
    let (views, stats) = run(&signals, 60);
    for (id, kind) in [
        ("1", DedupeKind::New),
        ("2", DedupeKind::New),
        ("3", DedupeKind::New),
        ("4", DedupeKind::New),
        ("5", DedupeKind::Exact),
        ("6", DedupeKind::New),
        ("7", DedupeKind::Exact),
    ] {
        assert_eq!(signal_row(&views, id).dedupe, kind, "signal {id}");
    }
    assert_eq!(
        signal_row(&views, "5").idea_id,
        signal_row(&views, "1").idea_id
    );
    assert_eq!(
        signal_row(&views, "7").idea_id,
        signal_row(&views, "2").idea_id
    );
    assert_eq!(views.ideas().count(), 5);
    assert_eq!(stats.near, 0, "{stats:?}");
}

#[test]
fn stale_ideas_are_archived_and_resume() {
    let a = unit(1);
    let week = 7 * 24 * 60;
    let signals = vec![
        signal("1", 0, "Cat in a hat", a.clone()),
        signal("2", week + 120, "Dog in a hat", unit(5)),
        signal("3", week + 200, "Cat in a hat", a.clone()),
    ];
    let (views, stats) = run(&signals, 60);
    assert_eq!(stats.archived, 1);
    // The archived idea came back by exact content: counts continue.
    let cat = views.ideas().find(|i| i.content == "Cat in a hat").unwrap();
    assert_eq!(cat.signal_count, 2);
    assert_eq!(cat.status, IdeaStatus::Active);
    assert_eq!(signal_row(&views, "3").dedupe, DedupeKind::New);
}

/// Archived ideas are forgotten `forget_archived_secs` after they were
/// archived: content seen again before that resumes its idea, after it
/// starts the idea over under the same id; what was kept for them goes.
#[test]
fn archived_ideas_are_forgotten_after_the_horizon() {
    let week = 7 * 24 * 60;
    let day = 24 * 60;
    let signals = vec![
        signal("1", 0, "Cat in a hat", unit(1)),
        signal("2", 0, "Mouse in a hat", unit(2)),
        // Its tick archives both (week + 2 h).
        signal("3", week + 120, "Dog in a hat", unit(3)),
        // A day later: within a day of being archived, it resumes.
        signal("4", week + day, "Mouse in a hat", unit(2)),
        // Its tick forgets the cat.
        signal("5", week + 3 * day, "Bird in a hat", unit(4)),
        signal("6", week + 3 * day + 10, "Cat in a hat", unit(1)),
    ];
    let run_with = |forget_archived_secs: i64, signals: &[Signal]| {
        let dedupe = DedupeParams {
            forget_archived_secs,
            ..DedupeParams::default()
        };
        let (epochs, state) = replay_epochs(signals, 60, 1, dedupe);
        let mut views = ViewState::default();
        for changes in epochs {
            views.apply(changes);
        }
        (views, state)
    };
    let idea = |views: &ViewState, content: &str| {
        views
            .ideas()
            .find(|i| i.content == content)
            .cloned()
            .unwrap()
    };
    // Up to the bird: the cat is forgotten, with its last factors.
    let (_, state) = run_with(86_400, &signals[..5]);
    assert_eq!(state.stats().forgotten, 1);
    let cat_id = crate::idea::idea_id(&hex::encode(
        crate::content_hash::content_identity("Cat in a hat").0,
    ));
    use crate::feedback::LatestFactors;
    assert!(
        state.factors(&cat_id.to_string()).is_none(),
        "its factors are gone"
    );
    assert!(state.archived.is_empty() && state.archived_factors.is_empty());
    let (views, state) = run_with(86_400, &signals);
    assert_eq!(state.stats().archived, 2);
    assert_eq!(state.stats().forgotten, 1, "{:?}", state.stats());
    let cat = idea(&views, "Cat in a hat");
    assert_eq!(cat.signal_count, 1, "the cat started over");
    assert_eq!(cat.first_seen, signals[5].captured_at);
    assert_eq!(cat.status, IdeaStatus::Active);
    let mouse = idea(&views, "Mouse in a hat");
    assert_eq!(mouse.signal_count, 2, "the mouse resumed");
    assert_eq!(mouse.first_seen, signals[1].captured_at);
    assert!(state.archived.is_empty() && state.archived_factors.is_empty());
    assert!(
        state.archive_order.is_empty(),
        "both entries had their turn"
    );
    // Never forgotten (0), or not yet (the 30-day default): both resume.
    for horizon in [0, DedupeParams::default().forget_archived_secs] {
        let (views, state) = run_with(horizon, &signals);
        assert_eq!(state.stats().forgotten, 0);
        let cat = idea(&views, "Cat in a hat");
        assert_eq!(
            (cat.signal_count, cat.first_seen),
            (2, signals[0].captured_at)
        );
    }
}

/// An idea archived twice keeps its first sighting, and once resumed it is
/// not a member of the centroids again: they hold the ideas whose
/// `first_seen` (as the views show it) is in the window.
#[test]
fn resumed_ideas_keep_their_first_sighting_and_stay_out_of_the_centroids() {
    let week = 7 * 24 * 60;
    let cat = unit(1);
    let signals = vec![
        signal("1", 0, "Cat in a hat", cat.clone()),
        signal("2", week + 120, "Cat in a hat", cat.clone()),
        signal("3", 2 * week + 240, "Dog in a hat", unit(5)),
        signal("4", 2 * week + 300, "Cat in a hat", cat.clone()),
    ];
    let (views, stats) = run(&signals, 60);
    assert_eq!(stats.archived, 2, "{stats:?}");
    let idea = views.ideas().find(|i| i.content == "Cat in a hat").unwrap();
    assert_eq!(idea.signal_count, 3);
    assert_eq!(idea.first_seen, signals[0].captured_at);
    let dog = views.ideas().find(|i| i.content == "Dog in a hat").unwrap();
    assert_eq!(idea.category, dog.category, "one centroid holds both");
    let key = ViewKey::Centroid(
        CentroidKind::Category,
        idea.category.as_deref().unwrap().into(),
    );
    match views.get(&key) {
        Some(ViewRow::Centroid(c)) => {
            assert_eq!(c.n, 1, "only the dog was first seen in the window");
            let dot: f64 = c
                .embedding
                .iter()
                .zip(&unit(5))
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            assert!(dot > 0.999_999, "the centroid is the dog: {dot}");
        }
        other => panic!("no centroid: {other:?}"),
    }
    // Not in the centroid, so nothing of it to take out: its novelty is
    // against the dog alone.
    let novelty = views.score(idea.id).unwrap().factors.novelty;
    let cos: f64 = cat
        .iter()
        .zip(&unit(5))
        .map(|(a, b)| f64::from(*a) * f64::from(*b))
        .sum();
    assert!(
        (novelty - (1.0 - cos).clamp(0.0, 1.0)).abs() < 1e-5,
        "{novelty}"
    );
}

#[test]
fn arrival_order_does_not_matter() {
    let base = unit(1);
    let mut signals: Vec<Signal> = (0..200)
        .map(|i| {
            let e = if i % 3 == 0 {
                nudged(&base, i)
            } else {
                unit(100 + i)
            };
            signal(
                &format!("s{i}"),
                (i as i64) * 7 % 600,
                &format!("text {i}"),
                e,
            )
        })
        .collect();
    let (a, _) = run(&signals, 60);
    signals.reverse();
    let (b, _) = run(&signals, 60);
    let rows_a: Vec<&ViewRow> = a.rows().collect();
    let rows_b: Vec<&ViewRow> = b.rows().collect();
    assert_eq!(rows_a, rows_b);
}

#[test]
fn scores_follow_the_formulas() {
    let signals: Vec<Signal> = (0..30)
        .map(|i| {
            signal(
                &format!("s{i}"),
                i * 50,
                &format!("text {i}"),
                unit(i as u64),
            )
        })
        .collect();
    let (views, _) = run(&signals, 60);
    let p = ScoringParams::default();
    let w = p.weights.normalized();
    for idea in views.ideas() {
        let s = views.score(idea.id).expect("every idea is scored");
        let f = s.factors;
        for x in f.as_array() {
            assert!((0.0..=1.0).contains(&x), "{f:?}");
        }
        let h = (s.scored_at - idea.peak_at).num_seconds() as f64 / 3600.0;
        assert!((f.freshness - score::freshness(h, &p)).abs() < 1e-12);
        assert_eq!(f.seasonality, 0.0, "no calendar");
        let expected: f64 = f
            .as_array()
            .iter()
            .zip(w.as_array())
            .map(|(a, b)| a * b)
            .sum();
        assert!((s.score - expected).abs() < 1e-12);
    }
}

#[test]
fn new_weights_rescore_every_active_idea() {
    let lsh = LshIndex::new(LshParams::default());
    let labels = labels();
    let scoring = ScoringParams::default();
    let mut state = fresh_state(&scoring);
    let prepared = distinct_ideas(5, &lsh, &labels, &scoring);
    let start = day_start();
    state.apply_epoch(start + 600, prepared);
    state.set_weights(Weights::from_array([1.0, 0.0, 0.0, 0.0, 0.0]));
    let changes = state.apply_epoch(start + 660, Vec::new());
    let scores: Vec<&ScoreRow> = changes
        .iter()
        .filter_map(|c| match &c.row {
            Some(ViewRow::Score(s)) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(scores.len(), 5);
    assert!(scores.iter().all(|s| s.score == s.factors.freshness));
}

#[test]
fn moved_anchors_reclassify_live_ideas_at_the_next_tick() {
    use crate::classify::Classifier;
    let lsh = LshIndex::new(LshParams::default());
    let mut labels = labels();
    let anchor = |name: &str, seed: u64| Anchor {
        name: name.into(),
        embedding: unit(seed),
    };
    // The configured anchors: far from every idea, so all are Hunches.
    let configured = Classifier::new(vec![anchor("Wisdom", 500), anchor("Spell", 501)], 0.3, 10);
    labels.classifier = Some(crate::classify::Classes::Seed(
        configured.with_anchors(configured.anchors().to_vec()),
    ));
    let scoring = ScoringParams::default();
    let mut state = fresh_state(&scoring);
    let prepared = distinct_ideas(4, &lsh, &labels, &scoring);
    let start = day_start();
    let classes = |changes: &[Change]| -> BTreeMap<String, String> {
        changes
            .iter()
            .filter_map(|c| match &c.row {
                Some(ViewRow::Idea(i)) => Some((i.content.clone(), i.anchor_class.clone()?)),
                _ => None,
            })
            .collect()
    };
    let first = classes(&state.apply_epoch(start + 600, prepared));
    assert_eq!(first.len(), 4);
    assert!(first.values().all(|c| c == "Hunch"), "{first:?}");
    // Corrections move Wisdom onto idea t1's vector and Spell onto t2's.
    state.set_classifier(std::sync::Arc::new(crate::classify::Classes::Seed(
        configured.with_anchors(vec![anchor("Wisdom", 1), anchor("Spell", 2)]),
    )));
    // Not before the tick...
    assert!(classes(&state.apply_epoch(start + 1200, Vec::new())).is_empty());
    // ... and at it, only the ideas whose class changed.
    let moved = classes(&state.apply_epoch(start + 3600, Vec::new()));
    let expected: BTreeMap<String, String> = [("t1", "Wisdom"), ("t2", "Spell")]
        .map(|(t, c)| (t.to_owned(), c.to_owned()))
        .into();
    assert_eq!(moved, expected);
    assert!(classes(&state.apply_epoch(start + 7200, Vec::new())).is_empty());
}

/// What feedback reads instead of score facts: after every epoch, each
/// idea's [`LatestFactors`] are those of the last score row emitted for it,
/// live or archived, and resumed ideas too.
#[test]
fn latest_factors_are_the_last_emitted_ones() {
    use crate::feedback::LatestFactors;
    let week = 7 * 24 * 60;
    let signals = [
        signal("1", 0, "Cat in a hat", unit(1)),
        signal("2", 30, "Owl in a tree", unit(2)),
        signal("3", week + 120, "Dog in a hat", unit(5)),
        signal("4", week + 200, "Cat in a hat", unit(1)),
    ];
    let (lsh, labels, scoring) = (
        LshIndex::new(LshParams::default()),
        labels(),
        ScoringParams::default(),
    );
    let mut state = fresh_state(&scoring);
    let mut emitted: BTreeMap<String, Factors> = BTreeMap::new();
    let mut archived = 0;
    for s in &signals {
        let t = s.captured_at.timestamp().div_euclid(60) * 60;
        let batch = vec![prepare(s.clone(), &lsh, &labels, &scoring)];
        for c in state.apply_epoch(t + 60, batch) {
            match c.row {
                Some(ViewRow::Score(r)) => {
                    emitted.insert(r.idea_id.to_string(), r.factors);
                }
                Some(ViewRow::Idea(i)) if i.status == IdeaStatus::Archived => archived += 1,
                _ => {}
            }
        }
        for (id, factors) in &emitted {
            assert_eq!(state.factors(id), Some(*factors), "{id}");
        }
    }
    assert_eq!(archived, 2, "both first ideas were archived on the way");
    assert_eq!(state.factors("no such idea"), None);
    // Ids match as written, archived or live: not in another case.
    for id in emitted.keys() {
        assert_eq!(state.factors(&id.to_uppercase()), None, "{id}");
    }
}

fn polled(id: &str, minute: i64, content: &str, embedding: Vec<f32>, views: u64) -> Signal {
    let mut s = signal(id, minute, content, embedding);
    s.engagement.views = views;
    s
}

#[test]
fn redelivered_signals_change_nothing() {
    let base = unit(1);
    let signals: Vec<Signal> = (0..120)
        .map(|i| {
            let e = if i % 4 == 0 {
                nudged(&base, i)
            } else {
                unit(100 + i)
            };
            signal(&format!("s{i}"), i as i64 * 3, &format!("text {i}"), e)
        })
        .collect();
    let (alone, stats_alone) = run(&signals, 60);
    // Every third signal delivered again, some of them twice, in another order.
    let mut repeated = signals.clone();
    repeated.extend(signals.iter().step_by(3).cloned());
    repeated.extend(signals.iter().step_by(9).cloned());
    repeated.reverse();
    let (again, stats_again) = run(&repeated, 60);
    let rows_a: Vec<&ViewRow> = alone.rows().collect();
    let rows_b: Vec<&ViewRow> = again.rows().collect();
    assert_eq!(rows_a, rows_b);
    assert_eq!(stats_again.repeats, 40 + 14);
    assert_eq!(stats_again.signals, stats_alone.signals);
    assert_eq!(stats_again.repolls, 0);
}

#[test]
fn a_repoll_replaces_its_signals_figures() {
    let a = unit(1);
    let first = vec![
        polled("1", 0, "Cat in a hat", a.clone(), 100),
        polled("2", 5, "CAT in a hat!!", a.clone(), 10),
    ];
    let mut polls = first.clone();
    polls.push(polled("1", 60, "Cat in a hat", a.clone(), 300));
    polls.push(polled("1", 90, "Cat in a hat", a.clone(), 500));
    // Same capture, smaller figures: changes nothing.
    polls.push(polled("1", 90, "Cat in a hat", a.clone(), 400));
    for order in [false, true] {
        let mut polls = polls.clone();
        if order {
            polls.reverse();
        }
        let (views, stats) = run(&polls, 60);
        let idea = views.ideas().next().expect("one idea");
        assert_eq!(views.ideas().count(), 1);
        assert_eq!(idea.signal_count, 2, "a re-poll is not a second signal");
        assert_eq!(idea.engagement.views, 500 + 10);
        assert_eq!(signal_row(&views, "1").engagement.views, 500);
        assert_eq!(signal_row(&views, "1").dedupe, DedupeKind::New);
        assert_eq!(signal_row(&views, "2").dedupe, DedupeKind::Exact);
        assert_eq!((stats.repolls, stats.repeats, stats.signals), (3, 0, 2));
    }
}

#[test]
fn without_a_horizon_every_delivery_counts() {
    let a = unit(1);
    let signals = vec![
        polled("1", 0, "Cat in a hat", a.clone(), 100),
        polled("1", 0, "Cat in a hat", a.clone(), 100),
    ];
    let dedupe = DedupeParams {
        event_id_horizon_secs: 0,
        ..DedupeParams::default()
    };
    let (epochs, state) = replay_epochs(&signals, 60, 1, dedupe);
    let mut views = ViewState::default();
    for changes in epochs {
        views.apply(changes);
    }
    assert_eq!(views.ideas().next().unwrap().engagement.views, 200);
    assert_eq!(state.stats().repeats, 0);
}

#[test]
fn a_resumed_state_hands_its_sums_to_a_fresh_collection() {
    // As in the pipeline: the centroid sums live outside the state (in
    // differential there), and a restart starts that collection empty.
    let signals = churning_stream();
    let scoring = ScoringParams::default();
    let epochs = prepared_epochs(&signals, 60);
    let run = |restart_at: Option<usize>| {
        let mut state = fresh_state(&scoring);
        let mut sums: AccumulatedSums<CentroidKey> = AccumulatedSums::default();
        let mut out = Vec::new();
        for (i, (t, batch)) in epochs.clone().into_iter().enumerate() {
            if Some(i) == restart_at {
                state = saved_and_resumed(&state);
                state.hand_sums_to_dataflow();
                sums = AccumulatedSums::default();
            }
            let deltas = state.begin_epoch(t + 60, batch);
            out.push(state.finish_epoch(sums.accumulate(deltas)));
        }
        out
    };
    let expected = run(None);
    let n = expected.len();
    for cut in [1, n / 3, n / 2, n - 1] {
        assert!(run(Some(cut)) == expected, "restart before epoch {cut}");
    }
}

/// Every epoch of `signals` (by `epoch_secs`) applied in batches, each
/// batch ending where `ends(epoch index, state)` says (and at the last
/// epoch), with top lists of `k` kept (none: the ticks' evaluation is
/// deferred within a batch), the state saved and resumed after each epoch
/// `saved_after` says: the views the changelogs leave, each epoch's moves,
/// and how many score rows the changelogs held.
fn batched(
    signals: &[Signal],
    epoch_secs: i64,
    k: Option<usize>,
    ends: impl Fn(usize, &IdeaState) -> bool,
    saved_after: impl Fn(usize) -> bool,
) -> (ViewState, Vec<BTreeMap<String, TopKDelta>>, usize) {
    let mut state = fresh_state(&ScoringParams::default());
    state.set_scoring_threads(2);
    state.parallel_scoring_min = 1;
    if let Some(k) = k {
        state.keep_top_lists(k);
    }
    let epochs = prepared_epochs(signals, epoch_secs);
    let last = epochs.len() - 1;
    let (mut views, mut moves, mut score_rows) = (ViewState::default(), Vec::new(), 0);
    // Top lists ranked from the changelogs, as consumers did before the
    // state ranked them: the same moves while every epoch is a batch.
    let mut from_rows = k.map(TopK::new);
    for (i, (t, batch)) in epochs.into_iter().enumerate() {
        let watermark = t + epoch_secs;
        let deltas = state.begin_epoch(watermark, batch);
        let sums = state.own_sums.accumulate(deltas);
        let flush = i == last || ends(i, &state);
        let changes = state.finish_epoch_batched(sums, flush);
        let keys: BTreeSet<&ViewKey> = changes.iter().map(|c| &c.key).collect();
        assert_eq!(keys.len(), changes.len(), "one change per key");
        score_rows += changes
            .iter()
            .filter(|c| matches!(c.key, ViewKey::Score(_)))
            .count();
        let moved = state.take_moves(watermark);
        if !flush {
            from_rows = None;
        }
        if let Some(top) = from_rows.as_mut() {
            assert_eq!(top.apply(&changes), moved, "ranked from the rows");
        }
        moves.push(moved);
        views.apply(changes);
        if saved_after(i) {
            // As a checkpoint does: the deferred ticks evaluated, the top
            // lists saved beside the state.
            state.catch_up_all();
            let top = state.top.take();
            state = saved_and_resumed(&state);
            if let Some(top) = top {
                state.resume_top_lists(top);
            }
        }
    }
    (views, moves, score_rows)
}

/// Ticks and merges in batches of epochs leave the views and top-K moves of
/// the same epochs one by one, with a score row per idea per batch instead
/// of per tick: on a stream whose ideas are archived (some while their row
/// is held back), come back, and whose slots are reused.
#[test]
fn batches_of_epochs_leave_the_views_and_moves_of_epochs_one_by_one() {
    let mut signals = churning_stream();
    // An idea archived inside a batch and seen again in the same one.
    let back = signals[7].clone();
    let mut again = back.clone();
    again.id = "back again".into();
    again.captured_at = signals.last().unwrap().captured_at + chrono::Duration::minutes(30);
    signals.push(again);
    let (reference, reference_moves, reference_rows) =
        batched(&signals, 60, Some(4), |_, _| true, |_| false);
    assert!(
        reference_moves.iter().filter(|m| !m.is_empty()).count() > 10,
        "the top lists move"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let random: Vec<bool> = (0..10_000).map(|_| rng.random_bool(0.2)).collect();
    type Ends = Box<dyn Fn(usize, &IdeaState) -> bool>;
    type Saves = Box<dyn Fn(usize) -> bool>;
    let cases: Vec<(&str, Ends, Saves)> = vec![
        (
            "every 5th epoch",
            Box::new(|i, _| i % 5 == 4),
            Box::new(|_| false),
        ),
        (
            "every 3 ticks",
            Box::new(|_, s| s.ticks_in_batch() >= 3),
            Box::new(|_| false),
        ),
        (
            "at random",
            Box::new(move |i, _| random[i]),
            Box::new(|_| false),
        ),
        ("one batch", Box::new(|_, _| false), Box::new(|_| false)),
        // Checkpoints inside batches: what they hold back is saved.
        (
            "every 3 ticks, saved every 37th epoch",
            Box::new(|_, s| s.ticks_in_batch() >= 3),
            Box::new(|i| i % 37 == 36),
        ),
    ];
    for (name, ends, saved_after) in cases {
        // Without top lists, the ticks' evaluation waits for the batch's end.
        let (deferred, _, deferred_rows) = batched(&signals, 60, None, &ends, &saved_after);
        assert!(
            deferred.rows().eq(reference.rows()),
            "{name}: the views differ with deferred ticks"
        );
        let (views, moves, rows) = batched(&signals, 60, Some(4), ends, saved_after);
        assert_eq!(rows, deferred_rows, "{name}");
        assert!(
            views.rows().eq(reference.rows()),
            "{name}: the views differ"
        );
        assert_eq!(moves, reference_moves, "{name}: the moves differ");
        assert!(
            rows < reference_rows,
            "{name}: {rows} score rows against {reference_rows}"
        );
        if name != "every 5th epoch" && name != "at random" {
            // (Epochs are 7 minutes apart: a batch of 5 holds a tick at most.)
            assert!(
                rows < reference_rows / 2,
                "{name}: {rows} against {reference_rows}"
            );
        }
    }
}
