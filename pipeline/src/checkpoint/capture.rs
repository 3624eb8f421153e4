//! Taking checkpoints from a running pipeline, and what a restart takes back.
//!
//! The source's driver (worker 0 of the leading process, which holds the
//! idea state, the feedback state and the sinks' consumer) asks for one
//! every `pipeline.checkpoint_every_secs`. It holds the input at the
//! watermark's epoch W and lets the dataflow complete every epoch before W
//! (the dataflow keeps running: this is the usual catching up), so that the
//! state is between epochs and holds exactly the epochs before W. Then, in
//! the one pause, the state is copied: its bookkeeping, not its embeddings,
//! which never change once made and are shared with the copy (at a million
//! signals the copy takes a fraction of what encoding the state takes). A
//! thread of its own encodes the copy straight into a file under a
//! temporary name, waits until the sinks have committed every epoch before
//! W (a restart takes the sinks as they are, so they must hold at least
//! what the checkpoint does) and only then renames it into place; if the
//! process dies first, the previous checkpoint stands.
//!
//! What the state does not hold is in [`RunState`]: where a restart reads
//! each source again from and how far it had been read (what it read again
//! that the checkpoint holds is skipped, which keeps the order of
//! everything after it exactly as it was), the lengths of the output and
//! dead-letter files, the top lists the sinks' events are computed against,
//! and the dead letters the dataflow refused (appended to the dead-letter
//! file when the run ends).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ideaflow_operators::classify::Classes;
use ideaflow_operators::feedback::FeedbackState;
use ideaflow_operators::idea_state::IdeaState;
use ideaflow_operators::top_k::TopK;
use ideaflow_operators::DeadLetter;
use serde::{Deserialize, Serialize};

use super::format::{self, BodyRef, Counts, Header, SourcePosition};
use super::store::Store;
use crate::dataflow::idea_state::SharedState;

/// The dead letters the dataflow refused, by their view key, as the
/// consumer saw them (shared with the checkpoints).
pub type RefusedInside = Arc<Mutex<Vec<(u64, DeadLetter)>>>;

/// The feedback state, shared between its operator and the checkpoints.
pub type SharedFeedback = Rc<RefCell<Option<FeedbackState>>>;

/// What a run needs beside the operator state to go on from a checkpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunState {
    pub read: ReadThrough,
    /// Where each source is read again from.
    pub resume: crate::dataflow::resume_points::SavedResume,
    /// Bytes of the output file (embedded signals) holding the epochs
    /// before the checkpoint's (`None`: no output file).
    pub output_bytes: Option<u64>,
    /// Bytes of the dead-letter file written by then.
    pub dead_letter_bytes: u64,
    /// Dead letters by reason written by then, as JSON (the run's counts
    /// go on from them).
    pub dead_letters_by_reason: String,
    /// The top lists the sinks' `idea.scored` events are computed against.
    pub top: Option<TopK>,
    /// The dead letters the dataflow refused (unknown ideas...), as JSON
    /// lines: the run appends them all to the dead-letter file at its end.
    pub refused_inside: Vec<(u64, String)>,
}

/// How far each source had been read: what a restart skips.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReadThrough {
    /// Items (events and refused lines) of the file chain read.
    pub file_items: u64,
    /// Per bus source (by name) and partition: the last position read.
    pub buses: Vec<(String, u32, SavedPosition)>,
}

/// A bus position in the checkpoint's (not self-describing) encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SavedPosition {
    Offset(i64),
    Entry(u64, u64),
}

impl From<ideaflow_sources::bus::BusPosition> for SavedPosition {
    fn from(p: ideaflow_sources::bus::BusPosition) -> Self {
        match p {
            ideaflow_sources::bus::BusPosition::Offset(o) => SavedPosition::Offset(o),
            ideaflow_sources::bus::BusPosition::Entry(e) => SavedPosition::Entry(e.ms, e.seq),
        }
    }
}

impl From<SavedPosition> for ideaflow_sources::bus::BusPosition {
    fn from(p: SavedPosition) -> Self {
        use ideaflow_sources::bus::{BusPosition, EntryId};
        match p {
            SavedPosition::Offset(o) => BusPosition::Offset(o),
            SavedPosition::Entry(ms, seq) => BusPosition::Entry(EntryId { ms, seq }),
        }
    }
}

impl std::fmt::Display for SavedPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SavedPosition::Offset(o) => write!(f, "offset {o}"),
            SavedPosition::Entry(ms, seq) => write!(f, "entry {ms}-{seq}"),
        }
    }
}

/// What a restart takes back from a checkpoint.
pub struct Resumed {
    pub path: std::path::PathBuf,
    pub header: Header,
    /// Resumed already (with the configuration's settings checked).
    pub ideas: Option<IdeaState>,
    pub feedback: Option<FeedbackState>,
    pub weights_in_flight: Option<ideaflow_operators::score::Weights>,
    pub anchors_in_flight: Option<Vec<ideaflow_operators::classify::Anchor>>,
    pub run: RunState,
    /// Items of the file chain its reader passed over by seeking to the
    /// resume point (set once the inputs are opened).
    pub file_start: u64,
}

