//! The replay source: JSONL files (plain or gzip) read one after another as a
//! stream in event time. Every line becomes either a validated [`Event`] or a
//! [`DeadLetter`]; events behind the watermark are dead-lettered as `late`,
//! and events too far ahead of the wall clock as `future_time`.

mod line_reader;
mod pacer;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use flate2::read::MultiGzDecoder;
use ideaflow_operators::validate::parse_line;
use ideaflow_operators::watermark::{Late, Watermark};
use ideaflow_operators::{DeadLetter, Event, Position, RejectReason, Rejection};

pub use line_reader::{LineReader, RawLine, KEPT_PREFIX_BYTES};
pub use pacer::{Pacer, Speed};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot open input {path}: {source}; check the path and its permissions")]
    Open { path: PathBuf, source: io::Error },
    #[error(
        "reading {path} failed at line {line}: {source}; a gzip file may be truncated or corrupt"
    )]
    Read {
        path: PathBuf,
        line: u64,
        source: io::Error,
    },
}

/// One item of the replayed stream, in file order.
#[derive(Debug)]
pub enum Replayed {
    Event(Event),
    Dead(DeadLetter),
}

/// Bytes of input consumed so far (compressed bytes for gzip files), shared
/// with whoever reports progress.
#[derive(Clone, Default)]
pub struct ByteProgress {
    read: Arc<AtomicU64>,
    total: u64,
}

impl ByteProgress {
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
    pub fn total(&self) -> u64 {
        self.total
    }
}

struct CountingReader<R> {
    inner: R,
    counter: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

pub struct ReplaySource {
    files: Vec<PathBuf>,
    next_file: usize,
    current: Option<(String, LineReader<Box<dyn BufRead + Send>>)>,
    watermark: Watermark,
    /// How far ahead of the wall clock an event time may be (`None`: any).
    max_future: Option<Duration>,
    progress: ByteProgress,
    pacer: Pacer,
    /// Items still to give before pacing starts (a restart reads again,
    /// at full speed, what it had read before its checkpoint).
    unpaced: u64,
}

/// Whether an input path names standard input.
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// The UTF-8 byte order mark some tools write at the start of a file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

impl ReplaySource {
    /// Opens nothing yet but checks that every file exists, so a typo fails
    /// fast. `-` is standard input: a live stream, read as lines arrive,
    /// that ends when its writer closes it.
    pub fn new(
        files: Vec<PathBuf>,
        allowed_lateness: Duration,
        speed: Speed,
    ) -> Result<Self, ReplayError> {
        let mut total = 0;
        for f in files.iter().filter(|f| !is_stdin(f)) {
            let meta = std::fs::metadata(f).map_err(|source| ReplayError::Open {
                path: f.clone(),
                source,
            })?;
            total += meta.len();
        }
        Ok(ReplaySource {
            files,
            next_file: 0,
            current: None,
            watermark: Watermark::new(allowed_lateness),
            max_future: None,
            progress: ByteProgress {
                read: Arc::default(),
                total,
            },
            pacer: Pacer::new(speed),
            unpaced: 0,
        })
    }

    /// Dead-letters events whose time is more than `limit` ahead of the wall
    /// clock when read (`None`: no limit). One record stamped centuries ahead
    /// (a typo in the year, a producer's sentinel date) would otherwise move
    /// the watermark past every record after it. Historical replays are
    /// untouched: their events are in the past.
    /// Gives the first `items` items (events and refused lines) without
    /// pacing: a restart reads them again only to skip them.
    pub fn unpaced_for(mut self, items: u64) -> Self {
        self.unpaced = items;
        self
    }

    pub fn with_max_future(mut self, limit: Option<Duration>) -> Self {
        self.max_future = limit;
        self
    }

    pub fn progress(&self) -> ByteProgress {
        self.progress.clone()
    }

    /// The current watermark (max event time seen minus the allowed lateness).
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        self.watermark.current()
    }

