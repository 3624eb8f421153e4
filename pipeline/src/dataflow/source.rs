//! Feeds the replay source into a dataflow at event time.
//!
//! Events enter at the timestamp of their own event-time epoch, which can be
//! earlier than the latest one sent (arrival is out of order within the allowed
//! lateness). So the input holds a capability at the watermark's epoch, not at
//! the latest time, and downgrades it as the watermark advances: downstream
//! operators see an epoch complete exactly when no admissible event can still
//! arrive for it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use chrono::{DateTime, Utc};
use ideaflow_operators::redelivery::RecordDigest;
use ideaflow_operators::watermark::{epoch_of, SourceWatermarks};
use ideaflow_operators::{DeadLetter, Event, Position, Signal};
use ideaflow_sinks::DeadLetterSink;
use ideaflow_sources::bus::in_flight::{InFlight, ReadRecord};
use ideaflow_sources::bus::read_ahead::ReadAhead;
use ideaflow_sources::bus::runner::{self, BusEvent, BusHandle, ParsedRecord, RunnerSettings};
use ideaflow_sources::bus::{Bus, BusPosition};
use ideaflow_sources::replay::{
    ahead_of_the_clock, late_rejection, ChainMark, ReplayError, ReplaySource, Replayed,
};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::core::unordered_input::UnorderedHandle;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::core::UnorderedInput;
use timely::dataflow::operators::ActivateCapability;
use timely::dataflow::{ProbeHandle, Scope, Stream};
use timely::worker::Worker;

use super::resume_points::{ResumePoints, SavedResume};
use super::RunSummary;
use crate::checkpoint::capture::{AtCapture, ReadThrough, RunState, SavedPosition};
use crate::checkpoint::format::SourcePosition;
use crate::progress::Progress;
use crate::source_status::SourceStatus;

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
#[derive(Clone, Debug)]
pub struct DriveSettings {
    pub epoch_secs: u64,
    pub max_in_flight: u64,
    /// Set while the inputs are a backlog (files read at full speed): the
    /// idea state may then batch epochs ([`super::idea_state::Batching`]).
    pub backlog: Arc<AtomicBool>,
}

impl DriveSettings {
    pub fn from_config(pipeline: &crate::config::PipelineConfig) -> Self {
        DriveSettings {
            epoch_secs: pipeline.epoch_secs,
            max_in_flight: pipeline.max_in_flight as u64,
            backlog: Arc::default(),
        }
    }
}

/// The longest a read event waits before it enters the dataflow.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// How long to wait for input between steps while the dataflow has work.
const BUSY_WAIT: Duration = Duration::from_millis(1);

/// The longest the worker parks at a time while it waits for the dataflow
/// (other workers' messages wake it sooner). Waiting by stepping alone would
/// spin, and the core it spins on is one the other workers, the reading
/// thread and the scoring threads need.
const PARK_AT_MOST: Duration = Duration::from_millis(1);

/// Items read ahead of the dataflow by the reading threads.
const READ_AHEAD: usize = 1024;
/// Records each bus thread may have handed over and the pipeline not taken
/// yet (one read more may come on top): the rest stays on the bus.
const BUS_READ_AHEAD: usize = 4096;

/// An item of the file chain, its watermark once it was read, and where it
/// started.
type ReadItem = Result<(Replayed, Option<DateTime<Utc>>, Option<ChainMark>), ReplayError>;

/// What the reading threads hand the worker. Not boxed: the file chain's
/// items are the hot path, and a channel slot per item is cheaper than an
/// allocation per item.
#[allow(clippy::large_enum_variant)]
enum Arrival {
    File(ReadItem),
    /// The file chain ended.
    FilesEnded,
    Bus(BusEvent),
}

impl From<BusEvent> for Arrival {
    fn from(e: BusEvent) -> Self {
        Arrival::Bus(e)
    }
}

/// The file chain's key among the watermarks; bus source `i` is `i + 1`.
const FILES: usize = 0;

/// Everything `drive` reads: the file chain (files and standard input, one
/// stream in order) and bus sources, each with its own watermark.
pub struct Inputs {
    pub files: Option<ReplaySource>,
    pub buses: Vec<Box<dyn Bus>>,
    pub live: LiveSettings,
}

