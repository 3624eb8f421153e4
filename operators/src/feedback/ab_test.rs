//! A/B micro-tests (seed 004: "A/B micro-tests ... measure CTR"): the
//! two-proportion z-test on click-through rates.

use serde::{Deserialize, Serialize};

/// Clicks out of impressions for one variant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trials {
    pub impressions: u64,
    pub clicks: u64,
}

impl Trials {
    pub fn ctr(&self) -> f64 {
        if self.impressions == 0 {
            0.0
        } else {
            self.clicks.min(self.impressions) as f64 / self.impressions as f64
        }
    }
}

/// The outcome of comparing a treatment's CTR with a control's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ZTest {
    /// Positive when the treatment's CTR is higher.
    pub z: f64,
    /// Two-sided.
    pub p_value: f64,
    /// treatment CTR / control CTR − 1; `None` while the control has no clicks.
    pub lift: Option<f64>,
}

/// The pooled two-proportion z-test. With no variance (no impressions, or
/// every impression clicked or none), z is 0 and p is 1: no evidence.
pub fn two_proportion_z(control: Trials, treatment: Trials) -> ZTest {
    let (n1, n2) = (control.impressions as f64, treatment.impressions as f64);
    let (p1, p2) = (control.ctr(), treatment.ctr());
    let lift = (p1 > 0.0).then(|| p2 / p1 - 1.0);
    if n1 == 0.0 || n2 == 0.0 {
        return ZTest {
            z: 0.0,
            p_value: 1.0,
            lift,
        };
    }
    let pooled = (p1 * n1 + p2 * n2) / (n1 + n2);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if se <= 0.0 || !se.is_finite() {
        return ZTest {
            z: 0.0,
            p_value: 1.0,
            lift,
        };
    }
    let z = (p2 - p1) / se;
    // P(|Z| > |z|) = erfc(|z| / √2).
    let p_value = libm::erfc(z.abs() / std::f64::consts::SQRT_2).clamp(0.0, 1.0);
    ZTest { z, p_value, lift }
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
    fn matches_a_hand_computed_test() {
        // 2000 impressions each, 40 vs 70 clicks: pooled 0.0275,
        // se = sqrt(0.0275 · 0.9725 · 2/2000) = 0.0051715, z = 0.015 / se = 2.9005,
        // p = 2 · (1 − Φ(2.9005)) = 0.003725.
        let r = two_proportion_z(t(2000, 40), t(2000, 70));
        assert!((r.z - 2.9005).abs() < 1e-3, "{r:?}");
        assert!((r.p_value - 0.003725).abs() < 1e-5, "{r:?}");
        assert!((r.lift.unwrap() - 0.75).abs() < 1e-12);
    }

    #[test]
    fn no_data_is_no_evidence() {
        assert_eq!(two_proportion_z(t(0, 0), t(10, 5)).p_value, 1.0);
        assert_eq!(two_proportion_z(t(10, 0), t(10, 0)).p_value, 1.0);
        assert_eq!(two_proportion_z(t(10, 0), t(10, 1)).lift, None);
    }

    #[test]
    fn symmetric() {
        let a = two_proportion_z(t(500, 20), t(700, 45));
        let b = two_proportion_z(t(700, 45), t(500, 20));
        assert!((a.z + b.z).abs() < 1e-12 && (a.p_value - b.p_value).abs() < 1e-12);
    }
}