impl Resumed {
    /// The idea state to go on with in the pipeline: its centroid sums
    /// handed to the (empty) collection of sums with its first epoch, and
    /// what the feedback loop had learned and not yet delivered given to it
    /// before that epoch, as the loop would have.
    pub fn take_ideas(&mut self, core: &crate::core_setup::CoreSetup) -> IdeaState {
        let mut state = self.ideas.take().unwrap_or_else(|| core.state());
        state.hand_sums_to_dataflow();
        if let Some(top) = self.run.top.take() {
            state.resume_top_lists(top);
        }
        if let Some(w) = self.weights_in_flight.take() {
            state.set_weights(w);
        }
        if let (Some(anchors), Some(base)) = (
            self.anchors_in_flight.take(),
            core.labels().classifier.as_ref(),
        ) {
            state.set_classifier(Arc::new(base.with_anchors(anchors)));
        }
        state
    }
}

/// Checkpoint settings and the parts of the run a capture reads that live
/// outside the dataflow (the dead letters, the sinks' progress).
#[derive(Clone)]
pub struct Checkpoints {
    pub store: Store,
    pub every: Duration,
    pub fingerprint: String,
    /// The dead letters the dataflow refused, as the consumer saw them.
    pub refused_inside: RefusedInside,
    /// Every epoch starting before this is committed by every sink.
    pub committed_before: Arc<AtomicI64>,
    /// The configured classifier (moved anchors are put back into it).
    pub base_classes: Option<Arc<Classes>>,
    /// Set when the run ends or stops: a capture still waiting for the
    /// sinks gives up.
    pub ending: Arc<AtomicBool>,
    pub metrics: Option<crate::metrics::Metrics>,
    /// Trims the Redis stream inputs after each write (`pipeline.trim_sources`).
    pub trimmer: Option<super::trim::Trimmer>,
}

/// Takes checkpoints on worker 0 (see the module's documentation).
pub struct Checkpointer {
    settings: Checkpoints,
    ideas: SharedState,
    feedback: SharedFeedback,
    last: Instant,
    writing: Option<JoinHandle<()>>,
    pub longest_pause: Duration,
    pub taken: u64,
}

/// What the driver knows at a capture.
pub struct AtCapture {
    pub complete_before: u64,
    pub watermark: Option<i64>,
    pub positions: Vec<SourcePosition>,
    pub run: RunState,
}

impl Checkpointer {
    pub fn new(settings: Checkpoints, ideas: SharedState, feedback: SharedFeedback) -> Self {
        Checkpointer {
            settings,
            ideas,
            feedback,
            last: Instant::now(),
            writing: None,
            longest_pause: Duration::ZERO,
            taken: 0,
        }
    }

    /// Whether a checkpoint is due (and the last one is written).
    pub fn due(&self) -> bool {
        self.last.elapsed() >= self.settings.every
            && self.writing.as_ref().is_none_or(|w| w.is_finished())
    }

