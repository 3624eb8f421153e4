//! Splits a byte stream into lines without ever holding more than the line
//! limit in memory: a longer line is cut, reported, and skipped to its end.

use std::io::{self, BufRead};

use ideaflow_operators::validate::MAX_LINE_BYTES;

/// How much of an over-long line is kept for the dead-letter record.
pub const KEPT_PREFIX_BYTES: usize = 64 * 1024;

/// One raw line and where it started.
#[derive(Debug, PartialEq, Eq)]
pub struct RawLine {
    pub bytes: Vec<u8>,
    /// 1-based.
    pub line: u64,
    pub offset: u64,
    /// The line was longer than the limit; `bytes` holds its first [`KEPT_PREFIX_BYTES`].
    pub too_long: Option<u64>,
}

pub struct LineReader<R> {
    inner: R,
    line: u64,
    offset: u64,
    limit: usize,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_limit(inner, MAX_LINE_BYTES)
    }

    pub fn with_limit(inner: R, limit: usize) -> Self {
        LineReader {
            inner,
            line: 0,
            offset: 0,
            limit,
        }
    }

    /// A reader whose `inner` starts at byte `offset` of its file, the
    /// start of line `line` (1-based): positions go on from there.
    pub fn starting_at(inner: R, line: u64, offset: u64) -> Self {
        LineReader {
            line: line.saturating_sub(1),
            offset,
            ..Self::new(inner)
        }
    }

    /// The next line without its `\n` (and `\r`), or `None` at the end.
    pub fn next_line(&mut self) -> io::Result<Option<RawLine>> {
        let start = self.offset;
        let mut bytes = Vec::new();
        let mut total: u64 = 0;
        let mut saw_any = false;
        loop {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            saw_any = true;
            let (chunk, done) = match memchr(buf) {
                Some(i) => (&buf[..i], Some(i + 1)),
                None => (buf, None),
            };
            total += chunk.len() as u64;
            let room = if total as usize > self.limit {
                KEPT_PREFIX_BYTES.saturating_sub(bytes.len())
            } else {
                self.limit - bytes.len()
            };
            bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            let consumed = done.unwrap_or(chunk.len());
            self.inner.consume(consumed);
            self.offset += consumed as u64;
            if done.is_some() {
                break;
            }
        }
        if !saw_any {
            return Ok(None);
        }
        self.line += 1;
        let too_long = (total as usize > self.limit).then_some(total);
        if too_long.is_some() {
            bytes.truncate(KEPT_PREFIX_BYTES);
        } else if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        Ok(Some(RawLine {
            bytes,
            line: self.line,
            offset: start,
            too_long,
        }))
    }
}

fn memchr(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_cuts() {
        let data = b"ab\r\ncdefghij\n\nlast".to_vec();
        let mut r = LineReader::with_limit(io::BufReader::with_capacity(3, &data[..]), 5);
        let l1 = r.next_line().unwrap().unwrap();
        assert_eq!(
            (l1.bytes.as_slice(), l1.line, l1.offset, l1.too_long),
            (&b"ab"[..], 1, 0, None)
        );
        let l2 = r.next_line().unwrap().unwrap();
        assert_eq!(l2.too_long, Some(8));
        assert_eq!(l2.offset, 4);
        let l3 = r.next_line().unwrap().unwrap();
        assert!(l3.bytes.is_empty());
        let l4 = r.next_line().unwrap().unwrap();
        assert_eq!(l4.bytes, b"last");
        assert_eq!(l4.line, 4);
        assert!(r.next_line().unwrap().is_none());
    }
}