/// How live sources are read, stopped and reported.
#[derive(Clone)]
pub struct LiveSettings {
    /// A bus partition whose reads came back empty this long stops holding
    /// the watermark back (`pipeline.idle_source_secs`).
    pub idle_after: Duration,
    /// Stop once every source has ended or been idle that long (`--exit-at-end`).
    pub exit_when_idle: bool,
    /// How long a stop may take to commit the complete epochs.
    pub shutdown_timeout: Duration,
    /// Set by SIGTERM/SIGINT: stop reading, commit what is complete, exit.
    pub stop: Arc<AtomicBool>,
    pub allowed_lateness: chrono::Duration,
    pub max_future: Option<chrono::Duration>,
    pub status: Arc<SourceStatus>,
}

impl Inputs {
    /// Sets every source to read again from a checkpoint's resume points.
    /// Returns the items of the file chain passed over (0 when the chain
    /// cannot seek, a gzip file, and is read from its start instead).
    pub fn resume_at(&mut self, run: &RunState) -> Result<u64> {
        let mut file_start = 0;
        if let Some(mut files) = self.files.take() {
            if let Some(mark) = &run.resume.files {
                file_start = files.resume_at(mark)?;
            }
            let again = run.read.file_items.saturating_sub(file_start);
            self.files = Some(files.unpaced_for(again));
            tracing::info!(
                passed_over = file_start,
                read_again = again,
                "the file chain goes on from its resume point; what it reads again up to where it had been is skipped where the checkpoint holds it"
            );
        }
        for bus in &mut self.buses {
            let after: std::collections::BTreeMap<u32, BusPosition> = run
                .resume
                .buses
                .iter()
                .filter(|r| r.source == bus.name())
                .map(|r| (r.partition, r.after.into()))
                .collect();
            tracing::info!(
                source = bus.name(),
                partitions = ?after.iter().map(|(p, a)| format!("{p}: after {a}")).collect::<Vec<_>>(),
                "the source goes on from its resume points (partitions not named: from their start)"
            );
            bus.resume_after(&after);
        }
        Ok(file_start)
    }

    /// Files only, read to their end (replays, benchmarks).
    pub fn files(source: ReplaySource, allowed_lateness: chrono::Duration) -> Inputs {
        Inputs {
            files: Some(source),
            buses: Vec::new(),
            live: LiveSettings {
                idle_after: Duration::from_secs(30),
                exit_when_idle: true,
                shutdown_timeout: Duration::from_secs(30),
                stop: Arc::default(),
                allowed_lateness,
                max_future: None,
                status: SourceStatus::new(InFlight::default()),
            },
        }
    }
}

