//! What `run` starts from: the newest usable checkpoint, or nothing (the
//! state is rebuilt from the inputs, and the sinks emptied first).

use std::path::Path;

use ideaflow_operators::feedback::FeedbackState;
use ideaflow_operators::idea_state::IdeaState;
use ideaflow_operators::rejection::RejectReason;
use ideaflow_sinks::{DeadLetterSink, JsonlWriter};

use super::capture::Resumed;
use super::format::{Body, Header};
use super::store::Store;
use crate::config::Config;
use crate::core_setup::CoreSetup;

/// Why checkpoints cannot be used with these inputs at all (`None`: they can).
pub fn unusable_inputs(config: &Config) -> Option<&'static str> {
    config
        .pipeline
        .inputs
        .iter()
        .any(|i| i == "-")
        .then_some("standard input cannot be read again after a restart")
}

/// The newest checkpoint in `store` that is whole, of this format, taken
/// with these inputs and settings, and whose output files are still there;
/// every newer one is logged with the reason it was passed over.
pub fn newest(
    config: &Config,
    core: &CoreSetup,
    store: &Store,
    fingerprint: &str,
) -> std::io::Result<Option<Resumed>> {
    let (found, passed) = store.newest_usable(fingerprint, |header, body| {
        resume(config, core, header, body)
    })?;
    for p in &passed {
        tracing::warn!(
            checkpoint = %p.path.display(),
            reason = %p.reason,
            "checkpoint not used"
        );
    }
    Ok(found.map(|(path, header, mut resumed)| {
        tracing::info!(
            checkpoint = %path.display(),
            complete_before = header.complete_before,
            live_ideas = header.counts.live_ideas,
            "resuming from a checkpoint: every epoch before it is in the state and the sinks"
        );
        resumed.path = path;
        resumed
    }))
}

fn resume(
    config: &Config,
    core: &CoreSetup,
    header: &Header,
    body: Body,
) -> Result<Resumed, String> {
    let base = core.labels().classifier.as_ref();
    let ideas = IdeaState::resume(body.ideas, core.state(), body.moved_anchors, base)
        .map_err(|e| e.to_string())?;
    let feedback = match body.feedback {
        Some(saved) => {
            Some(FeedbackState::resume(saved, &core.feedback_state()).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let run = body.run;
    let shorter = |path: &Path, needed: u64| {
        std::fs::metadata(path)
            .map(|m| m.len() < needed)
            .unwrap_or(needed > 0)
    };
    if let Some(n) = run.output_bytes {
        if shorter(&config.pipeline.output, n) {
            return Err(format!(
                "the output file {} is shorter than the {n} bytes it had then (moved or \
                 truncated?)",
                config.pipeline.output.display()
            ));
        }
    }
    if shorter(&config.pipeline.dead_letter, run.dead_letter_bytes) {
        return Err(format!(
            "the dead-letter file {} is shorter than the {} bytes it had then (moved or \
             truncated?)",
            config.pipeline.dead_letter.display(),
            run.dead_letter_bytes
        ));
    }
    Ok(Resumed {
        path: Default::default(),
        header: header.clone(),
        ideas: Some(ideas),
        feedback,
        weights_in_flight: body.weights_in_flight,
        anchors_in_flight: body.anchors_in_flight,
        run,
        file_start: 0,
    })
}

/// The dataflow's dead letters before the checkpoint, by their view key.
pub fn refused_inside(resumed: &Resumed) -> Vec<(u64, ideaflow_operators::DeadLetter)> {
    resumed
        .run
        .refused_inside
        .iter()
        .filter_map(|(n, json)| Some((*n, serde_json::from_str(json).ok()?)))
        .collect()
}

/// The output file as the checkpoint left it: cut back to its length then,
/// and appended to.
pub fn output_from(path: &Path, resumed: &Resumed) -> anyhow::Result<JsonlWriter> {
    match resumed.run.output_bytes {
        Some(len) => Ok(JsonlWriter::continue_at(path, len)?),
        None => Ok(JsonlWriter::create(path)?),
    }
}

/// The dead-letter file and its counts as the checkpoint left them.
pub fn dead_letters_from(path: &Path, resumed: &Resumed) -> anyhow::Result<DeadLetterSink> {
    let counts: std::collections::BTreeMap<RejectReason, u64> =
        serde_json::from_str(&resumed.run.dead_letters_by_reason).unwrap_or_default();
    Ok(DeadLetterSink::continue_at(
        path,
        resumed.run.dead_letter_bytes,
        counts,
    )?)
}
