//! A deterministic, realistic signal stream for demos, tests and benchmarks.
//!
//! What it models, and why each matters to the pipeline:
//! - Zipf-distributed niches, subjects, topics and communities: a few hot, a long tail
//!   (top-K views and hot topics need skew to mean anything);
//! - heavy-tailed (log-normal) engagement and bursts of one subject: the robust
//!   z-score of the engagement factor is built for that;
//! - about 10% exact duplicates and 5% near-duplicates (case, punctuation, emoji
//!   or one word changed), with the truth recorded in `metadata.truth`: dedupe is
//!   measured against it;
//! - themes aligned with the calendar (holiday subjects peak around their date);
//! - arrival out of event-time order by less than the allowed lateness;
//! - optional marketplace feedback (listing.published, feedback.received) for
//!   generated ideas, with known per-variant click-through rates;
//! - optional classification feedback (classification.corrected): users
//!   re-labelling some ideas' texts, each niche consistently toward one
//!   anchor, so that the anchors visibly move.
//!
//! Same seed and options, same bytes out.

mod vocabulary;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use ideaflow_operators::content_hash::content_hash;
use ideaflow_operators::embed::l2_normalize;
use ideaflow_operators::idea::idea_id;
use ideaflow_operators::validate::encode_embedding_base64;
use ideaflow_operators::EMBEDDING_DIM;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Zipf};
use serde_json::{json, Value};

pub use vocabulary::{Niche, CALENDAR, NICHES};

#[derive(Clone, Debug)]
pub struct GenOptions {
    pub signals: u64,
    pub seed: u64,
    /// Emit listing and feedback events for some of the generated ideas.
    pub feedback: bool,
    /// Emit classification.corrected events for some of the generated ideas.
    pub corrections: bool,
    /// Attach clustered synthetic unit vectors as `embedding` (for large benchmark streams).
    pub synthetic_embeddings: bool,
    /// First event time.
    pub start: DateTime<Utc>,
    /// Event time the stream spans.
    pub span: Duration,
    /// Largest arrival delay; keep it below the pipeline's allowed lateness.
    pub max_delay: Duration,
    /// Share of exact and near duplicates.
    pub exact_dup_rate: f64,
    pub near_dup_rate: f64,
    /// Write synthetic embeddings as base64 of little-endian f32 (compact).
    pub base64_embeddings: bool,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            signals: 1000,
            seed: 42,
            feedback: false,
            corrections: false,
            synthetic_embeddings: false,
            start: Utc.with_ymd_and_hms(2024, 10, 1, 0, 0, 0).unwrap(),
            span: Duration::days(14),
            max_delay: Duration::minutes(30),
            exact_dup_rate: 0.10,
            near_dup_rate: 0.05,
            base64_embeddings: false,
        }
    }
}

/// A recently generated original, kept to derive duplicates from.
#[derive(Clone)]
struct Original {
    id: String,
    /// Subject and twist: the truth's notion of "the same idea".
    idea: String,
    content: String,
    niche: usize,
    subject: usize,
}

pub struct Generator {
    opt: GenOptions,
    rng: ChaCha8Rng,
    produced: u64,
    now: DateTime<Utc>,
    step_secs: f64,
    recent: Vec<Original>,
    /// (arrival time ms, sequence, line): emitted in arrival order.
    pending: BinaryHeap<Reverse<(i64, u64, String)>>,
    seq: u64,
    burst: Option<(usize, usize, u32)>,
    niche_zipf: Zipf<f64>,
    engagement: LogNormal<f64>,
    centers: Vec<Vec<f32>>,
}

