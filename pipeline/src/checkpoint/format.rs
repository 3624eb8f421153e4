//! A checkpoint file: what it holds and how its bytes are laid out.
//!
//! ```text
//! magic "IDEAFLOW-CHECKPOINT\n"        20 bytes
//! header length                        u32, little endian
//! header                               postcard (Header)
//! header CRC-32                        u32, little endian
//! body                                 postcard (Body)
//! body length                          u64, little endian
//! body CRC-32                          u32, little endian
//! ```
//!
//! The header says what the body holds (for `checkpoint inspect`, which
//! reads no state). The body's length and CRC-32 follow it, so that it is
//! encoded straight into the file (at a million signals it is over a
//! gigabyte, never held whole in memory), and a truncated or corrupt file
//! is found before any of it is decoded. Postcard is compact (varints, no
//! field names) and not self-describing, so a change to the state's layout
//! needs a new [`FORMAT_VERSION`]; a checkpoint of another version is
//! refused, never misread.

use std::io::{Read, Seek, SeekFrom, Write};

use ideaflow_operators::classify::Anchor;
use ideaflow_operators::feedback::FeedbackState;
use ideaflow_operators::idea_state::IdeaState;
use ideaflow_operators::score::Weights;
use ideaflow_operators::shared_embedding::{shared_while_reading, shared_while_writing};
use serde::{Deserialize, Serialize};

use super::capture::{RunState, SavedPosition};

pub const MAGIC: &[u8; 20] = b"IDEAFLOW-CHECKPOINT\n";

/// Bumped whenever the header's or the state's serde form changes.
pub const FORMAT_VERSION: u32 = 4;

/// The most a header may claim to be: a larger length is corruption.
const MAX_HEADER: u32 = 64 << 20;

/// What a checkpoint is of, readable without decoding the state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub version: u32,
    /// Hex SHA-256 of the settings that change results
    /// ([`crate::checkpoint::fingerprint`]): a checkpoint from another
    /// configuration is not resumed.
    pub fingerprint: String,
    /// Every epoch starting before this (seconds) is in the state.
    pub complete_before: u64,
    /// The pipeline's watermark when it was taken (seconds).
    pub watermark: Option<i64>,
    /// When it was taken (RFC 3339, wall clock): for ops only.
    pub written_at: String,
    pub positions: Vec<SourcePosition>,
    pub counts: Counts,
}

/// Where one source (or one of its partitions) stood.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// The source as configured (a file chain, or a bus URL without credentials).
    pub source: String,
    /// A bus partition; 0 for the file chain.
    pub partition: u32,
    /// Everything up to this was read (records of the file chain, a Kafka
    /// or Fluvio offset, a stream entry id), as text.
    pub read_through: String,
    /// Where a restart reads again from, as text.
    pub resume: String,
    /// A bus partition's resume point: a restart reads after it, so the
    /// bus may drop what comes before (`pipeline.trim_sources`).
    pub resume_after: Option<SavedPosition>,
    /// The watermark of this source or partition (seconds).
    pub watermark: Option<i64>,
}

/// How much the state holds, for ops.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub live_ideas: u64,
    pub archived_ideas: u64,
    /// Vectors in the near-duplicate index (live ideas' and their
    /// near-duplicates'; each embedding is written once).
    pub vectors: u64,
    /// Signals remembered to take redeliveries once.
    pub seen_signals: u64,
    /// Feedback events waiting for their ideas.
    pub pending_feedback: u64,
}

/// The state itself.
#[derive(Serialize, Deserialize)]
pub struct Body {
    pub ideas: IdeaState,
    pub moved_anchors: Option<Vec<Anchor>>,
    pub feedback: Option<FeedbackState>,
    /// Weights learned in the last complete epoch that the idea state takes
    /// at the next one (they were on the dataflow's feedback edge).
    pub weights_in_flight: Option<Weights>,
    /// Likewise, anchors moved by classification feedback.
    pub anchors_in_flight: Option<Vec<Anchor>>,
    pub run: RunState,
}

