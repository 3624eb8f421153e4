//! The rows of the feedback views: windows, A/B results, allocations,
//! weights, time to publish and SLA alerts, with the counters they hold.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ab_test::Trials;
use crate::score::Weights;
use crate::views::ViewKey;

/// Marketplace counters (increments add up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub impressions: u64,
    pub clicks: u64,
    pub favorites: u64,
    pub add_to_cart: u64,
    pub sales: u64,
}

impl Counts {
    pub(super) fn add(&mut self, o: &Counts) {
        self.impressions += o.impressions;
        self.clicks += o.clicks;
        self.favorites += o.favorites;
        self.add_to_cart += o.add_to_cart;
        self.sales += o.sales;
    }

    pub(super) fn trials(&self) -> Trials {
        Trials {
            impressions: self.impressions,
            clicks: self.clicks,
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowKind {
    Hour,
    Day,
    #[serde(rename = "7d")]
    Week,
}

impl WindowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WindowKind::Hour => "hour",
            WindowKind::Day => "day",
            WindowKind::Week => "7d",
        }
    }
}

/// One variant of one idea on one marketplace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Arm {
    pub idea_id: String,
    pub marketplace: String,
    pub variant: String,
}

/// A window's counters and rates for one arm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowRow {
    pub kind: WindowKind,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub idea_id: String,
    pub marketplace: String,
    pub variant: String,
    #[serde(flatten)]
    pub counts: Counts,
    /// clicks / impressions.
    pub ctr: f64,
    /// add_to_cart / clicks.
    pub add_to_cart_rate: f64,
    /// sales / clicks.
    pub conversion: f64,
}

impl WindowRow {
    /// The row of `arm`'s window `[start, end)` holding `counts`, with its rates.
    pub fn new(
        kind: WindowKind,
        (window_start, window_end): (DateTime<Utc>, DateTime<Utc>),
        arm: Arm,
        counts: Counts,
    ) -> Self {
        WindowRow {
            kind,
            window_start,
            window_end,
            idea_id: arm.idea_id,
            marketplace: arm.marketplace,
            variant: arm.variant,
            ctr: ratio(counts.clicks, counts.impressions),
            add_to_cart_rate: ratio(counts.add_to_cart, counts.clicks),
            conversion: ratio(counts.sales, counts.clicks),
            counts,
        }
    }
}

/// A treatment variant against the control on one 7-day window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AbResultRow {
    pub idea_id: String,
    pub marketplace: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub control: String,
    pub treatment: String,
    pub control_impressions: u64,
    pub control_clicks: u64,
    pub treatment_impressions: u64,
    pub treatment_clicks: u64,
    pub control_ctr: f64,
    pub treatment_ctr: f64,
    /// treatment CTR / control CTR − 1 (absent while the control has no clicks).
    pub lift: Option<f64>,
    pub z: f64,
    pub p_value: f64,
    /// Both variants reached `ab_min_impressions`.
    pub sample_sufficient: bool,
    /// The better variant, when the sample suffices and p < `ab_alpha`.
    pub winner: Option<String>,
}

/// One variant's share of an idea's promotion budget for one day.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AllocationRow {
    /// The day the budget is for (the 7-day posterior ends where it starts).
    pub day_start: DateTime<Utc>,
    pub idea_id: String,
    pub marketplace: String,
    pub variant: String,
    pub share: f64,
    pub budget: f64,
    pub draws: u32,
}

/// The scoring weights in force from `effective_from` on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightsRow {
    /// The first score computed with these weights is at or after this.
    pub effective_from: DateTime<Utc>,
    /// Start of the day of feedback they were learned from.
    pub learned_from: DateTime<Utc>,
    #[serde(flatten)]
    pub weights: Weights,
    /// `configured` (the prior) or `learned`.
    pub origin: String,
    /// Ideas with impressions in the window the weights were learned from.
    pub ideas: u64,
    pub impressions: u64,
}

/// One listing's time to publish: its idea's first signal to the listing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublishRow {
    pub idea_id: String,
    pub marketplace: String,
    pub variant: String,
    pub listing_id: String,
    pub first_seen: DateTime<Utc>,
    pub published_at: DateTime<Utc>,
    pub seconds: f64,
}

/// The time-to-publish SLA was breached (seed 004 §7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlaAlertRow {
    /// The listing whose arrival pushed the average over the threshold.
    pub at: DateTime<Utc>,
    pub average_hours: f64,
    pub threshold_hours: f64,
    /// Listings in the window the average is over.
    pub listings: u64,
    pub window_secs: i64,
}

/// The keys of the feedback views.
pub fn window_key(r: &WindowRow) -> ViewKey {
    ViewKey::Window(Box::new((
        r.kind,
        r.window_start.timestamp(),
        r.idea_id.clone(),
        r.marketplace.clone(),
        r.variant.clone(),
    )))
}
