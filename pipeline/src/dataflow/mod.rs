//! The timely dataflows ideaflow runs. Operators here are thin wrappers: the
//! logic they call lives in `ideaflow-operators`.

pub mod deliver;
pub mod embed;
pub mod idea_state;
pub mod ordered_sink;
pub mod resume_points;
pub mod source;
pub mod wire;

use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Result};
use idea_state::{FeedbackOut, FeedbackOwner, Learned};
use ideaflow_operators::Signal;
use ideaflow_sinks::{DeadLetterSink, JsonlWriter};
pub use source::{Inputs, LiveSettings};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concat, ConnectLoop, Feedback, Probe};
use timely::dataflow::ProbeHandle;

use crate::cluster::{timely_config, Cluster};
use crate::config::Config;
use crate::core_setup::CoreSetup;
use crate::model_files::{LazyEmbedder, ModelSource};
use deliver::EpochConsumer;

/// What a bounded run did.
#[derive(Debug, Default)]
pub struct RunSummary {
    pub events: u64,
    pub signals_out: u64,
    pub dead_letters: u64,
    pub dead_by_reason: Vec<(String, u64)>,
    pub seconds: f64,
}

/// What the leading process brings to a run (worker 0 holds it): the source,
/// the dead-letter sink, the consumer of completed epochs, and the writer of
/// the embedded signals when they are asked for.
pub struct Lead {
    pub source: Inputs,
    pub dead: DeadLetterSink,
    pub consumer: Box<dyn EpochConsumer>,
    pub signals_out: Option<JsonlWriter>,
    pub continuity: Continuity,
}

/// Checkpoints a run takes, and the one it resumes from.
#[derive(Default)]
pub struct Continuity {
    pub checkpoints: Option<crate::checkpoint::capture::Checkpoints>,
    pub resumed: Option<crate::checkpoint::capture::Resumed>,
}

/// replay -> validate -> embed -> prepare -> idea state -> `consumer`, on
/// `workers` timely workers in this process. The consumer (moved to worker 0)
/// sees every completed epoch's changelog in order.
// The parts are independent inputs of one run; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn run_views_pipeline(
    config: &Config,
    source: Inputs,
    model: ModelSource,
    dead: DeadLetterSink,
    core: Arc<CoreSetup>,
    consumer: Box<dyn EpochConsumer>,
    signals_out: Option<JsonlWriter>,
) -> Result<RunSummary> {
    let write_signals = signals_out.is_some();
    let lead = Lead {
        source,
        dead,
        consumer,
        signals_out,
        continuity: Continuity::default(),
    };
    run_dataflow(config, None, Some(lead), model, core, write_signals)?
        .ok_or_else(|| anyhow!("worker 0 returned no summary"))
}

