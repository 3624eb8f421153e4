//! Drives one [`Bus`] on a thread of its own: connects (again, with
//! backoff, while the bus is unreachable: never a crash), reads and parses
//! records, hands them to the pipeline through a bounded channel (so a
//! pipeline that cannot keep up slows the reading: records in flight stay
//! bounded and the lag shows it), and acknowledges what the sinks committed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ideaflow_operators::redelivery::RecordDigest;
use ideaflow_operators::validate::parse_line;
use ideaflow_operators::{Event, RejectReason, Rejection};

use super::in_flight::AckMsg;
use super::read_ahead::ReadAhead;
use super::{Bus, BusError, BusPosition};

/// A bus record, parsed on the reading thread.
#[derive(Debug)]
pub struct ParsedRecord {
    pub partition: u32,
    pub position: BusPosition,
    /// Where it is, as a dead letter names it (`topic/partition/offset`).
    pub location: String,
    pub parsed: Result<Event, Rejection>,
    /// The payload as read (for a dead letter, should it be refused later).
    pub raw: Vec<u8>,
    pub redelivered: bool,
    /// What the seen-sets know the record by (to count it by partition
    /// should the state refuse it as a repeat), hashed on this thread.
    pub digest: Option<RecordDigest>,
}

/// What a bus source's thread reports.
#[derive(Debug)]
pub enum BusEvent {
    /// Connected: the partitions it reads.
    Connected { source: usize, partitions: Vec<u32> },
    Records {
        source: usize,
        records: Vec<ParsedRecord>,
    },
    /// Reads of these partitions came back empty.
    Empty { source: usize, partitions: Vec<u32> },
    /// The bus cannot be reached now; retried with backoff.
    Unreachable { source: usize, message: String },
    /// Records behind the head, by partition.
    Lag {
        source: usize,
        lag: Vec<(u32, Option<u64>)>,
    },
    /// Retrying cannot help: the pipeline stops with this.
    Failed { source: usize, message: String },
}

/// How the thread reads.
#[derive(Clone, Copy, Debug)]
pub struct RunnerSettings {
    /// Most records one read brings.
    pub batch: usize,
    /// How long a read waits when nothing is there.
    pub wait: Duration,
    /// How often the lag is asked for.
    pub lag_every: Duration,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        RunnerSettings {
            batch: 512,
            wait: Duration::from_millis(100),
            lag_every: Duration::from_secs(1),
        }
    }
}

