//! Writes the final state of every view as JSON Lines, one file per view,
//! sorted by key, so that two runs can be compared with `diff`:
//! `ideas.jsonl` (with factors and score), `signals.jsonl`, `centroids.jsonl`,
//! `topic_counts.jsonl`, `distinct_counts.jsonl`, and the feedback loop's
//! `windows.jsonl`, `ab_results.jsonl`, `allocations.jsonl`,
//! `weights_history.jsonl`, `publish_latencies.jsonl`, `sla_alerts.jsonl`, `anchors_history.jsonl`. (Dead letters raised inside the dataflow are
//! the caller's: they join the source's in `dead_letters.jsonl`.)

use std::path::Path;

use chrono::{DateTime, Utc};
use ideaflow_operators::score::Factors;
use ideaflow_operators::views::IdeaRow;
use ideaflow_operators::views::{ViewRow, ViewState};
use serde::Serialize;

use crate::jsonl::{JsonlError, JsonlWriter};

/// The file names, in the order the views sort.
pub const VIEW_FILES: [&str; 12] = [
    "ideas.jsonl",
    "signals.jsonl",
    "centroids.jsonl",
    "topic_counts.jsonl",
    "distinct_counts.jsonl",
    "windows.jsonl",
    "ab_results.jsonl",
    "allocations.jsonl",
    "weights_history.jsonl",
    "publish_latencies.jsonl",
    "sla_alerts.jsonl",
    "anchors_history.jsonl",
];

/// An idea row with its score's fields beside it (what analysts read).
#[derive(Serialize)]
pub struct IdeaWithScore<'a> {
    #[serde(flatten)]
    pub idea: &'a IdeaRow,
    pub factors: Option<&'a Factors>,
    pub score: Option<f64>,
    pub scored_at: Option<DateTime<Utc>>,
}

impl<'a> IdeaWithScore<'a> {
    pub fn new(state: &'a ViewState, idea: &'a IdeaRow) -> Self {
        let score = state.score(idea.id);
        IdeaWithScore {
            idea,
            factors: score.map(|s| &s.factors),
            score: score.map(|s| s.score),
            scored_at: score.map(|s| s.scored_at),
        }
    }
}

pub fn write_views(state: &ViewState, dir: &Path) -> Result<(), JsonlError> {
    let mut files = VIEW_FILES
        .iter()
        .map(|f| JsonlWriter::create(&dir.join(f)))
        .collect::<Result<Vec<_>, _>>()?;
    for row in state.rows() {
        match row {
            ViewRow::Idea(i) => files[0].write(&IdeaWithScore::new(state, i))?,
            ViewRow::Score(_) => {}
            ViewRow::Signal(s) => files[1].write(s)?,
            ViewRow::Centroid(c) => files[2].write(c)?,
            ViewRow::TopicCount(t) => files[3].write(t)?,
            ViewRow::DistinctCount(d) => files[4].write(d)?,
            ViewRow::Window(w) => files[5].write(w)?,
            ViewRow::AbResult(r) => files[6].write(r)?,
            ViewRow::Allocation(a) => files[7].write(a)?,
            ViewRow::Weights(w) => files[8].write(w)?,
            ViewRow::Publish(p) => files[9].write(p)?,
            ViewRow::SlaAlert(a) => files[10].write(a)?,
            ViewRow::Anchor(a) => files[11].write(a)?,
            ViewRow::DeadLetter(..) => {}
        }
    }
    for f in &mut files {
        f.flush()?;
    }
    Ok(())
}
