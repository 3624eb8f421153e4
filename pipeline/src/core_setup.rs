//! Everything the idea state needs at start: labels (category anchors and the
//! seed's classifier, embedded once), the LSH hyperplanes, the calendar and
//! the dedupe, window and scoring settings.

use std::sync::Arc;

use anyhow::{Context, Result};
use ideaflow_operators::calendar::Calendar;
use ideaflow_operators::dedupe::LshIndex;
use ideaflow_operators::embed::Embedder;
use ideaflow_operators::feedback::{FeedbackParams, FeedbackState};
use ideaflow_operators::idea_state::{DedupeParams, IdeaState, Labels, WindowParams};
use ideaflow_operators::score::ScoringParams;

use crate::commands::classify::{build_categories, build_classes};
use crate::config::Config;
use crate::dataflow::idea_state::PrepareContext;

pub struct CoreSetup {
    pub prepare: Arc<PrepareContext>,
    pub dedupe: DedupeParams,
    pub windows: WindowParams,
    pub scoring: ScoringParams,
    pub calendar: Calendar,
    pub feedback: FeedbackParams,
    pub epoch_secs: u64,
}

impl CoreSetup {
    pub fn build(config: &Config, embedder: &mut Embedder) -> Result<CoreSetup> {
        let labels = Arc::new(labels(config, embedder)?);
        // The anchors were the startup's only products; workers that embed
        // later get buffers again when they first need them.
        crate::blas::release_buffers();
        let calendar = load_calendar(config)?;
        Ok(CoreSetup {
            prepare: Arc::new(PrepareContext {
                lsh: LshIndex::new(config.dedupe.lsh()),
                labels,
                scoring: config.scoring.clone(),
            }),
            dedupe: config.dedupe.clone(),
            windows: config.windows.clone(),
            scoring: config.scoring.clone(),
            calendar,
            feedback: config.feedback.clone(),
            epoch_secs: config.pipeline.epoch_secs,
        })
    }

    /// A fresh idea state (worker 0 owns the only one).
    pub fn state(&self) -> IdeaState {
        IdeaState::new(
            self.dedupe.clone(),
            self.windows.clone(),
            self.scoring.clone(),
            self.calendar.clone(),
        )
    }

    /// A fresh feedback state, its prior the configured weights.
    pub fn feedback_state(&self) -> FeedbackState {
        let state = FeedbackState::new(self.feedback.clone(), self.scoring.weights)
            .with_weights_delay(self.epoch_secs as i64)
            .with_event_id_horizon(self.dedupe.event_id_horizon_secs);
        match &self.labels().classifier {
            Some(c) => state.with_anchors(c.anchors()),
            None => state,
        }
    }

    pub fn labels(&self) -> &Labels {
        &self.prepare.labels
    }
}

/// The categories and anchor classes ideas get (`classify.mode`).
pub fn labels(config: &Config, embedder: &mut Embedder) -> Result<Labels> {
    let mode = config.classify.mode;
    Ok(Labels {
        categories: build_categories(config, embedder, mode)?,
        classifier: if config.classifier.anchors.is_empty() {
            None
        } else {
            Some(build_classes(config, embedder, mode)?)
        },
    })
}

pub fn load_calendar(config: &Config) -> Result<Calendar> {
    let path = &config.calendar.path;
    if path.as_os_str().is_empty() {
        return Ok(Calendar::default());
    }
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "cannot read the calendar {}: set [calendar] path to an existing CSV, or to \"\" for none",
            path.display()
        )
    })?;
    Calendar::parse_csv(&bytes).with_context(|| format!("calendar {} is invalid", path.display()))
}
