//! Distinct counts of signals, ideas and communities per source per tumbling
//! event-time window, estimated with HyperLogLog (the `hyperloglog` crate).
//! The sketches use a fixed seed, so every run estimates the same numbers.

use std::collections::{BTreeMap, BTreeSet};

use hyperloglog::HyperLogLog;

use crate::Source;

/// hyperloglog 1.0 sizes its registers as 2^ceil(ln((1.04/e)²)) (a natural
/// log where the algorithm needs log2), which gives ~3x the requested error.
/// This returns the `e` to pass so that the sketch gets the 2^ceil(log2((1.04/
/// target)²)) registers the target error needs (e.g. 0.01 → 16384 registers,
/// standard error 0.8%).
fn crate_error_rate(target: f64) -> f64 {
    let sr = 1.04 / target;
    let p = (sr * sr).log2().ceil();
    1.04 / ((p - 0.5) / 2.0).exp()
}

/// Fixed so that estimates are reproducible; changing it changes every estimate.
const SEED: u128 = 0x1dea_f10e_d157_1ac7_0000_0000_0000_0001;

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Sketches {
    signals: HyperLogLog,
    ideas: HyperLogLog,
    communities: HyperLogLog,
}

/// The estimates of one source's window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DistinctEstimate {
    pub window_start: i64,
    pub window_end: i64,
    pub signals: u64,
    pub ideas: u64,
    pub communities: u64,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct DistinctCounts {
    window_secs: i64,
    error_rate: f64,
    windows: BTreeMap<(Source, i64), Sketches>,
    changed: BTreeSet<(Source, i64)>,
}

impl DistinctCounts {
    pub fn new(window_secs: i64, error_rate: f64) -> Self {
        DistinctCounts {
            window_secs: window_secs.max(1),
            error_rate: error_rate.clamp(0.001, 0.3),
            windows: BTreeMap::new(),
            changed: BTreeSet::new(),
        }
    }

    pub fn record(
        &mut self,
        source: Source,
        time: i64,
        signal: &str,
        idea: &str,
        community: Option<&str>,
    ) {
        let start = time.div_euclid(self.window_secs) * self.window_secs;
        let e = crate_error_rate(self.error_rate);
        let s = self
            .windows
            .entry((source, start))
            .or_insert_with(|| Sketches {
                signals: HyperLogLog::new_deterministic(e, SEED),
                ideas: HyperLogLog::new_deterministic(e, SEED),
                communities: HyperLogLog::new_deterministic(e, SEED),
            });
        s.signals.insert(&signal);
        s.ideas.insert(&idea);
        if let Some(c) = community {
            s.communities.insert(&c);
        }
        self.changed.insert((source, start));
    }

    /// Forgets sketches of windows that ended at or before `before` (their
    /// last estimates stay in the view).
    pub fn close(&mut self, before: i64) {
        let w = self.window_secs;
        self.windows.retain(|(_, start), _| start + w > before);
    }

    /// Estimates of the windows that changed since the last call, sorted.
    pub fn take_changed(&mut self) -> Vec<(Source, DistinctEstimate)> {
        let changed = std::mem::take(&mut self.changed);
        changed
            .into_iter()
            .filter_map(|(source, start)| {
                let s = self.windows.get(&(source, start))?;
                Some((
                    source,
                    DistinctEstimate {
                        window_start: start,
                        window_end: start + self.window_secs,
                        signals: s.signals.len().round() as u64,
                        ideas: s.ideas.len().round() as u64,
                        communities: s.communities.len().round() as u64,
                    },
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_match_the_target_error() {
        // 2^14 registers: sized for 0.8%, and the crate computes the same p.
        let p = ((1.04f64 / 0.01).powi(2)).log2().ceil();
        assert_eq!(p, 14.0);
        let sr = 1.04 / crate_error_rate(0.01);
        assert_eq!((sr * sr).ln().ceil(), 14.0);
    }

    #[test]
    fn estimates_are_close_and_reproducible() {
        let run = || {
            let mut d = DistinctCounts::new(86_400, 0.01);
            for i in 0..20_000 {
                let idea = format!("idea-{}", i / 4);
                let community = format!("r/{}", i % 37);
                d.record(
                    Source::Reddit,
                    100,
                    &format!("s{i}"),
                    &idea,
                    Some(&community),
                );
            }
            d.take_changed()
        };
        let a = run();
        assert_eq!(a, run());
        let (_, e) = a[0];
        // 3 standard errors (0.8% each).
        assert!((e.signals as f64 - 20_000.0).abs() < 500.0, "{e:?}");
        assert!((e.ideas as f64 - 5_000.0).abs() < 125.0, "{e:?}");
        assert!((36..=38).contains(&e.communities), "{e:?}");
        assert_eq!((e.window_start, e.window_end), (0, 86_400));
    }
}