    /// Encodes the state (which must hold exactly the epochs before
    /// `at.complete_before`) and starts writing it once the sinks hold those
    /// epochs too. Returns how long the dataflow was paused.
    pub fn capture(&mut self, mut at: AtCapture) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.last = started;
        if let Some(w) = self.writing.take() {
            let _ = w.join();
        }
        let mut ideas = self.ideas.borrow_mut();
        let Some(ideas) = ideas.as_mut() else {
            return Ok(Duration::ZERO);
        };
        // Ticks whose evaluation a batch deferred are evaluated now (their
        // score rows stay held back, and are saved).
        ideas.catch_up_all();
        if !ideas.savable() {
            anyhow::bail!("the idea state is inside an epoch; no checkpoint taken");
        }
        let feedback = self.feedback.borrow();
        let feedback = feedback.as_ref();
        at.run.top = ideas.top_lists().cloned();
        at.run.refused_inside = self
            .settings
            .refused_inside
            .lock()
            .expect("not poisoned")
            .iter()
            .filter_map(|(n, d)| Some((*n, serde_json::to_string(d).ok()?)))
            .collect();
        // What the feedback loop learned in the last epoch reaches the idea
        // state only at the next: it is saved apart and given back to the
        // resumed state before anything else.
        let weights_in_flight = feedback
            .map(|f| f.weights())
            .filter(|w| *w != ideas.weights());
        let moved = ideas.moved_anchors();
        let anchors_in_flight = match (
            feedback.and_then(|f| f.current_anchors()),
            &self.settings.base_classes,
        ) {
            (Some(current), Some(base)) => {
                let held = moved.clone().unwrap_or_else(|| base.anchors());
                (current != held).then_some(current)
            }
            _ => None,
        };
        let counts = Counts {
            live_ideas: ideas.active_ideas() as u64,
            archived_ideas: ideas.archived_ideas() as u64,
            vectors: ideas.indexed_vectors() as u64,
            seen_signals: ideas.seen_signals() as u64,
            pending_feedback: feedback.map_or(0, |f| f.pending() as u64),
        };
        // The pause ends with the copy: the writer's thread encodes it.
        let ideas = ideas.snapshot().expect("savable, checked above");
        let feedback = feedback.cloned();
        let pause = started.elapsed();
        self.longest_pause = self.longest_pause.max(pause);
        let header = Header {
            version: format::FORMAT_VERSION,
            fingerprint: self.settings.fingerprint.clone(),
            complete_before: at.complete_before,
            watermark: at.watermark,
            written_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            positions: at.positions,
            counts,
        };
        if let Some(m) = &self.settings.metrics {
            m.checkpoint_pause_seconds.observe(pause.as_secs_f64());
        }
        let settings = self.settings.clone();
        let complete_before = at.complete_before;
        self.writing = Some(
            std::thread::Builder::new()
                .name("ideaflow-checkpoint".into())
                .spawn(move || {
                    let copy = StateCopy {
                        ideas,
                        moved_anchors: moved,
                        feedback,
                        weights_in_flight,
                        anchors_in_flight,
                        run: at.run,
                    };
                    write_when_committed(settings, header, copy, complete_before)
                })?,
        );
        self.taken += 1;
        Ok(pause)
    }

    /// Waits for the checkpoint being written (or its giving up).
    pub fn finish(&mut self) {
        self.settings.ending.store(true, Ordering::SeqCst);
        if let Some(w) = self.writing.take() {
            let _ = w.join();
        }
    }
}

/// The state as a capture copied it, encoded and written apart from the
/// dataflow.
struct StateCopy {
    ideas: IdeaState,
    moved_anchors: Option<Vec<ideaflow_operators::classify::Anchor>>,
    feedback: Option<FeedbackState>,
    weights_in_flight: Option<ideaflow_operators::score::Weights>,
    anchors_in_flight: Option<Vec<ideaflow_operators::classify::Anchor>>,
    run: RunState,
}

impl StateCopy {
    fn encode(self, out: &mut dyn std::io::Write) -> Result<(), format::FormatError> {
        format::encode_body(
            out,
            &BodyRef {
                ideas: &self.ideas,
                moved_anchors: self.moved_anchors,
                feedback: self.feedback.as_ref(),
                weights_in_flight: self.weights_in_flight,
                anchors_in_flight: self.anchors_in_flight,
                run: &self.run,
            },
        )
    }
}

/// Encodes the copy into a file under a temporary name and puts it in
/// place once every sink committed the epochs before `complete_before`;
/// gives up (and removes the file) if the run ends first.
fn write_when_committed(
    settings: Checkpoints,
    header: Header,
    copy: StateCopy,
    complete_before: u64,
) {
    let started = Instant::now();
    let prepared = match settings.store.prepare(&header, |out| copy.encode(out)) {
        Ok(prepared) => prepared,
        Err(e) => {
            tracing::error!(
                error = %e,
                dir = %settings.store.dir().display(),
                "could not write a checkpoint (is the directory writable, is the disk full?); \
                 the previous one stands"
            );
            return;
        }
    };
    let write_seconds = started.elapsed().as_secs_f64();
    let needed = i64::try_from(complete_before).unwrap_or(i64::MAX);
    while settings.committed_before.load(Ordering::SeqCst) < needed {
        if settings.ending.load(Ordering::SeqCst) {
            // One more look: the end commits what is complete.
            std::thread::sleep(Duration::from_millis(200));
            if settings.committed_before.load(Ordering::SeqCst) < needed {
                tracing::info!(
                    complete_before,
                    "the run ended before the sinks held the checkpoint's epochs; not written"
                );
                return;
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match settings.store.publish(prepared) {
        Ok((path, bytes)) => {
            if let Some(m) = &settings.metrics {
                m.checkpoint_bytes.set(bytes as i64);
                m.checkpoints_written.inc();
                m.checkpoint_epoch.set(needed);
            }
            tracing::info!(
                path = %path.display(),
                bytes,
                complete_before,
                write_seconds = format!("{write_seconds:.2}"),
                "checkpoint written"
            );
            if let Some(trimmer) = &settings.trimmer {
                match settings.store.headers() {
                    Ok(kept) => trimmer.trim(&kept),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not list the checkpoints kept; nothing trimmed")
                    }
                }
            }
        }
        Err(e) => tracing::error!(
            error = %e,
            dir = %settings.store.dir().display(),
            "could not put a checkpoint in place (is the directory writable?); \
             the previous one stands"
        ),
    }
}