/// Reads the file chain on a thread of its own, so that the worker keeps
/// stepping the dataflow (and epochs keep committing) while a live input
/// (standard input) has nothing new; reading and validating also leave the
/// worker's core.
fn read_files(mut source: ReplaySource, tx: SyncSender<Arrival>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("ideaflow-source".into())
        .spawn(move || loop {
            let item = match source.next_item() {
                Ok(Some(item)) => Ok((item, source.watermark(), source.mark())),
                Ok(None) => {
                    let _ = tx.send(Arrival::FilesEnded);
                    return;
                }
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.send(Arrival::File(item)).is_err() || failed {
                return;
            }
        })
        .expect("the source thread starts")
}

/// A dead letter for a bus record.
fn bus_dead_letter(
    location: &str,
    position: BusPosition,
    raw: &[u8],
    rejection: ideaflow_operators::Rejection,
) -> DeadLetter {
    DeadLetter {
        reason: rejection.reason,
        message: rejection.message,
        position: Position {
            file: location.to_owned(),
            line: 0,
            offset: match position {
                BusPosition::Offset(o) => o.max(0) as u64,
                BusPosition::Entry(e) => e.ms,
            },
        },
        raw: String::from_utf8_lossy(raw).into_owned(),
    }
}

/// A run's checkpoints: the one it resumes from, and those it takes.
#[derive(Default)]
pub struct Resume {
    pub checkpointer: Option<crate::checkpoint::capture::Checkpointer>,
    /// The checkpoint resumed from.
    pub from: Option<ResumedFrom>,
    /// The embedded signals' file (a checkpoint records its length).
    pub output_path: Option<std::path::PathBuf>,
}

/// Where a resumed run starts.
pub struct ResumedFrom {
    /// Every epoch starting before this is in the state.
    pub complete_before: u64,
    /// How far each source had been read: what is read again up to there
    /// is skipped when the state holds it.
    pub read: ReadThrough,
    /// Where each source was set to read again from.
    pub resume: SavedResume,
    /// Items of the file chain its reader passed over (0 when it could not
    /// seek and reads the chain from its start).
    pub file_start: u64,
}

/// What `drive` keeps while it runs.
struct Reading {
    watermarks: SourceWatermarks,
    /// Events read and not yet handed to the dataflow, with their epochs.
    buffer: Vec<(u64, Event)>,
    /// Bus records read, with the epochs they went into, not yet noted.
    read: Vec<ReadRecord>,
    /// Where the bus records handed over were read, by digest, not yet
    /// noted: the state's repeats are counted by partition.
    origins: Vec<(RecordDigest, u64, usize, u32)>,
    events: u64,
    signals: u64,
    /// Which bus sources have connected at least once.
    connected: Vec<bool>,
    /// Items of the file chain received (events and refused lines), and how
    /// many of the first were in the checkpoint resumed from (skipped).
    file_items: u64,
    skip_file_items: u64,
    /// The bus sources' names, and the last position received per
    /// (source, partition).
    bus_names: Vec<String>,
    bus_read: std::collections::BTreeMap<(usize, u32), BusPosition>,
    /// Per (source, partition): records up to this position were read
    /// before the checkpoint resumed from.
    bus_skip: std::collections::HashMap<(usize, u32), SavedPosition>,
    /// The checkpoint resumed from holds every epoch starting before this:
    /// of what was read before it, records of those epochs (applied, or
    /// refused then) are skipped; the others were still on their way and
    /// are taken again.
    resumed_before: u64,
    /// The sources (as watermark keys) that have not yet read again as far
    /// as the checkpoint says: until they have, the input stays at the
    /// checkpoint's epoch, so that nothing they give again is judged late.
    catching_up: std::collections::BTreeSet<(usize, u32)>,
    /// Where each source would be read again from (kept when checkpoints are taken).
    points: Option<ResumePoints>,
    /// Records read again after a resume that the checkpoint holds (skipped).
    held_again: u64,
}

impl Reading {
    /// Whether a record read again after a resume, of event time `time`, is
    /// in the checkpoint (or was refused before it): skipped.
    fn held_before(&self, time: DateTime<Utc>, epoch_secs: u64) -> bool {
        epoch_of(time, epoch_secs) < self.resumed_before
    }

    /// How far each source has been read, for a checkpoint.
    fn read_through(&self) -> ReadThrough {
        ReadThrough {
            file_items: self.file_items,
            buses: self
                .bus_read
                .iter()
                .filter_map(|((s, p), pos)| {
                    Some((
                        self.bus_names.get(*s)?.clone(),
                        *p,
                        SavedPosition::from(*pos),
                    ))
                })
                .collect(),
        }
    }

    /// The same, with each source's resume point and watermark, for a
    /// checkpoint's header.
    fn positions(&self, has_files: bool, resume: &SavedResume) -> Vec<SourcePosition> {
        let secs = |w: Option<DateTime<Utc>>| w.map(|w| w.timestamp());
        let mut out = Vec::new();
        if has_files {
            out.push(SourcePosition {
                source: "files".into(),
                partition: 0,
                read_through: format!("{} records", self.file_items),
                resume: match &resume.files {
                    Some(m) => format!(
                        "record {} (file {} of the chain, line {}, byte {})",
                        m.item + 1,
                        m.file + 1,
                        m.line,
                        m.offset
                    ),
                    None => "the start".into(),
                },
                resume_after: None,
                watermark: secs(self.watermarks.own((FILES, 0))),
            });
        }
        for ((s, p), pos) in &self.bus_read {
            let name = self.bus_names.get(*s).cloned().unwrap_or_default();
            let after = resume
                .buses
                .iter()
                .find(|r| r.source == name && r.partition == *p)
                .map(|r| r.after);
            out.push(SourcePosition {
                source: name,
                partition: *p,
                read_through: pos.to_string(),
                resume: after.map_or_else(|| "the start".into(), |a| format!("after {a}")),
                resume_after: after,
                watermark: secs(self.watermarks.own((s + 1, *p))),
            });
        }
        out
    }
}

impl Reading {
    /// Sets the bus partitions where the sources were set to read again
    /// from: their last position read, and their own watermarks there.
    fn resume_from(&mut self, from: &ResumedFrom) {
        self.file_items = from.file_start;
        for r in &from.resume.buses {
            let Some(s) = self.bus_names.iter().position(|n| *n == r.source) else {
                continue;
            };
            self.bus_read.insert((s, r.partition), r.after.into());
            self.watermarks.set_own((s + 1, r.partition), r.own);
        }
    }

    /// Where each source would be read again from after a restart from a
    /// checkpoint of the epochs before `complete_before`.
    fn resume_points(&mut self, complete_before: u64) -> SavedResume {
        let Some(points) = self.points.as_mut() else {
            return SavedResume::default();
        };
        let buses = self.bus_read.iter().filter_map(|((s, p), pos)| {
            let key = (s + 1, *p);
            Some((
                key,
                self.bus_names.get(*s)?.clone(),
                *pos,
                self.watermarks.own(key),
            ))
        });
        points.at(complete_before, buses)
    }

    /// An event read: into the buffer at its epoch (returned), or given back
    /// if that epoch is already complete (a source behind the others: late).
    fn admit(&mut self, event: Event, epoch_secs: u64, open: u64) -> Result<u64, Box<Event>> {
        let t = epoch_of(event.time, epoch_secs);
        if t < open {
            return Err(Box::new(event));
        }
        self.events += 1;
        if matches!(event.payload, ideaflow_operators::Payload::Signal(_)) {
            self.signals += 1;
        }
        self.buffer.push((t, event));
        Ok(t)
    }

    /// The rejection of an event whose epoch was complete when it came.
    fn late(&self, event: &Event) -> ideaflow_operators::Rejection {
        let wm = self.watermarks.current().unwrap_or(event.time);
        late_rejection(
            event,
            &ideaflow_operators::watermark::Late {
                watermark: wm,
                behind: wm - event.time,
            },
        )
    }
}

/// Starts a thread for each bus source.
fn start_buses(
    buses: Vec<Box<dyn Bus>>,
    tx: &SyncSender<Arrival>,
    in_flight: &InFlight,
    status: &SourceStatus,
) -> (Vec<BusHandle>, Vec<ReadAhead>) {
    buses
        .into_iter()
        .enumerate()
        .map(|(i, bus)| {
            let name = bus.name().to_owned();
            let read_ahead = ReadAhead::new(BUS_READ_AHEAD);
            let handle = runner::spawn(
                i,
                bus,
                tx.clone(),
                RunnerSettings::default(),
                read_ahead.clone(),
            );
            let index = in_flight.add_source(name.clone(), handle.acks.clone());
            debug_assert_eq!(index, i);
            status.add_bus(name);
            (handle, read_ahead)
        })
        .unzip()
}

/// Reads every input into the dataflow on this worker until the inputs end
/// (files), every source is idle (`--exit-at-end`) or a stop is asked for
/// (SIGTERM/SIGINT), then closes the input. On a stop, only the epochs that
/// were complete are handed on (`cutoff`): the rest of what was read is
/// read again at the next start, since it is not acknowledged. Returns the
/// bus sources' threads, which still acknowledge what the sinks commit
/// until they are finished.
#[allow(clippy::too_many_arguments)]
pub fn drive(
    worker: &mut Worker,
    inputs: Inputs,
    input: &mut EventInput,
    cap: ActivateCapability<u64>,
    probe: &ProbeHandle<u64>,
    dead: &mut DeadLetterSink,
    settings: DriveSettings,
    arrived: &Arc<AtomicU64>,
    sunk: &AtomicU64,
    cutoff: &AtomicU64,
    resume: Resume,
) -> Result<(RunSummary, Vec<BusHandle>)> {
    let Resume {
        mut checkpointer,
        from,
        output_path,
    } = resume;
    let DriveSettings {
        epoch_secs,
        max_in_flight,
        backlog,
    } = settings;
    let Inputs { files, buses, live } = inputs;
    backlog.store(
        files.as_ref().is_some_and(ReplaySource::is_backlog),
        Ordering::SeqCst,
    );
    let started = Instant::now();
    let progress_bytes = files
        .as_ref()
        .map(ReplaySource::progress)
        .unwrap_or_default();
    let mut progress = Progress::new("replay", progress_bytes.total());
    let mut cap = Some(cap);
    // Signals read when the dataflow last caught up with the watermark.
    let mut sent_at_catch_up = 0u64;
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
    let bus_names: Vec<String> = buses.iter().map(|b| b.name().to_owned()).collect();
    let has_files = files.is_some();
    // Resuming: the state holds every epoch before the checkpoint's, so
    // nothing may enter one; what a source gives again up to where it had
    // been read is skipped (its watermark still follows it).
    let resumed_before = from.as_ref().map_or(0, |f| f.complete_before);
    let (skip_file_items, bus_skip) = match &from {
        Some(ResumedFrom {
            complete_before,
            read,
            ..
        }) => {
            if let Some(c) = cap.as_mut() {
                if *complete_before > *c.time() {
                    c.downgrade(complete_before);
                }
            }
            let bus_skip: std::collections::HashMap<(usize, u32), SavedPosition> = read
                .buses
                .iter()
                .filter_map(|(name, p, pos)| {
                    let s = bus_names.iter().position(|n| n == name)?;
                    Some(((s, *p), *pos))
                })
                .collect();
            (read.file_items, bus_skip)
        }
        None => (0, Default::default()),
    };
    let mut last_checkpoint = resumed_before;
    let mut caught_up = false;
    let (tx, items) = sync_channel::<Arrival>(READ_AHEAD);
    let in_flight = live.status.in_flight.clone();
    live.status.count_through(arrived.clone());
    let reader = files.map(|f| read_files(f, tx.clone()));
    let (handles, read_ahead) = start_buses(buses, &tx, &in_flight, &live.status);
    drop(tx);
    let mut reading = Reading {
        watermarks: SourceWatermarks::new(live.allowed_lateness, live.idle_after),
        buffer: Vec::with_capacity(1024),
        read: Vec::new(),
        origins: Vec::new(),
        events: 0,
        signals: 0,
        connected: vec![false; handles.len()],
        file_items: 0,
        skip_file_items,
        bus_names,
        bus_read: Default::default(),
        catching_up: bus_skip
            .keys()
            .map(|(s, p)| (s + 1, *p))
            .chain((skip_file_items > 0).then_some((FILES, 0)))
            .collect(),
        bus_skip,
        resumed_before,
        points: checkpointer.as_ref().map(|_| {
            from.as_ref()
                .map_or_else(ResumePoints::default, |f| ResumePoints::resumed(&f.resume))
        }),
        held_again: 0,
    };
    if reader.is_some() {
        reading.watermarks.add((FILES, 0));
    }
    if let Some(f) = &from {
        reading.resume_from(f);
    }
    let mut files_done = reader.is_none();
    let mut stopped = false;
    loop {
        let open = *cap.as_ref().expect("held until the end").time();
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
            Ok(Arrival::File(Ok((item, wm, mark)))) => {
                reading.watermarks.set_own((FILES, 0), wm);
                reading.file_items += 1;
                let again = reading.file_items <= reading.skip_file_items;
                if let (Some(points), Some(mark)) = (reading.points.as_mut(), mark) {
                    points.file_read(mark);
                }
                if reading.file_items >= reading.skip_file_items {
                    reading.catching_up.remove(&(FILES, 0));
                }
                match item {
                    // Refused before the checkpoint: in the dead letters.
                    Replayed::Dead(_) if again => reading.held_again += 1,
                    Replayed::Event(e) if again && reading.held_before(e.time, epoch_secs) => {
                        reading.held_again += 1;
                    }
                    Replayed::Dead(dl) => dead.write(&dl)?,
                    Replayed::Event(event) => {
                        let admitted = reading.admit(event, epoch_secs, open);
                        if let (Some(points), Some(mark), Ok(epoch)) =
                            (reading.points.as_mut(), mark, &admitted)
                        {
                            points.file_admitted(mark, *epoch);
                        }
                        if let Err(event) = admitted {
                            let rej = reading.late(&event);
                            dead.write(&DeadLetter {
                                reason: rej.reason,
                                message: rej.message,
                                position: Position {
                                    file: "input".into(),
                                    line: 0,
                                    offset: 0,
                                },
                                raw: serde_json::to_string(&event).unwrap_or_default(),
                            })?;
                        }
                    }
                }
            }
            Ok(Arrival::File(Err(e))) => return Err(e.into()),
            Ok(Arrival::FilesEnded) => {
                reading.watermarks.end((FILES, 0));
                reading.catching_up.remove(&(FILES, 0));
                files_done = true;
                backlog.store(false, Ordering::SeqCst);
            }
            Ok(Arrival::Bus(event)) => {
                if let BusEvent::Records { source, records } = &event {
                    if let Some(gate) = read_ahead.get(*source) {
                        gate.taken(records.len());
                    }
                }
                on_bus_event(event, &mut reading, &live, epoch_secs, open, dead)?;
            }
            // A live input with nothing new: hand over what is buffered.
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        if files_done && handles.is_empty() {
            break;
        }
        // Every bus must have connected: one never reached is not idle, it is down.
        let all_connected = reading.connected.iter().all(|c| *c);
        if live.exit_when_idle && files_done && all_connected && reading.watermarks.all_quiet(now) {
            tracing::info!("every source is idle: ending as if the inputs had ended");
            break;
        }
        if live.stop.load(Ordering::SeqCst) {
            stopped = true;
            break;
        }
        // Paced replays (and live sources) trickle: hand over what arrived at
        // least every FLUSH_EVERY, so that epochs commit as time passes.
        if reading.buffer.len() >= 1024 || last_flush.elapsed() >= FLUSH_EVERY {
            last_flush = Instant::now();
            let c = cap.as_mut().expect("held until the end");
            flush(&mut reading.buffer, c, input);
            if !reading.read.is_empty() {
                in_flight.read(&reading.read);
                reading.read.clear();
            }
            live.status.repeats.note_read(&reading.origins);
            reading.origins.clear();
            if resumed_before > 0 && reading.catching_up.is_empty() && !caught_up {
                caught_up = true;
                tracing::info!(
                    seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
                    skipped = reading.held_again,
                    "caught up with the checkpoint: every source has read again as far as it had \
                     (skipped: records read again that the checkpoint holds)"
                );
            }
            if let Some(wm) = reading.watermarks.advance(now, Utc::now()) {
                live.status.set_pipeline_watermark(wm.timestamp());
                let t = epoch_of(wm, epoch_secs);
                if t > *c.time() && reading.catching_up.is_empty() {
                    c.downgrade(&t);
                }
            }
            worker.step();
            // Let completed epochs through (the feedback edge needs a round
            // of progress per epoch), within a bounded time.
            while probe.less_than(c.time()) && last_flush.elapsed() < FLUSH_EVERY {
                worker.step_or_park(Some(PARK_AT_MOST));
            }
            if let Some(cp) = checkpointer.as_mut().filter(|cp| cp.due()) {
                let w = *c.time();
                if w > last_checkpoint {
                    // Every epoch before the input's must complete (the
                    // dataflow runs meanwhile); then the state holds
                    // exactly those.
                    while probe.less_than(&w) {
                        worker.step_or_park(Some(PARK_AT_MOST));
                    }
                    take_checkpoint(cp, w, &mut reading, has_files, output_path.as_deref(), dead)?;
                    last_checkpoint = w;
                }
            }
            // Back-pressure: let embedding and preparation (on any worker of
            // any process) catch up before reading further.
            live.status.set_signals_read(reading.signals);
            while live.status.embed_queue() > max_in_flight {
                worker.step_or_park(Some(PARK_AT_MOST));
            }
            // ... and the rest of the dataflow: epochs wait in the idea state
            // until the watermark passes them, so a source that outruns it
            // would pile up prepared signals without bound. Everything before
            // the watermark can complete, so this wait always ends.
            if reading.signals - sent_at_catch_up > max_in_flight {
                while probe.less_than(c.time()) {
                    worker.step_or_park(Some(PARK_AT_MOST));
                }
                sent_at_catch_up = reading.signals;
            }
            progress.update(progress_bytes.read(), reading.events);
        }
    }
    for h in &handles {
        h.stop_reading();
    }
    if stopped {
        // Commit what is complete; what was read past it waits for the next start.
        let c = cap.as_ref().expect("held until the end");
        let open = *c.time();
        tracing::info!(
            complete_before = open,
            "stopping: committing the complete epochs"
        );
        let deadline = Instant::now() + live.shutdown_timeout;
        while probe.less_than(&open) && Instant::now() < deadline {
            worker.step_or_park(Some(PARK_AT_MOST));
        }
        let mut complete = open;
        probe.with_frontier(|f| {
            if let Some(first) = f.first() {
                complete = complete.min(*first);
            }
        });
        if complete < open {
            tracing::warn!(
                complete_before = complete,
                "pipeline.shutdown_timeout_secs passed before every complete epoch was committed; the rest is read again at the next start"
            );
        }
        cutoff.store(complete, Ordering::SeqCst);
        // The state holds exactly the epochs before `open` (those after it
        // have not begun): the next start goes on from here.
        if let Some(cp) = checkpointer.as_mut() {
            if complete == open && open > last_checkpoint {
                take_checkpoint(
                    cp,
                    open,
                    &mut reading,
                    has_files,
                    output_path.as_deref(),
                    dead,
                )?;
            }
        }
        reading.buffer.clear();
    } else {
        // The inputs ended (or went idle): a last checkpoint, so that a
        // restart on the same inputs, or on files that grew since, goes
        // on from here.
        if let (Some(cp), Some(c)) = (checkpointer.as_mut(), cap.as_ref()) {
            let w = *c.time();
            if w > last_checkpoint {
                while probe.less_than(&w) {
                    worker.step_or_park(Some(PARK_AT_MOST));
                }
                take_checkpoint(cp, w, &mut reading, has_files, output_path.as_deref(), dead)?;
            }
        }
        if let Some(c) = cap.as_ref() {
            flush(&mut reading.buffer, c, input);
        }
        if !reading.read.is_empty() {
            in_flight.read(&reading.read);
        }
        live.status.repeats.note_read(&reading.origins);
    }
    // The file chain's thread may be blocked reading standard input: it is
    // left behind on a stop, and ends with the process.
    if let Some(reader) = reader {
        if !stopped && reader.join().is_err() {
            return Err(anyhow!(
                "the source thread stopped unexpectedly; its panic message is above"
            ));
        }
    }
    drop(cap.take());
    while worker.step_or_park(None) {
        let _ = probe;
    }
    dead.flush()?;
    if let Some(cp) = checkpointer.as_mut() {
        cp.finish();
        if cp.taken > 0 {
            tracing::info!(
                checkpoints = cp.taken,
                longest_pause_ms = cp.longest_pause.as_millis() as u64,
                "checkpoints taken in this run"
            );
        }
    }
    let (_, seconds) = progress.finish();
    Ok((
        RunSummary {
            events: reading.events,
            signals_out: sunk.load(Ordering::Relaxed),
            dead_letters: dead.total(),
            dead_by_reason: dead
                .counts()
                .iter()
                .map(|(r, n)| (r.to_string(), *n))
                .collect(),
            seconds: seconds.max(started.elapsed().as_secs_f64()),
        },
        handles,
    ))
}

/// Takes a checkpoint of the state, which holds exactly the epochs starting
/// before `complete_before`, with where the sources and files stand.
fn take_checkpoint(
    cp: &mut crate::checkpoint::capture::Checkpointer,
    complete_before: u64,
    reading: &mut Reading,
    has_files: bool,
    output_path: Option<&std::path::Path>,
    dead: &mut DeadLetterSink,
) -> Result<()> {
    dead.flush()?;
    let resume = reading.resume_points(complete_before);
    let at = AtCapture {
        complete_before,
        watermark: reading.watermarks.current().map(|t| t.timestamp()),
        positions: reading.positions(has_files, &resume),
        run: RunState {
            read: reading.read_through(),
            resume,
            output_bytes: output_path.and_then(file_len),
            dead_letter_bytes: file_len(dead.path()).unwrap_or(0),
            dead_letters_by_reason: serde_json::to_string(dead.counts()).unwrap_or_default(),
            ..RunState::default()
        },
    };
    match cp.capture(at) {
        Ok(pause) => tracing::info!(
            complete_before,
            pause_ms = pause.as_millis() as u64,
            "checkpoint taken; written once the sinks hold its epochs"
        ),
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "no checkpoint taken"),
    }
    Ok(())
}

