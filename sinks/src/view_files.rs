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

/// Rows encoded by one thread at a time: enough that a thread's start is
/// paid for, few enough that a round's lines stay small in memory (an idea's
/// line, its vector included, is ~6 KB).
const ROWS_PER_PART: usize = 1024;

/// The file a row goes to (its index in [`VIEW_FILES`]), if it has one.
fn file_of(row: &ViewRow) -> Option<usize> {
    Some(match row {
        ViewRow::Idea(_) => 0,
        ViewRow::Signal(_) => 1,
        ViewRow::Centroid(_) => 2,
        ViewRow::TopicCount(_) => 3,
        ViewRow::DistinctCount(_) => 4,
        ViewRow::Window(_) => 5,
        ViewRow::AbResult(_) => 6,
        ViewRow::Allocation(_) => 7,
        ViewRow::Weights(_) => 8,
        ViewRow::Publish(_) => 9,
        ViewRow::SlaAlert(_) => 10,
        ViewRow::Anchor(_) => 11,
        ViewRow::Score(_) | ViewRow::DeadLetter(..) => return None,
    })
}

/// Appends `row`'s JSON line to `out`.
fn encode(state: &ViewState, row: &ViewRow, out: &mut Vec<u8>) -> serde_json::Result<()> {
    match row {
        ViewRow::Idea(i) => serde_json::to_writer(&mut *out, &IdeaWithScore::new(state, i)),
        ViewRow::Signal(s) => serde_json::to_writer(&mut *out, s),
        ViewRow::Centroid(c) => serde_json::to_writer(&mut *out, c),
        ViewRow::TopicCount(t) => serde_json::to_writer(&mut *out, t),
        ViewRow::DistinctCount(d) => serde_json::to_writer(&mut *out, d),
        ViewRow::Window(w) => serde_json::to_writer(&mut *out, w),
        ViewRow::AbResult(r) => serde_json::to_writer(&mut *out, r),
        ViewRow::Allocation(a) => serde_json::to_writer(&mut *out, a),
        ViewRow::Weights(w) => serde_json::to_writer(&mut *out, w),
        ViewRow::Publish(p) => serde_json::to_writer(&mut *out, p),
        ViewRow::SlaAlert(a) => serde_json::to_writer(&mut *out, a),
        ViewRow::Anchor(a) => serde_json::to_writer(&mut *out, a),
        ViewRow::Score(_) | ViewRow::DeadLetter(..) => return Ok(()),
    }?;
    out.push(b'\n');
    Ok(())
}

/// A part's lines, as runs of consecutive lines bound for one file: the
/// file, how many lines, their bytes.
type Encoded = Vec<(usize, u64, Vec<u8>)>;

fn encode_part(state: &ViewState, rows: &[&ViewRow]) -> serde_json::Result<Encoded> {
    let mut runs: Encoded = Vec::new();
    for row in rows {
        let Some(file) = file_of(row) else { continue };
        if runs.last().is_none_or(|(f, ..)| *f != file) {
            runs.push((file, 0, Vec::new()));
        }
        let (_, lines, bytes) = runs.last_mut().expect("just pushed");
        encode(state, row, bytes)?;
        *lines += 1;
    }
    Ok(runs)
}

/// Writes every view's file. A replay's views run to a gigabyte of JSON
/// (each idea's vector as text), written once the dataflow is done: the rows
/// are encoded on every core, a round of parts at a time, and written in
/// key order, so the files are the same whatever the core count.
pub fn write_views(state: &ViewState, dir: &Path) -> Result<(), JsonlError> {
    let mut files = VIEW_FILES
        .iter()
        .map(|f| JsonlWriter::create(&dir.join(f)))
        .collect::<Result<Vec<_>, _>>()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rows: Vec<&ViewRow> = state.rows().collect();
    for round in rows.chunks(ROWS_PER_PART * threads) {
        let parts: Vec<serde_json::Result<Encoded>> = if threads == 1 {
            vec![encode_part(state, round)]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = round
                    .chunks(ROWS_PER_PART)
                    .map(|part| s.spawn(move || encode_part(state, part)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                    .collect()
            })
        };
        for part in parts {
            for (file, lines, bytes) in part? {
                files[file].write_encoded(&bytes, lines)?;
            }
        }
    }
    for f in &mut files {
        f.flush()?;
    }
    Ok(())
}
