//! The five-factor score of seed 004 (section 3.3), every factor in [0, 1]:
//! S = w1·Freshness + w2·Engagement + w3·Novelty + w4·CommunityFit + w5·Seasonality.
//! Pure functions of their inputs; the dataflow decides when each is re-evaluated.

use serde::{Deserialize, Serialize};

use crate::signal::Engagement;

/// Constants of the formulas (config keys, with these defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoringParams {
    /// Freshness is 0.5 this many hours after the peak.
    pub freshness_midpoint_hours: f64,
    /// Hours over which freshness falls from ~0.73 to ~0.27 around the midpoint.
    pub freshness_scale_hours: f64,
    /// Minutes assumed between publication and capture when published_at is unknown.
    pub unknown_age_minutes: f64,
    /// Makes the median absolute deviation a consistent estimator of σ.
    pub mad_scale: f64,
    pub mad_epsilon: f64,
    /// Seasonality is 1 within this many days of a calendar event...
    pub season_window_days: f64,
    /// ...and decays as exp(-(d - window) / decay) beyond it.
    pub season_decay_days: f64,
    /// Topics of a category counted for hashtag cohesion.
    pub cohesion_top_topics: usize,
    pub weights: Weights,
}

impl Default for ScoringParams {
    fn default() -> Self {
        ScoringParams {
            freshness_midpoint_hours: 24.0,
            freshness_scale_hours: 6.0,
            unknown_age_minutes: 60.0,
            mad_scale: 1.4826,
            mad_epsilon: 1e-9,
            season_window_days: 7.0,
            season_decay_days: 7.0,
            cohesion_top_topics: 20,
            weights: Weights::default(),
        }
    }
}

/// Non-negative factor weights; [`Weights::normalized`] makes them sum to 1.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Weights {
    pub freshness: f64,
    pub engagement: f64,
    pub novelty: f64,
    pub community_fit: f64,
    pub seasonality: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            freshness: 0.25,
            engagement: 0.25,
            novelty: 0.2,
            community_fit: 0.15,
            seasonality: 0.15,
        }
    }
}

impl Weights {
    pub fn as_array(&self) -> [f64; 5] {
        [
            self.freshness,
            self.engagement,
            self.novelty,
            self.community_fit,
            self.seasonality,
        ]
    }

    pub fn from_array(w: [f64; 5]) -> Self {
        Weights {
            freshness: w[0],
            engagement: w[1],
            novelty: w[2],
            community_fit: w[3],
            seasonality: w[4],
        }
    }

    /// Negative or non-finite weights count as 0; all-zero becomes equal weights.
    pub fn normalized(&self) -> Weights {
        let w = self
            .as_array()
            .map(|x| if x.is_finite() && x > 0.0 { x } else { 0.0 });
        let sum: f64 = w.iter().sum();
        if sum <= 0.0 {
            return Weights::from_array([0.2; 5]);
        }
        Weights::from_array(w.map(|x| x / sum))
    }
}

/// The five factors of one idea.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Factors {
    pub freshness: f64,
    pub engagement: f64,
    pub novelty: f64,
    pub community_fit: f64,
    pub seasonality: f64,
}

impl Factors {
    pub fn as_array(&self) -> [f64; 5] {
        [
            self.freshness,
            self.engagement,
            self.novelty,
            self.community_fit,
            self.seasonality,
        ]
    }

