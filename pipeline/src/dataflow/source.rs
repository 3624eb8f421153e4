//! Feeds the replay source into a dataflow at event time.
//!
//! Events enter at the timestamp of their own event-time epoch, which can be
//! earlier than the latest one sent (arrival is out of order within the allowed
//! lateness). So the input holds a capability at the watermark's epoch, not at
//! the latest time, and downgrades it as the watermark advances: downstream
//! operators see an epoch complete exactly when no admissible event can still
//! arrive for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, TryRecvError};
use std::time::Instant;

use anyhow::Result;
use chrono::{DateTime, Utc};
use ideaflow_operators::watermark::epoch_of;
use ideaflow_operators::{Event, Signal};
use ideaflow_sinks::DeadLetterSink;
use ideaflow_sources::replay::{ReplayError, ReplaySource, Replayed};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::core::unordered_input::UnorderedHandle;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::core::UnorderedInput;
use timely::dataflow::operators::ActivateCapability;
use timely::dataflow::{ProbeHandle, Scope, Stream};
use timely::worker::Worker;

use super::RunSummary;
use crate::progress::Progress;

pub type EventInput = UnorderedHandle<u64, CapacityContainerBuilder<Vec<Event>>>;

pub fn event_input<'scope>(
    scope: Scope<'scope, u64>,
) -> (
    (EventInput, ActivateCapability<u64>),
    Stream<'scope, u64, Vec<Event>>,
) {
    scope.new_unordered_input()
}

/// Splits the events into signals and the marketplace and classification
/// feedback events the feedback operator takes.
/// One pass, no copies: two consumers of one stream would each get a clone
/// of every event, embeddings included.
// The Result only routes each event to one of two streams; it is never kept.
#[allow(clippy::result_large_err)]
pub fn split_events<'scope>(
    events: Stream<'scope, u64, Vec<Event>>,
) -> (
    Stream<'scope, u64, Vec<Signal>>,
    Stream<'scope, u64, Vec<Event>>,
) {
    use ideaflow_operators::Payload;
    // Every other payload is marketplace or classification feedback.
    events.ok_err::<Vec<Signal>, _, Vec<Event>, _, _>(|e| match e.payload {
        Payload::Signal(s) => Ok(*s),
        _ => Err(e),
    })
}

/// How the source feeds the dataflow (from `[pipeline]`).
#[derive(Clone, Copy, Debug)]
pub struct DriveSettings {
    pub epoch_secs: u64,
    pub max_in_flight: u64,
}

impl DriveSettings {
    pub fn from_config(pipeline: &crate::config::PipelineConfig) -> Self {
        DriveSettings {
            epoch_secs: pipeline.epoch_secs,
            max_in_flight: pipeline.max_in_flight as u64,
        }
    }
}

/// The longest a read event waits before it enters the dataflow.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// How long to wait for input between steps while the dataflow has work.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_millis(1);

/// The longest the worker parks at a time while it waits for the dataflow
/// (other workers' messages wake it sooner). Waiting by stepping alone would
/// spin, and the core it spins on is one the other workers, the reading
/// thread and the scoring threads need.
const PARK_AT_MOST: std::time::Duration = std::time::Duration::from_millis(1);

/// Items read ahead of the dataflow by the reading thread.
const READ_AHEAD: usize = 1024;

/// An item and the watermark once it was read.
type ReadItem = Result<(Replayed, Option<DateTime<Utc>>), ReplayError>;