impl Generator {
    pub fn new(opt: GenOptions) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(opt.seed);
        let centers = if opt.synthetic_embeddings {
            (0..NICHES.len() * 16)
                .map(|_| random_unit(&mut rng))
                .collect()
        } else {
            Vec::new()
        };
        let step_secs = opt.span.num_seconds() as f64 / opt.signals.max(1) as f64;
        Generator {
            now: opt.start,
            rng,
            produced: 0,
            step_secs,
            recent: Vec::new(),
            pending: BinaryHeap::new(),
            seq: 0,
            burst: None,
            niche_zipf: Zipf::new(NICHES.len() as f64, 1.1).expect("valid zipf"),
            engagement: LogNormal::new(6.0, 1.8).expect("valid lognormal"),
            centers,
            opt,
        }
    }

    fn push(&mut self, event_time: DateTime<Utc>, line: String) {
        let max_delay = self.opt.max_delay.num_milliseconds().max(0);
        let delay = if max_delay > 0 {
            self.rng.random_range(0..max_delay)
        } else {
            0
        };
        let arrival = event_time.timestamp_millis() + delay;
        self.seq += 1;
        self.pending.push(Reverse((arrival, self.seq, line)));
    }

    fn zipf_index(&mut self, n: usize) -> usize {
        let z = Zipf::new(n as f64, 1.2).expect("valid zipf");
        (z.sample(&mut self.rng) as usize).clamp(1, n) - 1
    }

    fn next_signal(&mut self) {
        // Time advances with exponential gaps; bursts pack a subject together.
        let gap = -self.step_secs * (1.0 - self.rng.random::<f64>()).ln();
        let gap = if self.burst.is_some() { gap * 0.2 } else { gap };
        self.now += Duration::milliseconds((gap * 1000.0) as i64);
        self.produced += 1;
        let n = self.produced;
        let roll: f64 = self.rng.random();
        // The text a synthetic embedding is seeded from: a near-duplicate's
        // vector is its original's, slightly moved.
        let mut vector_of = None;
        let (content, niche, subject, idea, truth) = if roll < self.opt.exact_dup_rate
            && !self.recent.is_empty()
        {
            let o = self.recent[self.rng.random_range(0..self.recent.len())].clone();
            (
                o.content.clone(),
                o.niche,
                o.subject,
                o.idea.clone(),
                json!({"kind": "exact", "dup_of": o.id}),
            )
        } else if roll < self.opt.exact_dup_rate + self.opt.near_dup_rate && !self.recent.is_empty()
        {
            let o = self.recent[self.rng.random_range(0..self.recent.len())].clone();
            let (mutated, how) = self.mutate(&o.content);
            vector_of = Some(o.content.clone());
            (
                mutated,
                o.niche,
                o.subject,
                o.idea.clone(),
                json!({"kind": "near", "dup_of": o.id, "mutation": how}),
            )
        } else {
            let (content, niche, subject, twist) = self.fresh_content();
            let idea = format!("{niche}:{subject}:{twist}");
            (content, niche, subject, idea, json!({"kind": "original"}))
        };
        let id = format!("gen-{}-{n}", self.opt.seed);
        if truth["kind"] == "original" {
            if self.recent.len() >= 512 {
                let k = self.rng.random_range(0..self.recent.len());
                self.recent.swap_remove(k);
            }
            self.recent.push(Original {
                id: id.clone(),
                idea: idea.clone(),
                content: content.clone(),
                niche,
                subject,
            });
        }
        let nich = &NICHES[niche];
        let community = nich.communities[self.zipf_index(nich.communities.len())];
        let source = if community.starts_with("r/") {
            "reddit"
        } else if self.rng.random_bool(0.5) {
            "tiktok"
        } else if self.rng.random_bool(0.5) {
            "instagram"
        } else {
            "youtube"
        };
        let mut topics = vec![nich.topics[self.zipf_index(nich.topics.len())]];
        if self.rng.random_bool(0.5) {
            let t = nich.topics[self.zipf_index(nich.topics.len())];
            if !topics.contains(&t) {
                topics.push(t);
            }
        }
        let views = self.engagement.sample(&mut self.rng).min(1e10) as u64;
        let likes = (views as f64 * self.rng.random_range(0.01..0.15)) as u64;
        let comments = (likes as f64 * self.rng.random_range(0.01..0.3)) as u64;
        let shares = (likes as f64 * self.rng.random_range(0.0..0.2)) as u64;
        let age_min = -(180.0 * (1.0 - self.rng.random::<f64>()).ln());
        let published = self.now - Duration::seconds((age_min * 60.0) as i64);
        let mut signal = json!({
            "id": id,
            "source": source,
            "captured_at": rfc3339(self.now),
            "published_at": rfc3339(published),
            "content": content,
            "community": community,
            "topics": topics,
            "locale": if self.rng.random_bool(0.8) { "en-US" } else { "en-GB" },
            "engagement": {"views": views, "likes": likes, "comments": comments, "shares": shares},
            "metadata": {"truth": {"niche": nich.name, "idea": idea, "dup": truth}},
        });
        if self.opt.synthetic_embeddings {
            let v = self.synthetic_embedding(niche, subject, &content, vector_of.as_deref());
            signal["embedding"] = if self.opt.base64_embeddings {
                json!(encode_embedding_base64(&v))
            } else {
                json!(v)
            };
        }
        if self.opt.feedback && truth["kind"] == "original" && n.is_multiple_of(10) {
            self.schedule_feedback(&content);
        }
        if self.opt.corrections && truth["kind"] == "original" && n.is_multiple_of(25) {
            self.schedule_correction(&content, niche);
        }
        let at = self.now;
        self.push(at, signal.to_string());
    }

    /// A new text: (content, niche, subject, twist).
    fn fresh_content(&mut self) -> (String, usize, usize, usize) {
        // Start or end a burst now and then.
        match self.burst {
            Some((_, _, 0)) => self.burst = None,
            Some((ni, si, left)) => {
                self.burst = Some((ni, si, left - 1));
            }
            None if self.rng.random_bool(0.002) => {
                let ni = self.rng.random_range(0..NICHES.len());
                let si = self.rng.random_range(0..NICHES[ni].subjects.len());
                self.burst = Some((ni, si, self.rng.random_range(20..200)));
            }
            None => {}
        }
        let (niche, subject) = if let Some((ni, si, _)) =
            self.burst.filter(|_| self.rng.random_bool(0.5))
        {
            (ni, si)
        } else if let Some(si) = self.holiday_subject() {
            (1, si)
        } else {
            let ni = (self.niche_zipf.sample(&mut self.rng) as usize).clamp(1, NICHES.len()) - 1;
            (ni, self.zipf_index(NICHES[ni].subjects.len()))
        };
        let n = &NICHES[niche];
        let twist_index = self.rng.random_range(0..n.twists.len());
        let twist = n.twists[twist_index];
        let opener = vocabulary::OPENERS[self.rng.random_range(0..vocabulary::OPENERS.len())];
        let mut text = format!("{opener}{} {twist}", n.subjects[subject]);
        if self.rng.random_bool(0.3) {
            let tag = n.topics[self.rng.random_range(0..n.topics.len())];
            text.push_str(&format!(" #{tag}"));
        }
        // Make most originals distinct: real signals rarely repeat word for word.
        if self.rng.random_bool(0.85) {
            let extra = [
                "today",
                "again",
                "this week",
                "for real",
                "in my town",
                "at work",
                "with friends",
                "on stream",
            ];
            text.push_str(&format!(
                " {} {}",
                extra[self.rng.random_range(0..extra.len())],
                self.produced
            ));
        }
        (capitalize(&text), niche, subject, twist_index)
    }

    /// Within 7 days before a calendar event, its subject takes a third of the stream.
    fn holiday_subject(&mut self) -> Option<usize> {
        let today = self.now.date_naive();
        for (m, d, _, subject) in CALENDAR {
            let Some(day) = chrono::NaiveDate::from_ymd_opt(today.year(), *m, *d) else {
                continue;
            };
            let until = (day - today).num_days();
            if (0..=7).contains(&until) && self.rng.random_bool(0.33) {
                return NICHES[1].subjects.iter().position(|s| s == subject);
            }
        }
        None
    }

    fn mutate(&mut self, content: &str) -> (String, &'static str) {
        match self.rng.random_range(0..4) {
            0 => (content.to_uppercase(), "case"),
            1 => (format!("{content}!!!"), "punctuation"),
            2 => (
                format!(
                    "{content} {}",
                    vocabulary::EMOJI[self.rng.random_range(0..vocabulary::EMOJI.len())]
                ),
                "emoji",
            ),
            _ => {
                let mut words: Vec<&str> = content.split(' ').collect();
                let i = self.rng.random_range(0..words.len());
                let swaps = ["super", "totally", "honestly", "very", "really"];
                words[i] = swaps[self.rng.random_range(0..swaps.len())];
                (words.join(" "), "word")
            }
        }
    }

    fn schedule_feedback(&mut self, content: &str) {
        let idea = idea_id(&content_hash(content)).to_string();
        let listed = self.now + Duration::minutes(self.rng.random_range(60..24 * 60));
        let base_ctr: f64 = self.rng.random_range(0.01..0.05);
        for (k, variant) in ["A", "B"].into_iter().enumerate() {
            let listing = envelope(
                "listing.published",
                format!("lst-{idea}-{variant}"),
                listed,
                json!({"ideaId": idea, "marketplace": "redbubble", "listingId": format!("rb-{idea}-{variant}"),
                       "variant": variant, "publishedAt": rfc3339(listed)}),
            );
            self.push(listed, listing.to_string());
            // Variant B converts twice as well: a known winner for A/B tests.
            let ctr = base_ctr * if k == 1 { 2.0 } else { 1.0 };
            for h in 1..=48 {
                let at = listed + Duration::hours(h);
                let impressions: u64 = self.rng.random_range(20..200);
                let clicks = (0..impressions)
                    .filter(|_| self.rng.random_bool(ctr))
                    .count() as u64;
                let favorites = (0..clicks).filter(|_| self.rng.random_bool(0.3)).count() as u64;
                let add_to_cart = (0..clicks).filter(|_| self.rng.random_bool(0.1)).count() as u64;
                let sales = (0..add_to_cart)
                    .filter(|_| self.rng.random_bool(0.5))
                    .count() as u64;
                let fb = envelope(
                    "feedback.received",
                    format!("fb-{idea}-{variant}-{h}"),
                    at,
                    json!({"ideaId": idea, "marketplace": "redbubble", "variant": variant,
                           "impressions": impressions, "clicks": clicks, "favorites": favorites,
                           "addToCart": add_to_cart, "sales": sales}),
                );
                self.push(at, fb.to_string());
            }
        }
    }

    /// A user saying an idea's text belongs to its niche's anchor (see
    /// [`CORRECTED_ANCHORS`]), a little after the idea was first seen.
    fn schedule_correction(&mut self, content: &str, niche: usize) {
        let idea = idea_id(&content_hash(content)).to_string();
        let at = self.now + Duration::minutes(self.rng.random_range(10..120));
        let rating: u8 = self.rng.random_range(3..=5);
        let correction = envelope(
            "classification.corrected",
            format!("cc-{idea}"),
            at,
            json!({"sentence": content, "predicted": "Hunch",
                   "correct": CORRECTED_ANCHORS[niche % CORRECTED_ANCHORS.len()],
                   "rating": rating}),
        );
        self.push(at, correction.to_string());
    }

    /// A unit vector near its niche and subject centers, with a per-text
    /// component large enough that distinct texts stay below cosine ~0.6
    /// (as unrelated texts do with the real model); a near-duplicate
    /// (`original` given) is its original's vector moved to cosine ~0.97.
    fn synthetic_embedding(
        &mut self,
        niche: usize,
        subject: usize,
        content: &str,
        original: Option<&str>,
    ) -> Vec<f32> {
        let seeded = |text: &str| {
            ChaCha8Rng::seed_from_u64(
                u64::from_str_radix(&content_hash(text)[..16], 16).unwrap_or(0),
            )
        };
        let mut local = seeded(original.unwrap_or(content));
        let a = &self.centers[niche * 16];
        let b = &self.centers[niche * 16 + 1 + subject % 15];
        let mut v: Vec<f32> = (0..EMBEDDING_DIM)
            .map(|i| a[i] + 0.6 * b[i] + 0.21 * (local.random::<f32>() - 0.5))
            .collect();
        if original.is_some() {
            let mut nudge = seeded(content);
            v.iter_mut()
                .for_each(|x| *x += 0.07 * (nudge.random::<f32>() - 0.5));
        }
        l2_normalize(&mut v);
        v.iter().map(|x| (x * 1e5).round() / 1e5).collect()
    }
}