/// The pipeline on this process's workers, alone or as one process of a
/// `cluster`: the leading process passes its `lead` and gets the run's
/// summary; the others pass none and get none. `write_signals` must be the
/// same in every process (every worker builds the same dataflow).
pub fn run_dataflow(
    config: &Config,
    cluster: Option<&Cluster>,
    lead: Option<Lead>,
    model: ModelSource,
    core: Arc<CoreSetup>,
    write_signals: bool,
) -> Result<Option<RunSummary>> {
    let leads = cluster.is_none_or(Cluster::leads);
    if leads != lead.is_some() {
        return Err(anyhow!(
            "process {} of the cluster {} a source and sinks: only process 0 has them",
            cluster.map_or(0, |c| c.process),
            if leads { "lacks" } else { "was given" }
        ));
    }
    let workers = config.pipeline.workers;
    let timely_config = timely_config(workers, cluster);
    if let Some(c) = cluster {
        tracing::info!(
            process = c.process,
            processes = c.processes(),
            addresses = ?c.addresses,
            "connecting to the other processes (each runs the same command with its own --process)"
        );
    }
    let settings = source::DriveSettings::from_config(&config.pipeline);
    let epoch_secs = config.pipeline.epoch_secs;
    let tick_batch = config.pipeline.tick_batch;
    let owned = Arc::new(Mutex::new(lead));
    // Signals that reached the idea state: the source's back-pressure.
    let arrived = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let failed: Arc<Mutex<Option<anyhow::Error>>> = Arc::new(Mutex::new(None));
    let failed_in = failed.clone();
    // A stop hands over only the epochs complete when reading stopped.
    let cutoff = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let buses: Arc<Mutex<Vec<ideaflow_sources::bus::runner::BusHandle>>> = Arc::default();
    let buses_out = buses.clone();
    let guards = timely::execute(timely_config, move |worker| -> Result<Option<RunSummary>> {
        let mine = if worker.index() == 0 {
            owned.lock().expect("not poisoned").take()
        } else {
            None
        };
        let repeats = mine.as_ref().map(|l| l.source.live.status.repeats.clone());
        // Repeats are counted by bus partition: the states log what they refuse.
        let from_buses = mine.as_ref().is_some_and(|l| !l.source.buses.is_empty());
        let (source, consumer, writer, continuity) = match mine {
            Some(l) => (
                Some((l.source, l.dead)),
                Some(l.consumer),
                l.signals_out,
                l.continuity,
            ),
            None => (None, None, None, Continuity::default()),
        };
        let Continuity {
            checkpoints,
            mut resumed,
        } = continuity;
        let output_path = writer.as_ref().map(|w| w.path().to_owned());
        let sunk = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // The state has one owner; its tick re-scoring uses as many threads
        // as the run has workers.
        let state = consumer.as_ref().map(|_| {
            let mut state = match resumed.as_mut() {
                Some(r) => r.take_ideas(&core),
                None => core.state(),
            };
            state.set_scoring_threads(workers);
            if from_buses {
                state.log_refused();
            }
            if let Some(k) = consumer.as_ref().and_then(|c| c.top_k()) {
                state.keep_top_lists(k);
            }
            state
        });
        let state: idea_state::SharedState = std::rc::Rc::new(std::cell::RefCell::new(state));
        let feedback: crate::checkpoint::capture::SharedFeedback =
            std::rc::Rc::new(std::cell::RefCell::new(consumer.as_ref().map(|_| {
                let mut state = match resumed.as_mut().and_then(|r| r.feedback.take()) {
                    Some(resumed) => resumed,
                    None => core.feedback_state(),
                };
                if from_buses {
                    state.log_refused();
                }
                state
            })));
        let mut feedback_owner = consumer.as_ref().map(|_| FeedbackOwner {
            state: feedback.clone(),
            embedder: LazyEmbedder::new(model.clone()),
            classifier: core
                .labels()
                .classifier
                .as_ref()
                .map(|c| Arc::new(c.clone())),
        });
        let probe = ProbeHandle::new();
        let (mut input, cap) = worker.dataflow::<u64, _, _>(|scope| {
            let ((input, cap), with_vectors, marketplace) = embedded_signals(scope, model.clone());
            // The embedded signals themselves, as `run` writes them (worker 0).
            // Only when asked: a second consumer gets a copy of every signal.
            // Every worker must build the same dataflow, so this follows the
            // run's request, not whether this worker holds the writer.
            if write_signals {
                // Probed: a checkpoint waits until the file holds every
                // epoch before it.
                ordered_sink::write_signals(with_vectors.clone(), writer, sunk.clone())
                    .probe_with(&probe);
            }
            let prepared = idea_state::prepare_signals(with_vectors, core.prepare.clone());
            // The feedback edge: weights learned in one epoch reach the idea
            // state one epoch later.
            let (learned_loop, learned) = scope.feedback::<Vec<Learned>>(epoch_secs);
            // The centroid loop: an epoch's deltas go through differential
            // and come back summed one time unit later, within the epoch.
            let (sums_loop, sums) = scope.feedback::<Vec<idea_state::CentroidSumUpdate>>(1);
            let (changes, facts, deltas) = idea_state::apply_to_state(
                prepared,
                learned,
                sums,
                state.clone(),
                idea_state::Batching {
                    epoch_secs,
                    tick_batch,
                    backlog: settings.backlog.clone(),
                },
                arrived.clone(),
            );
            idea_state::centroid_sums(deltas).connect_loop(sums_loop);
            let feedback = idea_state::apply_feedback(
                marketplace,
                facts,
                feedback_owner.take(),
                state.clone(),
                epoch_secs,
                repeats.clone(),
            );
            feedback
                .clone()
                .flat_map(|o| match o {
                    FeedbackOut::Learned(l) => Some(l),
                    FeedbackOut::Change(_) => None,
                })
                .connect_loop(learned_loop);
            let feedback_changes = feedback.flat_map(|o| match o {
                FeedbackOut::Change(c) => Some(*c),
                FeedbackOut::Learned(_) => None,
            });
            deliver::deliver_epochs(
                changes.concat(feedback_changes),
                consumer,
                state.clone(),
                epoch_secs,
                failed_in.clone(),
                cutoff.clone(),
                repeats.clone(),
            )
            .probe_with(&probe);
            (input, cap)
        });
        match source {
            None => {
                drop(cap);
                drop(input);
                while worker.step_or_park(None) {}
                Ok(None)
            }
            Some((source, mut dead)) => {
                let done = std::sync::atomic::AtomicU64::new(0);
                let checkpointer = checkpoints.map(|c| {
                    crate::checkpoint::capture::Checkpointer::new(
                        c,
                        state.clone(),
                        feedback.clone(),
                    )
                });
                let resume = source::Resume {
                    checkpointer,
                    from: resumed.map(|r| source::ResumedFrom {
                        complete_before: r.header.complete_before,
                        read: r.run.read,
                        resume: r.run.resume,
                        file_start: r.file_start,
                    }),
                    output_path,
                };
                let (mut s, handles) = source::drive(
                    worker,
                    source,
                    &mut input,
                    cap,
                    &probe,
                    &mut dead,
                    settings.clone(),
                    &arrived,
                    &done,
                    &cutoff,
                    resume,
                )?;
                buses_out.lock().expect("not poisoned").extend(handles);
                s.signals_out = arrived.load(std::sync::atomic::Ordering::Relaxed);
                Ok(Some(s))
            }
        }
    })
    .map_err(|e| anyhow!("could not start timely workers: {e}"))?;
    let mut summary = None;
    let mut worker_failed = None;
    for result in guards.join() {
        match result.map_err(|e| anyhow!("a worker failed: {e}")) {
            Ok(Ok(Some(s))) => summary = Some(s),
            Ok(Ok(None)) => {}
            Ok(Err(e)) | Err(e) => {
                worker_failed.get_or_insert(e);
            }
        }
    }
    // The sinks committed (or failed): the bus sources acknowledge what was
    // committed, then stop.
    for handle in std::mem::take(&mut *buses.lock().expect("not poisoned")) {
        handle.finish();
    }
    if let Some(e) = worker_failed {
        return Err(e);
    }
    if let Some(e) = failed.lock().expect("not poisoned").take() {
        return Err(e.context("the pipeline stopped because a sink failed"));
    }
    if leads && summary.is_none() {
        return Err(anyhow!("worker 0 returned no summary"));
    }
    Ok(summary)
}

/// The event input: its handle and the capability the source downgrades.
type Front = (
    source::EventInput,
    timely::dataflow::operators::ActivateCapability<u64>,
);

/// The input, the embedded signals, and the marketplace events.
type FrontStreams<'scope> = (
    Front,
    timely::dataflow::Stream<'scope, u64, Vec<Signal>>,
    timely::dataflow::Stream<'scope, u64, Vec<ideaflow_operators::Event>>,
);

/// The front every pipeline shares: the event input, its signals embedded,
/// and its marketplace events.
fn embedded_signals<'scope>(
    scope: timely::dataflow::Scope<'scope, u64>,
    model: ModelSource,
) -> FrontStreams<'scope> {
    let (input, events) = source::event_input(scope);
    let (signals, marketplace) = source::split_events(events);
    (input, embed::embed_signals(signals, model), marketplace)
}
