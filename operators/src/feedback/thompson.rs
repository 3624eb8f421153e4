//! Thompson sampling of a promotion budget (seed 004: "Thompson Sampling
//! allocates promotion budget"). Each variant's CTR has the posterior
//! Beta(1 + clicks, 1 + impressions − clicks); the budget is split by how often
//! each variant's draw is the highest. The draws come from an RNG seeded with
//! the window and the idea, so a replay allocates exactly the same.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution};
use sha2::{Digest, Sha256};

use super::ab_test::Trials;

/// The RNG for one idea's allocation in one window.
pub fn seeded_rng(window_start: i64, idea_id: &str, marketplace: &str) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(window_start.to_le_bytes());
    h.update(idea_id.as_bytes());
    h.update([0]);
    h.update(marketplace.as_bytes());
    let digest = h.finalize();
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&digest);
    ChaCha8Rng::from_seed(seed)
}

/// Each arm's share of `draws` posterior draws won (ties to the first arm);
/// shares sum to 1. No arms, no shares.
pub fn win_shares(arms: &[Trials], draws: u32, rng: &mut ChaCha8Rng) -> Vec<f64> {
    if arms.is_empty() || draws == 0 {
        return vec![0.0; arms.len()];
    }
    let posteriors: Vec<Beta<f64>> = arms
        .iter()
        .map(|t| {
            let clicks = t.clicks.min(t.impressions) as f64;
            let misses = (t.impressions - t.clicks.min(t.impressions)) as f64;
            Beta::new(1.0 + clicks, 1.0 + misses).expect("both parameters are ≥ 1")
        })
        .collect();
    let mut wins = vec![0u32; arms.len()];
    for _ in 0..draws {
        let mut best = (0, f64::NEG_INFINITY);
        for (i, p) in posteriors.iter().enumerate() {
            let x = p.sample(rng);
            if x > best.1 {
                best = (i, x);
            }
        }
        wins[best.0] += 1;
    }
    wins.iter().map(|&w| w as f64 / draws as f64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(impressions: u64, clicks: u64) -> Trials {
        Trials {
            impressions,
            clicks,
        }
    }

    #[test]
    fn concentrates_on_the_better_arm_as_evidence_grows() {
        let few = win_shares(&[t(50, 1), t(50, 2)], 2000, &mut seeded_rng(0, "i", "m"));
        let many = win_shares(
            &[t(5000, 100), t(5000, 200)],
            2000,
            &mut seeded_rng(0, "i", "m"),
        );
        assert!(many[1] > 0.99, "{many:?}");
        assert!(few[1] < many[1] && few[1] > 0.5, "{few:?}");
        assert!((few.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn equal_evidence_splits_evenly() {
        let s = win_shares(&[t(100, 5), t(100, 5)], 4000, &mut seeded_rng(1, "i", "m"));
        assert!((s[0] - 0.5).abs() < 0.05, "{s:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_allocation() {
        let arms = [t(300, 9), t(280, 12), t(10, 0)];
        let a = win_shares(&arms, 1000, &mut seeded_rng(86400, "idea", "etsy"));
        let b = win_shares(&arms, 1000, &mut seeded_rng(86400, "idea", "etsy"));
        let c = win_shares(&arms, 1000, &mut seeded_rng(2 * 86400, "idea", "etsy"));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