/// A running bus source.
pub struct BusHandle {
    pub acks: Sender<AckMsg>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BusHandle {
    /// Stop reading; acknowledgements still go through until [`BusHandle::finish`].
    pub fn stop_reading(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Stops reading, acknowledges what was sent before, and waits for the thread.
    pub fn finish(mut self) {
        self.stop_reading();
        let _ = self.acks.send(AckMsg::Finish);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The payload of a record, or the reason it has none.
fn parse(payload: Option<&[u8]>) -> Result<Event, Rejection> {
    match payload {
        Some(p) => parse_line(p.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(p)),
        None => Err(Rejection::new(
            RejectReason::MissingField,
            "the bus record has no payload (a Kafka record without a value, a stream entry without a `data` field); put one line of the input format there",
        )),
    }
}

/// Starts the thread for source `index`.
pub fn spawn<T: From<BusEvent> + Send + 'static>(
    index: usize,
    mut bus: Box<dyn Bus>,
    out: SyncSender<T>,
    settings: RunnerSettings,
    read_ahead: ReadAhead,
) -> BusHandle {
    let (acks, ack_rx) = channel::<AckMsg>();
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::Builder::new()
        .name(format!("ideaflow-bus-{index}"))
        .spawn(move || {
            run(
                index,
                bus.as_mut(),
                &out,
                &ack_rx,
                &stopping,
                settings,
                &read_ahead,
            )
        })
        .expect("the bus source thread starts");
    BusHandle {
        acks,
        stop,
        thread: Some(thread),
    }
}

/// Sends unless told to stop meanwhile (the pipeline no longer reads).
fn send<T: From<BusEvent>>(out: &SyncSender<T>, stop: &AtomicBool, event: BusEvent) -> bool {
    let mut event = T::from(event);
    loop {
        match out.try_send(event) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(e)) => {
                if stop.load(Ordering::SeqCst) {
                    return false;
                }
                event = e;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

fn run<T: From<BusEvent>>(
    index: usize,
    bus: &mut dyn Bus,
    out: &SyncSender<T>,
    acks: &Receiver<AckMsg>,
    stop: &AtomicBool,
    settings: RunnerSettings,
    read_ahead: &ReadAhead,
) {
    let mut connected = false;
    let mut backoff = Duration::from_millis(100);
    let mut last_lag = Instant::now();
    // Acknowledgements that failed (the bus went away): tried again.
    let mut unacked: Vec<(u32, BusPosition)> = Vec::new();
    loop {
        // Acknowledgements first: they free the bus's pending lists.
        loop {
            let msg = if stop.load(Ordering::SeqCst) && unacked.is_empty() {
                match acks.recv_timeout(Duration::from_millis(100)) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match acks.try_recv() {
                    Ok(m) => m,
                    Err(_) => break,
                }
            };
            match msg {
                AckMsg::Done(done) => unacked.extend(done),
                AckMsg::Finish => {
                    if connected && !unacked.is_empty() {
                        if let Err(e) = bus.ack(&unacked) {
                            tracing::warn!(source = bus.name(), error = %e, records = unacked.len(),
                                "could not acknowledge the last committed records; they are read again at the next start");
                        }
                    }
                    return;
                }
            }
        }
        if connected && !unacked.is_empty() {
            match bus.ack(&unacked) {
                Ok(()) => unacked.clear(),
                Err(e) => {
                    tracing::warn!(source = bus.name(), error = %e, "acknowledging failed; reconnecting");
                    connected = false;
                }
            }
        }
        if stop.load(Ordering::SeqCst) {
            if !connected && !unacked.is_empty() {
                connected = bus.connect().is_ok();
                if !connected {
                    std::thread::sleep(backoff);
                }
            }
            continue;
        }
        if !connected {
            match bus.connect() {
                Ok(partitions) => {
                    connected = true;
                    backoff = Duration::from_millis(100);
                    if !send(
                        out,
                        stop,
                        BusEvent::Connected {
                            source: index,
                            partitions,
                        },
                    ) {
                        continue;
                    }
                }
                Err(e) if e.is_fatal() => return fail(out, stop, index, &e),
                Err(e) => {
                    tracing::warn!(source = bus.name(), error = %e, retry_in_ms = backoff.as_millis() as u64,
                        "the bus is unreachable; retrying");
                    wait_unreachable(out, stop, index, &e, backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        // The pipeline has not taken what was read: leave the rest on the
        // bus (its lag shows it), acknowledging meanwhile.
        if !read_ahead.has_room() {
            if last_lag.elapsed() >= settings.lag_every {
                last_lag = Instant::now();
                let lag = bus.lag();
                send(out, stop, BusEvent::Lag { source: index, lag });
            }
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        match bus.poll(settings.batch, settings.wait) {
            Ok(polled) => {
                if !polled.records.is_empty() {
                    let records = polled
                        .records
                        .into_iter()
                        .map(|r| {
                            let parsed = parse(r.payload.as_deref());
                            ParsedRecord {
                                location: bus.describe_position(r.partition, r.position),
                                digest: parsed.as_ref().ok().and_then(RecordDigest::of),
                                parsed,
                                raw: r.payload.unwrap_or_default(),
                                partition: r.partition,
                                position: r.position,
                                redelivered: r.redelivered,
                            }
                        })
                        .collect::<Vec<_>>();
                    read_ahead.sent(records.len());
                    send(
                        out,
                        stop,
                        BusEvent::Records {
                            source: index,
                            records,
                        },
                    );
                }
                if !polled.empty.is_empty() {
                    send(
                        out,
                        stop,
                        BusEvent::Empty {
                            source: index,
                            partitions: polled.empty,
                        },
                    );
                }
            }
            Err(e) if e.is_fatal() => return fail(out, stop, index, &e),
            Err(e) => {
                tracing::warn!(source = bus.name(), error = %e, "reading failed; reconnecting");
                connected = false;
                wait_unreachable(out, stop, index, &e, backoff);
                continue;
            }
        }
        if last_lag.elapsed() >= settings.lag_every {
            last_lag = Instant::now();
            let lag = bus.lag();
            send(out, stop, BusEvent::Lag { source: index, lag });
        }
    }
}

/// Reports an error retrying cannot help: the pipeline stops with it.
fn fail<T: From<BusEvent>>(out: &SyncSender<T>, stop: &AtomicBool, index: usize, e: &BusError) {
    let message = e.to_string();
    send(
        out,
        stop,
        BusEvent::Failed {
            source: index,
            message,
        },
    );
}

/// Reports the bus unreachable, then waits `backoff` (unless told to stop).
fn wait_unreachable<T: From<BusEvent>>(
    out: &SyncSender<T>,
    stop: &AtomicBool,
    index: usize,
    e: &BusError,
    backoff: Duration,
) {
    let message = e.to_string();
    send(
        out,
        stop,
        BusEvent::Unreachable {
            source: index,
            message,
        },
    );
    sleep_unless_stopped(backoff, stop);
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
}
