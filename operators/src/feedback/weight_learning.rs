//! Online re-estimation of the five scoring weights from marketplace feedback
//! (seed 004: "online update of scoring weights").
//!
//! Model: an idea's CTR in a window is proportional to its score,
//! `ctr ≈ β · factors` with β ≥ 0, and the weights are β normalized to sum 1.
//! Each window solves the impression-weighted least squares problem
//!
//!   min_β≥0  Σᵢ nᵢ (ctrᵢ − β·fᵢ)² / Σᵢ nᵢ  +  λ ‖β − c·w_prior‖²
//!
//! by cyclic coordinate descent (5 unknowns: exact and deterministic), where
//! `c` scales the prior to the observed CTR level, so that λ pulls toward the
//! configured weights whatever the CTR scale. The new weights then move at
//! most `max_step` per factor from the current ones.

use serde::{Deserialize, Serialize};

use crate::score::{Factors, Weights};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LearningParams {
    /// Turns learning off: scores keep the configured weights.
    pub enabled: bool,
    /// λ: the pull toward the configured weights (0 = none).
    pub prior_strength: f64,
    /// The largest change of any one weight per window.
    pub max_step: f64,
    /// Windows with fewer ideas with impressions leave the weights alone.
    pub min_ideas: usize,
}

impl Default for LearningParams {
    fn default() -> Self {
        LearningParams {
            enabled: true,
            prior_strength: 0.01,
            max_step: 0.05,
            min_ideas: 5,
        }
    }
}

/// One idea's evidence in a window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    pub factors: Factors,
    pub impressions: u64,
    pub clicks: u64,
}

fn x(f: &Factors) -> [f64; 5] {
    [
        f.freshness,
        f.engagement,
        f.novelty,
        f.community_fit,
        f.seasonality,
    ]
}

/// The unconstrained-step estimate: normalized β. `None` when the window has
/// too little evidence (fewer than `min_ideas` ideas, or no clicks at all).
pub fn estimate(obs: &[Observation], prior: &Weights, params: &LearningParams) -> Option<Weights> {
    let used: Vec<&Observation> = obs.iter().filter(|o| o.impressions > 0).collect();
    if used.len() < params.min_ideas.max(1) {
        return None;
    }
    let total: f64 = used.iter().map(|o| o.impressions as f64).sum();
    let mut a = [[0.0f64; 5]; 5];
    let mut b = [0.0f64; 5];
    let w0 = prior.normalized().as_array();
    let (mut num, mut den) = (0.0, 0.0);
    for o in &used {
        let n = o.impressions as f64 / total;
        let y = o.clicks.min(o.impressions) as f64 / o.impressions as f64;
        let xi = x(&o.factors);
        for j in 0..5 {
            b[j] += n * xi[j] * y;
            for k in 0..5 {
                a[j][k] += n * xi[j] * xi[k];
            }
        }
        let s: f64 = (0..5).map(|j| w0[j] * xi[j]).sum();
        num += n * s * y;
        den += n * s * s;
    }
    if num <= 0.0 {
        return None;
    }
    let c = num / den.max(1e-12);
    let lambda = params.prior_strength.max(0.0);
    for j in 0..5 {
        a[j][j] += lambda;
        b[j] += lambda * c * w0[j];
    }
    let mut beta: [f64; 5] = std::array::from_fn(|j| c * w0[j]);
    for _ in 0..500 {
        let mut moved = 0.0f64;
        for j in 0..5 {
            if a[j][j] <= 0.0 {
                continue;
            }
            let rest: f64 = (0..5).filter(|&k| k != j).map(|k| a[j][k] * beta[k]).sum();
            let next = ((b[j] - rest) / a[j][j]).max(0.0);
            moved = moved.max((next - beta[j]).abs());
            beta[j] = next;
        }
        if moved < 1e-14 {
            break;
        }
    }
    let sum: f64 = beta.iter().sum();
    (sum > 0.0).then(|| Weights::from_array(beta.map(|v| v / sum)))
}

/// `current` moved toward `target` along the straight line between them, by
/// at most `max_step` in any weight. Both sum to 1, so every point between
/// them does too, and none is negative.
pub fn step_toward(current: &Weights, target: &Weights, max_step: f64) -> Weights {
    let c = current.normalized().as_array();
    let t = target.normalized().as_array();
    let largest = (0..5).map(|j| (t[j] - c[j]).abs()).fold(0.0, f64::max);
    let k = if largest <= max_step {
        1.0
    } else {
        max_step / largest
    };
    Weights::from_array(std::array::from_fn(|j| c[j] + k * (t[j] - c[j])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// CTR generated from the factors with known weights, clicks drawn
    /// binomially from 2,000 impressions per idea.
    fn generated(truth: &Weights, ideas: usize, seed: u64) -> Vec<Observation> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let t = truth.normalized().as_array();
        (0..ideas)
            .map(|_| {
                let f: [f64; 5] = std::array::from_fn(|_| rng.random_range(0.0..1.0));
                let ctr = 0.08 * (0..5).map(|j| t[j] * f[j]).sum::<f64>();
                let impressions = 2000u64;
                let clicks = (0..impressions).filter(|_| rng.random_bool(ctr)).count() as u64;
                Observation {
                    factors: Factors {
                        freshness: f[0],
                        engagement: f[1],
                        novelty: f[2],
                        community_fit: f[3],
                        seasonality: f[4],
                    },
                    impressions,
                    clicks,
                }
            })
            .collect()
    }

    /// The stated tolerance: every weight within 0.05 of the generating one.
    const TOLERANCE: f64 = 0.05;

    #[test]
    fn recovers_the_generating_weights() {
        let truth = Weights {
            freshness: 0.4,
            engagement: 0.3,
            novelty: 0.05,
            community_fit: 0.2,
            seasonality: 0.05,
        };
        let prior = Weights::default();
        let got = estimate(
            &generated(&truth, 600, 1),
            &prior,
            &LearningParams::default(),
        )
        .expect("enough evidence");
        for (g, t) in got.as_array().iter().zip(truth.as_array()) {
            assert!(
                (g - t).abs() < TOLERANCE,
                "learned {got:?}, truth {truth:?}"
            );
        }
    }

    #[test]
    fn bounded_steps_converge_over_windows() {
        let truth = Weights {
            freshness: 0.1,
            engagement: 0.5,
            novelty: 0.1,
            community_fit: 0.1,
            seasonality: 0.2,
        };
        let params = LearningParams::default();
        let mut w = Weights::default().normalized();
        for window in 0..20 {
            let target = estimate(&generated(&truth, 300, window), &w, &params).unwrap();
            let next = step_toward(&w, &target, params.max_step);
            for (a, b) in next.as_array().iter().zip(w.as_array()) {
                assert!((a - b).abs() <= params.max_step + 1e-9);
            }
            w = next;
        }
        for (g, t) in w.as_array().iter().zip(truth.as_array()) {
            assert!((g - t).abs() < TOLERANCE, "learned {w:?}, truth {truth:?}");
        }
    }

    #[test]
    fn too_little_evidence_changes_nothing() {
        let obs = generated(&Weights::default(), 3, 2);
        assert!(estimate(&obs, &Weights::default(), &LearningParams::default()).is_none());
    }
}