/// Reads `source` on a thread of its own, so that the worker keeps stepping
/// the dataflow (and epochs keep committing) while a live input (standard
/// input) has nothing new; reading and validating also leave the worker's
/// core. The channel closes at the end of the inputs.
fn read_ahead(mut source: ReplaySource) -> (Receiver<ReadItem>, std::thread::JoinHandle<()>) {
    let (tx, rx) = sync_channel::<ReadItem>(READ_AHEAD);
    let reader = std::thread::Builder::new()
        .name("ideaflow-source".into())
        .spawn(move || loop {
            let item = match source.next_item() {
                Ok(Some(item)) => Ok((item, source.watermark())),
                Ok(None) => return,
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.send(item).is_err() || failed {
                return;
            }
        })
        .expect("the source thread starts");
    (rx, reader)
}

/// Reads the whole source into the dataflow on this worker, then closes the input.
#[allow(clippy::too_many_arguments)]
pub fn drive(
    worker: &mut Worker,
    source: ReplaySource,
    input: &mut EventInput,
    cap: ActivateCapability<u64>,
    probe: &ProbeHandle<u64>,
    dead: &mut DeadLetterSink,
    settings: DriveSettings,
    arrived: &AtomicU64,
    sunk: &AtomicU64,
) -> Result<RunSummary> {
    let DriveSettings {
        epoch_secs,
        max_in_flight,
    } = settings;
    let started = Instant::now();
    let progress_bytes = source.progress();
    let mut progress = Progress::new("replay", progress_bytes.total());
    let mut cap = Some(cap);
    let mut events = 0u64;
    let mut sent_signals = 0u64;
    // Signals read when the dataflow last caught up with the watermark.
    let mut sent_at_catch_up = 0u64;
    let mut buffer: Vec<(u64, Event)> = Vec::with_capacity(1024);
    let mut last_flush = Instant::now();
    let flush =
        |buffer: &mut Vec<(u64, Event)>, cap: &ActivateCapability<u64>, input: &mut EventInput| {
            if buffer.is_empty() {
                return;
            }
            buffer.sort_by_key(|(t, _)| *t);
            let mut handle = input.activate();
            let start = 0;
            while start < buffer.len() {
                let t = buffer[start].0;
                let end = start + buffer[start..].iter().take_while(|(u, _)| *u == t).count();
                let at = cap.delayed(&t);
                handle
                    .session(&at)
                    .give_iterator(buffer.drain(start..end).map(|(_, e)| e));
                // drain shifted the rest down to `start`
            }
            debug_assert!(buffer.is_empty());
        };
    let (items, reader) = read_ahead(source);
    let mut watermark = None;
    loop {
        let received = match items.try_recv() {
            Ok(item) => Ok(item),
            Err(TryRecvError::Empty) => {
                // Nothing read yet (a live input, or a slow disk): keep the
                // dataflow going while waiting, if it has work.
                let busy = cap.as_ref().is_some_and(|c| probe.less_than(c.time()));
                if busy {
                    worker.step();
                }
                items.recv_timeout(if busy { BUSY_WAIT } else { FLUSH_EVERY })
            }
            Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(Ok((item, wm))) => {
                watermark = wm;
                match item {
                    Replayed::Dead(dl) => dead.write(&dl)?,
                    Replayed::Event(event) => {
                        events += 1;
                        if matches!(event.payload, ideaflow_operators::Payload::Signal(_)) {
                            sent_signals += 1;
                        }
                        let t = epoch_of(event.time, epoch_secs);
                        buffer.push((t, event));
                    }
                }
            }
            Ok(Err(e)) => return Err(e.into()),
            // A live input with nothing new: hand over what is buffered.
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        // Paced replays (and live sources) trickle: hand over what arrived at
        // least every FLUSH_EVERY, so that epochs commit as time passes.
        if buffer.len() >= 1024 || last_flush.elapsed() >= FLUSH_EVERY {
            last_flush = Instant::now();
            let c = cap.as_mut().expect("held until the end");
            flush(&mut buffer, c, input);
            if let Some(wm) = watermark {
                let t = epoch_of(wm, epoch_secs);
                if t > *c.time() {
                    c.downgrade(&t);
                }
            }
            worker.step();
            // Let completed epochs through (the feedback edge needs a round
            // of progress per epoch), within a bounded time.
            while probe.less_than(c.time()) && last_flush.elapsed() < FLUSH_EVERY {
                worker.step_or_park(Some(PARK_AT_MOST));
            }
            // Back-pressure: let embedding and preparation (on any worker of
            // any process) catch up before reading further.
            while sent_signals.saturating_sub(arrived.load(Ordering::Relaxed)) > max_in_flight {
                worker.step_or_park(Some(PARK_AT_MOST));
            }
            // ... and the rest of the dataflow: epochs wait in the idea state
            // until the watermark passes them, so a source that outruns it
            // would pile up prepared signals without bound. Everything before
            // the watermark can complete, so this wait always ends.
            if sent_signals - sent_at_catch_up > max_in_flight {
                while probe.less_than(c.time()) {
                    worker.step_or_park(Some(PARK_AT_MOST));
                }
                sent_at_catch_up = sent_signals;
            }
            progress.update(progress_bytes.read(), events);
        }
    }
    if let Some(c) = cap.as_ref() {
        flush(&mut buffer, c, input);
    }
    if reader.join().is_err() {
        return Err(anyhow::anyhow!(
            "the source thread stopped unexpectedly; its panic message is above"
        ));
    }
    drop(cap.take());
    while worker.step_or_park(None) {
        let _ = probe;
    }
    dead.flush()?;
    let (_, seconds) = progress.finish();
    Ok(RunSummary {
        events,
        signals_out: sunk.load(Ordering::Relaxed),
        dead_letters: dead.total(),
        dead_by_reason: dead
            .counts()
            .iter()
            .map(|(r, n)| (r.to_string(), *n))
            .collect(),
        seconds: seconds.max(started.elapsed().as_secs_f64()),
    })
}