    /// Σ wᵢ·factorᵢ with the weights normalized.
    pub fn score(&self, weights: &Weights) -> f64 {
        let w = weights.normalized().as_array();
        self.as_array().iter().zip(w).map(|(f, w)| f * w).sum()
    }
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

fn unit(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

/// Freshness = 1 / (1 + exp((h − 24) / 6)), h = hours from peak to the watermark.
pub fn freshness(hours_since_peak: f64, p: &ScoringParams) -> f64 {
    unit(sigmoid(
        -(hours_since_peak - p.freshness_midpoint_hours) / p.freshness_scale_hours,
    ))
}

/// Engagement per minute of age: (views + likes + comments + shares) / max(1, minutes
/// from published_at to captured_at), with `unknown_age_minutes` when unpublished.
pub fn engagement_rate(
    engagement: &Engagement,
    age_minutes: Option<f64>,
    p: &ScoringParams,
) -> f64 {
    let minutes = age_minutes.unwrap_or(p.unknown_age_minutes).max(1.0);
    engagement.total() as f64 / minutes
}

/// Engagement = sigmoid((rate − median) / (1.4826·MAD + ε)), against the
/// source's rates over the last 7 days.
pub fn engagement(rate: f64, median: f64, mad: f64, p: &ScoringParams) -> f64 {
    unit(sigmoid(
        (rate - median) / (p.mad_scale * mad + p.mad_epsilon),
    ))
}

/// Median and median absolute deviation of `values` (0, 0 when empty).
pub fn median_mad(values: &[f64]) -> (f64, f64) {
    fn median(sorted: &[f64]) -> f64 {
        let n = sorted.len();
        if n == 0 {
            0.0
        } else if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        }
    }
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let m = median(&v);
    let mut dev: Vec<f64> = v.iter().map(|x| (x - m).abs()).collect();
    dev.sort_by(f64::total_cmp);
    (m, median(&dev))
}

/// Novelty = 1 − cos(embedding, category centroid without this idea), in [0, 1];
/// 1 when the category has no centroid yet.
pub fn novelty(cos_to_centroid: Option<f64>) -> f64 {
    cos_to_centroid.map_or(1.0, |c| unit(1.0 - c))
}

/// Share of an idea's topics among its category's most frequent topics.
pub fn hashtag_cohesion(topics: &[String], top_topics: &[String]) -> f64 {
    if topics.is_empty() {
        return 0.0;
    }
    let hits = topics.iter().filter(|t| top_topics.contains(t)).count();
    hits as f64 / topics.len() as f64
}

/// [`hashtag_cohesion`] against top topics sorted by name
/// ([`crate::topic_counts::TopicCounts::top_set_with_generation`]): the same
/// share, found by binary search (it runs for every live idea whenever its
/// category's top set changed).
pub fn hashtag_cohesion_sorted(topics: &[String], sorted_top: &[String]) -> f64 {
    if topics.is_empty() {
        return 0.0;
    }
    let hits = topics
        .iter()
        .filter(|t| sorted_top.binary_search(t).is_ok())
        .count();
    hits as f64 / topics.len() as f64
}

/// CommunityFit = mean(max(0, cos(embedding, community centroid)), hashtag cohesion);
/// a community without a centroid contributes 0.
pub fn community_fit(cos_to_community: Option<f64>, cohesion: f64) -> f64 {
    let c = cos_to_community.map_or(0.0, |c| c.max(0.0));
    unit((unit(c) + unit(cohesion)) / 2.0)
}

/// Seasonality = 1 within ±7 days of the nearest calendar event, else
/// exp(−(d − 7) / 7); 0 when there is no event at all.
pub fn seasonality(days_to_nearest_event: Option<f64>, p: &ScoringParams) -> f64 {
    match days_to_nearest_event {
        None => 0.0,
        Some(d) => {
            let d = d.abs();
            if d <= p.season_window_days {
                1.0
            } else {
                unit((-(d - p.season_window_days) / p.season_decay_days).exp())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formulas_at_known_points() {
        let p = ScoringParams::default();
        assert!((freshness(24.0, &p) - 0.5).abs() < 1e-12);
        assert!((freshness(0.0, &p) - 1.0 / (1.0 + (-4.0f64).exp())).abs() < 1e-12);
        assert_eq!(seasonality(Some(3.0), &p), 1.0);
        assert!((seasonality(Some(14.0), &p) - (-1.0f64).exp()).abs() < 1e-12);
        assert_eq!(novelty(None), 1.0);
        assert!((engagement(5.0, 5.0, 1.0, &p) - 0.5).abs() < 1e-12);
        let e = Engagement {
            views: 100,
            likes: 20,
            comments: 0,
            shares: 0,
        };
        assert_eq!(engagement_rate(&e, None, &p), 2.0);
        assert_eq!(engagement_rate(&e, Some(0.2), &p), 120.0);
        assert_eq!(median_mad(&[1.0, 2.0, 3.0, 4.0, 100.0]), (3.0, 1.0));
        assert_eq!(
            hashtag_cohesion(&["a".into(), "b".into()], &["b".into()]),
            0.5
        );
    }

    proptest! {
        #[test]
        fn cohesion_by_binary_search_is_the_same_share(
            topics in proptest::collection::vec("[a-e]{1,2}", 0..6),
            top in proptest::collection::vec("[a-e]{1,2}", 0..8),
        ) {
            let mut sorted = top.clone();
            sorted.sort_unstable();
            prop_assert_eq!(
                hashtag_cohesion(&topics, &top).to_bits(),
                hashtag_cohesion_sorted(&topics, &sorted).to_bits()
            );
        }

        #[test]
        fn every_factor_is_in_unit_range(h in -1e6f64..1e6, r in -1e9f64..1e9, m in -1e9f64..1e9, mad in 0f64..1e9,
                                         c in proptest::option::of(-1.0f64..1.0), coh in 0f64..1.0, d in proptest::option::of(-1e4f64..1e4)) {
            let p = ScoringParams::default();
            for f in [freshness(h, &p), engagement(r, m, mad, &p), novelty(c), community_fit(c, coh), seasonality(d, &p)] {
                prop_assert!((0.0..=1.0).contains(&f), "{f}");
            }
        }

        #[test]
        fn freshness_never_increases_with_age(a in -1e4f64..1e4, b in -1e4f64..1e4) {
            let p = ScoringParams::default();
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(freshness(lo, &p) >= freshness(hi, &p));
        }

        #[test]
        fn seasonality_is_one_inside_the_window(d in -7.0f64..=7.0) {
            prop_assert_eq!(seasonality(Some(d), &ScoringParams::default()), 1.0);
        }

        #[test]
        fn score_is_the_weighted_sum(f in proptest::array::uniform5(0f64..=1.0), w in proptest::array::uniform5(0f64..10.0)) {
            let factors = Factors { freshness: f[0], engagement: f[1], novelty: f[2], community_fit: f[3], seasonality: f[4] };
            let weights = Weights::from_array(w);
            let sum: f64 = w.iter().sum();
            let expected: f64 = if sum > 0.0 {
                f.iter().zip(w).map(|(f, w)| f * w / sum).sum()
            } else {
                f.iter().sum::<f64>() / 5.0
            };
            let s = factors.score(&weights);
            prop_assert!((s - expected).abs() < 1e-12);
            prop_assert!((0.0..=1.0 + 1e-12).contains(&s));
        }
    }
}
