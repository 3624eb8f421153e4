//! The replay source: JSONL files (plain or gzip) read one after another as a
//! stream in event time. Every line becomes either a validated [`Event`] or a
//! [`DeadLetter`]; events behind the watermark are dead-lettered as `late`,
//! and events too far ahead of the wall clock as `future_time`.

mod line_reader;
mod pacer;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use flate2::read::MultiGzDecoder;
use ideaflow_operators::validate::parse_line;
use ideaflow_operators::watermark::{Late, Watermark};
use ideaflow_operators::{DeadLetter, Event, Position, RejectReason, Rejection};
use serde::{Deserialize, Serialize};

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

/// Where an item of the file chain starts and what the chain's reader knew
/// before it: enough to read the chain again from there (a checkpoint's
/// resume point) and judge every item after it as it was judged the first
/// time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainMark {
    /// Items (events and refused lines) before it.
    pub item: u64,
    /// Its file's index in the chain.
    pub file: u32,
    /// Its first byte in that file, and its line there (1-based).
    pub offset: u64,
    pub line: u64,
    /// The largest event time seen before it.
    pub max_seen: Option<DateTime<Utc>>,
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
    /// Items given so far (counting those a resume skipped).
    items: u64,
    /// Where the last item given started.
    mark: Option<ChainMark>,
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
            items: 0,
            mark: None,
        })
    }

    /// Starts at `mark` (a checkpoint's resume point) instead of the
    /// chain's start, when its file can be read from an offset: returns
    /// the items passed over (`mark.item`), or 0 when the chain is read
    /// from its start instead (standard input, a gzip file, a file now
    /// shorter than the mark), in which case the caller skips by counting.
    pub fn resume_at(&mut self, mark: &ChainMark) -> Result<u64, ReplayError> {
        let Some(path) = self.files.get(mark.file as usize).cloned() else {
            return Ok(0);
        };
        if is_stdin(&path) || self.files[..mark.file as usize].iter().any(|f| is_stdin(f)) {
            return Ok(0);
        }
        let open_err = |source| ReplayError::Open {
            path: path.clone(),
            source,
        };
        let mut file = File::open(&path).map_err(open_err)?;
        let mut magic = [0u8; 2];
        let gzip = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
        let len = file.metadata().map_err(open_err)?.len();
        if gzip || len < mark.offset {
            return Ok(0);
        }
        file.seek(SeekFrom::Start(mark.offset)).map_err(open_err)?;
        let before: u64 = self.files[..mark.file as usize]
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        self.progress
            .read
            .fetch_add(before + mark.offset, Ordering::Relaxed);
        let counted = CountingReader {
            inner: Box::new(file) as Box<dyn Read + Send>,
            counter: self.progress.read.clone(),
        };
        let reader: Box<dyn BufRead + Send> = Box::new(BufReader::with_capacity(1 << 16, counted));
        self.current = Some((
            path.display().to_string(),
            LineReader::starting_at(reader, mark.line, mark.offset),
        ));
        self.next_file = mark.file as usize + 1;
        self.watermark.restore(mark.max_seen);
        self.items = mark.item;
        Ok(mark.item)
    }

    /// Where the last item given started (`None` before the first).
    pub fn mark(&self) -> Option<ChainMark> {
        self.mark
    }

    /// Whether the chain is a backlog, read as fast as the pipeline takes
    /// it: files at full speed (not paced, not standard input, which is a
    /// live stream however fast it is read).
    pub fn is_backlog(&self) -> bool {
        self.pacer.speed() == Speed::Max && !self.files.iter().any(|f| is_stdin(f))
    }

    /// Gives the next `items` items (events and refused lines) without
    /// pacing: a restart reads them again only to skip them.
    pub fn unpaced_for(mut self, items: u64) -> Self {
        self.unpaced = items;
        self
    }

    /// Dead-letters events whose time is more than `limit` ahead of the wall
    /// clock when read (`None`: no limit). One record stamped centuries ahead
    /// (a typo in the year, a producer's sentinel date) would otherwise move
    /// the watermark past every record after it. Historical replays are
    /// untouched: their events are in the past.
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
            self.mark = Some(ChainMark {
                item: self.items,
                file: (self.next_file - 1) as u32,
                offset: raw.offset,
                line: raw.line,
                max_seen: self.watermark.max_seen(),
            });
            self.items += 1;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, minute: u32) -> String {
        format!(
            r#"{{"eventType":"signal.ingested","eventId":"{id}","timestamp":"2026-01-01T10:{minute:02}:00Z","source":"svc","version":"1.0","data":{{"signalId":"{id}","source":"reddit","captured_at":"2026-01-01T10:{minute:02}:00Z","content":"post {id}"}}}}"#
        )
    }

    /// What each item reads as: an event's id or a dead letter's reason and position.
    fn describe(item: &Replayed) -> String {
        match item {
            Replayed::Event(e) => format!("event {:?}", e.meta.event_id),
            Replayed::Dead(d) => format!(
                "dead {} {}:{}@{}",
                d.reason, d.position.file, d.position.line, d.position.offset
            ),
        }
    }

    #[test]
    fn resuming_at_any_mark_reads_the_rest_as_the_first_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("a.jsonl");
        let second = dir.path().join("b.jsonl");
        // A byte order mark, a malformed line, a blank line, an event late by
        // the watermark of the events before it, and a second file.
        let a = format!(
            "\u{feff}{}\nnot json\n\n{}\n{}\n{}\n",
            line("a1", 0),
            line("a2", 30),
            line("a3", 1),
            line("a4", 31)
        );
        std::fs::write(&first, a).unwrap();
        std::fs::write(&second, format!("{}\n{}\n", line("b1", 40), line("b2", 5))).unwrap();
        let open = || {
            ReplaySource::new(
                vec![first.clone(), second.clone()],
                Duration::minutes(10),
                Speed::Max,
            )
            .unwrap()
        };
        let mut whole = open();
        let mut items = Vec::new();
        while let Some(item) = whole.next_item().unwrap() {
            items.push((whole.mark().unwrap(), describe(&item)));
        }
        assert_eq!(items.len(), 7);
        assert!(items[3].1.starts_with("dead late"), "{:?}", items[3]);
        assert!(items[6].1.starts_with("dead late"), "{:?}", items[6]);
        for (k, (mark, _)) in items.iter().enumerate() {
            let mut resumed = open();
            assert_eq!(resumed.resume_at(mark).unwrap(), k as u64);
            let mut rest = Vec::new();
            while let Some(item) = resumed.next_item().unwrap() {
                rest.push((resumed.mark().unwrap(), describe(&item)));
            }
            assert_eq!(rest, items[k..], "resumed at item {k}");
        }
    }

    #[test]
    fn a_gzip_file_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(
            &mut gz,
            format!("{}\n{}\n", line("a1", 0), line("a2", 1)).as_bytes(),
        )
        .unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let mut source = ReplaySource::new(vec![path], Duration::minutes(10), Speed::Max).unwrap();
        let mark = ChainMark {
            item: 1,
            file: 0,
            offset: 10,
            line: 2,
            max_seen: None,
        };
        assert_eq!(source.resume_at(&mark).unwrap(), 0);
        assert!(
            matches!(source.next_item().unwrap(), Some(Replayed::Event(e)) if e.meta.event_id.as_deref() == Some("a1"))
        );
    }
}