/// A file's length (`None` for standard output or a missing file).
fn file_len(path: &std::path::Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

/// One report of a bus source's thread.
fn on_bus_event(
    event: BusEvent,
    reading: &mut Reading,
    live: &LiveSettings,
    epoch_secs: u64,
    open: u64,
    dead: &mut DeadLetterSink,
) -> Result<()> {
    match event {
        BusEvent::Connected { source, partitions } => {
            if let Some(c) = reading.connected.get_mut(source) {
                *c = true;
            }
            for p in &partitions {
                reading.watermarks.add((source + 1, *p));
            }
            // A partition the checkpoint knew that the bus no longer has
            // has nothing to read again.
            reading
                .catching_up
                .retain(|(s, p)| *s != source + 1 || partitions.contains(p));
            live.status.connected(source, &partitions);
        }
        BusEvent::Records { source, records } => {
            for r in records {
                let key = (source + 1, r.partition);
                reading.watermarks.records(key);
                // Where a restart would read this record again from, and
                // what the partition's watermark was just before it.
                let after = reading.bus_read.get(&(source, r.partition)).copied();
                let own_before = reading.watermarks.own(key);
                let ParsedRecord {
                    partition,
                    position,
                    location,
                    parsed,
                    raw,
                    redelivered,
                    digest,
                } = r;
                let judged = parsed
                    .and_then(|e| ahead_of_the_clock(e, live.max_future))
                    .and_then(|e| match reading.watermarks.observe(key, e.time) {
                        Ok(()) => Ok(e),
                        Err(late) => Err(late_rejection(&e, &late)),
                    });
                reading.bus_read.insert((source, partition), position);
                let through = reading.bus_skip.get(&(source, partition)).copied();
                let again = through.is_some_and(|t| SavedPosition::from(position) <= t);
                if through.is_some_and(|t| SavedPosition::from(position) >= t) {
                    reading.catching_up.remove(&key);
                }
                let held = match &judged {
                    // Refused before the checkpoint: in the dead letters.
                    Err(_) => true,
                    Ok(e) => reading.held_before(e.time, epoch_secs),
                };
                if again && held {
                    reading.held_again += 1;
                    // In the checkpoint resumed from: acknowledged with the
                    // next commit.
                    reading.read.push(ReadRecord {
                        source,
                        partition,
                        position,
                        epoch: open,
                        redelivered,
                    });
                    continue;
                }
                let judged = match judged {
                    Ok(event) => reading
                        .admit(event, epoch_secs, open)
                        .map_err(|event| reading.late(&event)),
                    Err(rej) => Err(rej),
                };
                let epoch = match judged {
                    Ok(epoch) => {
                        if let Some(d) = digest {
                            reading.origins.push((d, epoch, source, partition));
                        }
                        if let Some(points) = reading.points.as_mut() {
                            points.bus_record(key, epoch, after, own_before);
                        }
                        epoch
                    }
                    Err(rej) => {
                        dead.write(&bus_dead_letter(&location, position, &raw, rej))?;
                        open
                    }
                };
                live.status.set_watermark(
                    source,
                    partition,
                    reading.watermarks.own(key).map(|w| w.timestamp()),
                );
                reading.read.push(ReadRecord {
                    source,
                    partition,
                    position,
                    epoch,
                    redelivered,
                });
            }
        }
        BusEvent::Empty { source, partitions } => {
            let now = Instant::now();
            for p in partitions {
                reading.watermarks.empty((source + 1, p), now);
                // Caught up with the bus: nothing more to read again.
                reading.catching_up.remove(&(source + 1, p));
            }
        }
        BusEvent::Unreachable { source, message } => live.status.unreachable(source, message),
        BusEvent::Lag { source, lag } => live.status.set_lag(source, &lag),
        BusEvent::Failed { message, .. } => {
            return Err(anyhow!("{message}"));
        }
    }
    Ok(())
}