impl Iterator for Generator {
    type Item = String;
    /// The next line in arrival order.
    fn next(&mut self) -> Option<String> {
        loop {
            let horizon = self.now.timestamp_millis();
            let done = self.produced >= self.opt.signals;
            if let Some(Reverse((arrival, _, _))) = self.pending.peek() {
                if done || *arrival <= horizon {
                    return self.pending.pop().map(|Reverse((_, _, line))| line);
                }
            }
            if done {
                return None;
            }
            self.next_signal();
        }
    }
}

/// The anchor users re-label a niche's texts as, by niche index: every
/// correction of one niche pulls the same anchor toward that niche. The
/// generator cannot know what the classifier predicted (it runs no model
/// without embeddings), so `predicted` is the seed's fallback class, Hunch.
const CORRECTED_ANCHORS: [&str; 3] = ["Wisdom", "Nudge", "Spell"];

fn random_unit(rng: &mut ChaCha8Rng) -> Vec<f32> {
    let mut v: Vec<f32> = (0..EMBEDDING_DIM)
        .map(|_| rng.random::<f32>() - 0.5)
        .collect();
    l2_normalize(&mut v);
    v
}

/// An event in the seed's envelope, as the generator's source sends it.
fn envelope(event_type: &str, event_id: String, at: DateTime<Utc>, data: Value) -> Value {
    json!({
        "eventType": event_type,
        "eventId": event_id,
        "timestamp": rfc3339(at),
        "source": "ideaflow-gen",
        "version": "1.0",
        "data": data,
    })
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// The generator's ground truth for one line, if it is a generated signal.
pub fn truth_of(line: &Value) -> Option<&Value> {
    line.pointer("/metadata/truth")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let options = GenOptions {
            signals: 300,
            feedback: true,
            corrections: true,
            ..Default::default()
        };
        let a: Vec<String> = Generator::new(options.clone()).collect();
        let b: Vec<String> = Generator::new(options).collect();
        assert_eq!(a, b);
        assert!(a.iter().any(|l| l.contains("classification.corrected")));
        let c: Vec<String> = Generator::new(GenOptions {
            signals: 300,
            seed: 7,
            ..Default::default()
        })
        .collect();
        assert_ne!(a, c);
    }

    #[test]
    fn duplicates_and_disorder_are_present() {
        let lines: Vec<Value> = Generator::new(GenOptions {
            signals: 2000,
            ..Default::default()
        })
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
        assert_eq!(lines.len(), 2000);
        let kind = |k: &str| {
            lines
                .iter()
                .filter(|l| l.pointer("/metadata/truth/dup/kind").unwrap() == k)
                .count()
        };
        let exact = kind("exact") as f64 / 2000.0;
        let near = kind("near") as f64 / 2000.0;
        assert!((0.07..0.13).contains(&exact), "exact {exact}");
        assert!((0.03..0.07).contains(&near), "near {near}");
        let times: Vec<&str> = lines
            .iter()
            .map(|l| l["captured_at"].as_str().unwrap())
            .collect();
        assert!(
            times.windows(2).any(|w| w[0] > w[1]),
            "no out-of-order arrival"
        );
        // Every line is a valid signal.
        for l in &lines {
            ideaflow_operators::validate::parse_line(l.to_string().as_bytes()).unwrap();
        }
    }

    /// Every kind of line the generator writes (signals with base64 or
    /// numeric vectors or none, feedback, listings, corrections) validates to
    /// the same event whether or not it takes the fast way.
    #[test]
    fn generated_lines_parse_the_same_both_ways() {
        use ideaflow_operators::validate::{parse_line, parse_line_by_tree};
        for (synthetic, base64) in [(true, true), (true, false), (false, false)] {
            let generator = Generator::new(GenOptions {
                signals: 400,
                feedback: true,
                corrections: true,
                synthetic_embeddings: synthetic,
                base64_embeddings: base64,
                ..GenOptions::default()
            });
            for line in generator {
                let bytes = line.to_string().into_bytes();
                let fast = format!("{:?}", parse_line(&bytes));
                assert!(fast.starts_with("Ok("), "{fast}");
                assert_eq!(fast, format!("{:?}", parse_line_by_tree(&bytes)));
            }
        }
    }
}
