//! The per-source engagement statistics the engagement factor compares with:
//! median and MAD of the signals' engagement rates over a sliding event-time
//! window (7 days by default).
//!
//! Rates are kept in time order per source; the statistics are recomputed on
//! the scoring tick (and the first time a source is seen), with two
//! selections over the window: O(signals in the window) per source per tick,
//! nothing per record beyond an append.

use std::collections::{BTreeMap, VecDeque};

use crate::Source;

#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RateStats {
    pub median: f64,
    pub mad: f64,
    pub n: usize,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct EngagementStats {
    window_secs: i64,
    rates: BTreeMap<Source, VecDeque<(i64, f64)>>,
    stats: BTreeMap<Source, RateStats>,
    #[serde(skip)]
    scratch: Vec<f64>,
}

impl EngagementStats {
    pub fn new(window_secs: i64) -> Self {
        EngagementStats {
            window_secs: window_secs.max(1),
            rates: BTreeMap::new(),
            stats: BTreeMap::new(),
            scratch: Vec::new(),
        }
    }

    /// Records one signal's rate at its capture time (appended in processing order).
    pub fn record(&mut self, source: Source, time: i64, rate: f64) {
        if rate.is_finite() {
            self.rates
                .entry(source)
                .or_default()
                .push_back((time, rate));
        }
    }

    /// Drops rates older than the window and recomputes every source's statistics.
    pub fn refresh(&mut self, watermark: i64) {
        let cutoff = watermark - self.window_secs;
        let sources: Vec<Source> = self.rates.keys().copied().collect();
        for source in sources {
            self.refresh_source(source, cutoff);
        }
    }

    fn refresh_source(&mut self, source: Source, cutoff: i64) {
        let Some(q) = self.rates.get_mut(&source) else {
            return;
        };
        // Out-of-order times within an epoch are possible: filter, don't just pop.
        q.retain(|(t, _)| *t > cutoff);
        if q.is_empty() {
            self.rates.remove(&source);
            self.stats.remove(&source);
            return;
        }
        self.scratch.clear();
        self.scratch.extend(q.iter().map(|(_, r)| *r));
        let median = median_in_place(&mut self.scratch);
        self.scratch
            .iter_mut()
            .for_each(|x| *x = (*x - median).abs());
        let mad = median_in_place(&mut self.scratch);
        self.stats.insert(
            source,
            RateStats {
                median,
                mad,
                n: q.len(),
            },
        );
    }

    /// A copy that answers [`EngagementStats::cached`] as this one does now,
    /// without the samples (scores evaluated later against today's
    /// statistics).
    pub fn cached_only(&self) -> Self {
        EngagementStats {
            window_secs: self.window_secs,
            rates: BTreeMap::new(),
            stats: self.stats.clone(),
            scratch: Vec::new(),
        }
    }

    /// The statistics of `source` as last computed (by [`EngagementStats::get`]
    /// or a refresh); the default when there are none.
    pub fn cached(&self, source: Source) -> RateStats {
        self.stats.get(&source).copied().unwrap_or_default()
    }

    /// The statistics of `source`, computing them now if it has none yet.
    pub fn get(&mut self, source: Source, watermark: i64) -> RateStats {
        if !self.stats.contains_key(&source) {
            self.refresh_source(source, watermark - self.window_secs);
        }
        self.stats.get(&source).copied().unwrap_or_default()
    }
}

/// The median (mean of the two middle values for an even count); reorders `v`.
fn median_in_place(v: &mut [f64]) -> f64 {
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    let (_, hi, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
    let hi = *hi;
    if n % 2 == 1 {
        return hi;
    }
    let lo = v[..n / 2]
        .iter()
        .copied()
        .max_by(f64::total_cmp)
        .expect("n >= 2");
    (lo + hi) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::median_mad;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_sorting(values in proptest::collection::vec(0.0f64..1e6, 1..200)) {
            let mut s = EngagementStats::new(1_000);
            for (i, v) in values.iter().enumerate() {
                s.record(Source::Reddit, i as i64, *v);
            }
            s.refresh(500);
            let (m, mad) = median_mad(&values);
            let got = s.get(Source::Reddit, 500);
            prop_assert_eq!(got.median, m);
            prop_assert_eq!(got.mad, mad);
        }
    }

    #[test]
    fn window_slides() {
        let mut s = EngagementStats::new(10);
        s.record(Source::Tiktok, 0, 100.0);
        s.record(Source::Tiktok, 5, 1.0);
        s.record(Source::Tiktok, 12, 3.0);
        s.refresh(12);
        assert_eq!(s.get(Source::Tiktok, 12).median, 2.0);
        s.refresh(30);
        assert_eq!(s.get(Source::Tiktok, 30), RateStats::default());
    }
}