    fn open(&self, path: &Path) -> Result<Box<dyn BufRead + Send>, ReplayError> {
        let file: Box<dyn Read + Send> = if is_stdin(path) {
            Box::new(io::stdin())
        } else {
            Box::new(File::open(path).map_err(|source| ReplayError::Open {
                path: path.to_owned(),
                source,
            })?)
        };
        let counted = CountingReader {
            inner: file,
            counter: self.progress.read.clone(),
        };
        let mut buffered = BufReader::with_capacity(1 << 16, counted);
        let is_gzip = buffered
            .fill_buf()
            .map(|b| b.starts_with(&[0x1f, 0x8b]))
            .unwrap_or(false);
        Ok(if is_gzip {
            Box::new(BufReader::with_capacity(
                1 << 16,
                MultiGzDecoder::new(buffered),
            ))
        } else {
            Box::new(buffered)
        })
    }

    /// The next item, or `None` when every file is exhausted.
    pub fn next_item(&mut self) -> Result<Option<Replayed>, ReplayError> {
        loop {
            if self.current.is_none() {
                let Some(path) = self.files.get(self.next_file).cloned() else {
                    return Ok(None);
                };
                self.next_file += 1;
                let reader = self.open(&path)?;
                self.current = Some((path.display().to_string(), LineReader::new(reader)));
            }
            let (name, reader) = self.current.as_mut().expect("opened above");
            let raw = reader.next_line().map_err(|source| ReplayError::Read {
                path: PathBuf::from(name.as_str()),
                line: 0,
                source,
            })?;
            let Some(raw) = raw else {
                self.current = None;
                continue;
            };
            if raw.too_long.is_none() && raw.bytes.iter().all(u8::is_ascii_whitespace) {
                continue; // blank lines carry nothing
            }
            let position = Position {
                file: name.clone(),
                line: raw.line,
                offset: raw.offset,
            };
            let item = self.judge(raw, position);
            self.unpaced = self.unpaced.saturating_sub(1);
            return Ok(Some(item));
        }
    }

    fn judge(&mut self, raw: RawLine, position: Position) -> Replayed {
        let result = match raw.too_long {
            Some(len) => Err(Rejection::new(
                RejectReason::LineTooLong,
                format!(
                    "line is {len} bytes; the limit is {} (kept its first {KEPT_PREFIX_BYTES} bytes here)",
                    ideaflow_operators::validate::MAX_LINE_BYTES
                ),
            )),
            // A byte order mark opens the file, not the record.
            None if raw.line == 1 => parse_line(raw.bytes.strip_prefix(BOM).unwrap_or(&raw.bytes)),
            None => parse_line(&raw.bytes),
        };
        let result = result.and_then(|event| ahead_of_the_clock(event, self.max_future));
        let result = result.and_then(|event| match self.watermark.observe(event.time) {
            Ok(()) => Ok(event),
            Err(late) => Err(late_rejection(&event, &late)),
        });
        match result {
            Ok(event) => {
                if self.unpaced == 0 {
                    self.pacer.pace(event.time);
                }
                Replayed::Event(event)
            }
            Err(rej) => Replayed::Dead(DeadLetter {
                reason: rej.reason,
                message: rej.message,
                position,
                raw: String::from_utf8_lossy(&raw.bytes).into_owned(),
            }),
        }
    }
}

/// The dead-letter reason of an event behind the watermark.
pub fn late_rejection(event: &Event, late: &Late) -> Rejection {
    Rejection::new(
        RejectReason::Late,
        format!(
            "event time {} is {}s behind the watermark {}; raise pipeline.allowed_lateness_secs to admit it",
            event.time.to_rfc3339(),
            late.behind.num_seconds(),
            late.watermark.to_rfc3339()
        ),
    )
}

/// Refuses an event more than `limit` ahead of the wall clock (`None`: any).
pub fn ahead_of_the_clock(event: Event, limit: Option<Duration>) -> Result<Event, Rejection> {
    let Some(limit) = limit else {
        return Ok(event);
    };
    let now = Utc::now();
    if now
        .checked_add_signed(limit)
        .is_none_or(|horizon| event.time <= horizon)
    {
        return Ok(event);
    }
    // The message names no clock reading: two replays of the same stream
    // write the same dead letters (the horizon only moves the decision
    // for records within seconds of it).
    Err(Rejection::new(
        RejectReason::FutureTime,
        format!(
            "event time {} is more than pipeline.max_future_secs = {} ahead of the wall clock; fix the producer's timestamps or raise the limit",
            event.time.to_rfc3339(),
            limit.num_seconds()
        ),
    ))
}

impl Iterator for ReplaySource {
    type Item = Result<Replayed, ReplayError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_item().transpose()
    }
}