/// Borrowed form of [`Body`], for writing (the same serde form).
#[derive(Serialize)]
pub struct BodyRef<'a> {
    pub ideas: &'a IdeaState,
    pub moved_anchors: Option<Vec<Anchor>>,
    pub feedback: Option<&'a FeedbackState>,
    pub weights_in_flight: Option<Weights>,
    pub anchors_in_flight: Option<Vec<Anchor>>,
    pub run: &'a RunState,
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not a checkpoint (no ideaflow checkpoint header)")]
    NotACheckpoint,
    #[error("truncated: {0}")]
    Truncated(&'static str),
    #[error("its header is corrupt (checksum mismatch)")]
    HeaderCorrupt,
    #[error("its state is corrupt (checksum mismatch)")]
    BodyCorrupt,
    #[error("format version {found}, this build reads version {FORMAT_VERSION}")]
    Version { found: u32 },
    #[error("could not decode it: {0}")]
    Decode(#[from] postcard::Error),
    /// Postcard reports a failed write as a full buffer: most often the
    /// disk is.
    #[error("could not encode it into the file ({0}): is the disk full?")]
    Encode(postcard::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The length and CRC-32 after the body.
const TRAILER: u64 = 12;

/// Encodes the state into `out`, each shared embedding written once.
pub fn encode_body(out: &mut dyn Write, body: &BodyRef<'_>) -> Result<(), FormatError> {
    // Postcard writes varints and small fields a byte at a time: a buffer
    // of a known type takes them without a call through `out` each.
    let mut buffered = std::io::BufWriter::with_capacity(1 << 16, out);
    shared_while_writing(|| postcard::to_io(body, &mut buffered)).map_err(FormatError::Encode)?;
    buffered.flush()?;
    Ok(())
}

/// Writes the magic and `header` (of this build's version).
pub fn write_header(out: &mut impl Write, header: &Header) -> Result<(), FormatError> {
    let header = Header {
        version: FORMAT_VERSION,
        ..header.clone()
    };
    let head = postcard::to_allocvec(&header)?;
    out.write_all(MAGIC)?;
    out.write_all(&(head.len() as u32).to_le_bytes())?;
    out.write_all(&head)?;
    out.write_all(&crc32fast::hash(&head).to_le_bytes())?;
    Ok(())
}

/// Writes the body that `encode` streams into its writer, then its length
/// and checksum.
pub fn write_body(
    out: &mut impl Write,
    encode: impl FnOnce(&mut dyn Write) -> Result<(), FormatError>,
) -> Result<(), FormatError> {
    let mut body = Checked {
        out: &mut *out,
        crc: crc32fast::Hasher::new(),
        len: 0,
    };
    encode(&mut body)?;
    let (len, crc) = (body.len, body.crc.finalize());
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&crc.to_le_bytes())?;
    Ok(())
}

/// A writer that counts and checksums what passes through it.
struct Checked<W> {
    out: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Write for Checked<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Reads the header (checked) and leaves `input` at the body.
pub fn read_header(input: &mut impl Read) -> Result<Header, FormatError> {
    let mut magic = [0u8; MAGIC.len()];
    read_exact(input, &mut magic, "no header")?;
    if &magic != MAGIC {
        return Err(FormatError::NotACheckpoint);
    }
    let mut word = [0u8; 4];
    read_exact(input, &mut word, "no header length")?;
    let len = u32::from_le_bytes(word);
    if len > MAX_HEADER {
        return Err(FormatError::HeaderCorrupt);
    }
    let mut head = vec![0u8; len as usize];
    read_exact(input, &mut head, "the header is cut short")?;
    read_exact(input, &mut word, "the header's checksum is missing")?;
    if crc32fast::hash(&head) != u32::from_le_bytes(word) {
        return Err(FormatError::HeaderCorrupt);
    }
    // The version is the first field: read it alone first, so that another
    // version's header is reported as such rather than as undecodable.
    let (found, _) = postcard::take_from_bytes::<u32>(&head)?;
    if found != FORMAT_VERSION {
        return Err(FormatError::Version { found });
    }
    Ok(postcard::from_bytes(&head)?)
}

/// Reads the body that follows the header (to the end of `input`) and
/// checks its length and checksum; the bytes are decoded by [`decode_body`].
pub fn read_body(input: &mut impl Read) -> Result<Vec<u8>, FormatError> {
    let mut body = Vec::new();
    input.read_to_end(&mut body)?;
    let Some(at) = body.len().checked_sub(TRAILER as usize) else {
        return Err(FormatError::Truncated("the state is cut short"));
    };
    let (len, crc) = trailer(&body[at..]);
    body.truncate(at);
    if len != at as u64 {
        return Err(FormatError::Truncated("the state is cut short"));
    }
    if crc32fast::hash(&body) != crc {
        return Err(FormatError::BodyCorrupt);
    }
    Ok(body)
}

/// Checks the body's length and checksum without keeping it (for `inspect`).
pub fn check_body(input: &mut (impl Read + Seek)) -> Result<(), FormatError> {
    let start = input.stream_position()?;
    let end = input.seek(SeekFrom::End(0))?;
    let Some(body_len) = (end - start).checked_sub(TRAILER) else {
        return Err(FormatError::Truncated("the state is cut short"));
    };
    input.seek(SeekFrom::Start(start))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut left = body_len;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = input.read(&mut buf[..left.min(1 << 20) as usize])?;
        if n == 0 {
            return Err(FormatError::Truncated("the state is cut short"));
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    let mut end = [0u8; TRAILER as usize];
    read_exact(input, &mut end, "the state's length is missing")?;
    let (len, crc) = trailer(&end);
    if len != body_len {
        return Err(FormatError::Truncated("the state is cut short"));
    }
    if hasher.finalize() != crc {
        return Err(FormatError::BodyCorrupt);
    }
    Ok(())
}

/// The body's length and CRC-32 from the bytes after it.
fn trailer(bytes: &[u8]) -> (u64, u32) {
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[..8]);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[8..12]);
    (u64::from_le_bytes(len), u32::from_le_bytes(crc))
}

pub fn decode_body(bytes: &[u8]) -> Result<Body, FormatError> {
    Ok(shared_while_reading(|| postcard::from_bytes(bytes))?)
}

fn read_exact(
    input: &mut impl Read,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), FormatError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FormatError::Truncated(what),
        _ => FormatError::Io(e),
    })
}
