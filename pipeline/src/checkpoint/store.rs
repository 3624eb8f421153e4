//! The checkpoint directory: atomic writes, the last few kept, the newest
//! usable one found.
//!
//! A checkpoint is written to a temporary name, synced, renamed into place
//! and the directory synced: a crash at any moment leaves either the whole
//! new file or none of it, never a partial file under a checkpoint's name.
//! (A partial file left by a crash of the disk itself is caught by the
//! checksums.)

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::format::{self, Body, FormatError, Header};

const PREFIX: &str = "checkpoint-";
const SUFFIX: &str = ".ckpt";
/// A checkpoint being written: `.checkpoint-….ckpt.tmp`.
const TMP_PREFIX: &str = ".";
const TMP_SUFFIX: &str = ".tmp";

#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
    kept: usize,
}

/// The checkpoint found (its path, header and what `accept` made of it),
/// and the newer ones passed over.
pub type Found<T> = (Option<(PathBuf, Header, T)>, Vec<Passed>);

/// A checkpoint not used, and why.
#[derive(Debug)]
pub struct Passed {
    pub path: PathBuf,
    pub reason: String,
}

/// A checkpoint written under a temporary name, not yet in place.
pub struct Prepared {
    tmp: PathBuf,
    path: PathBuf,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        // Gone already once published.
        let _ = fs::remove_file(&self.tmp);
    }
}

impl Store {
    /// The store in `dir` (created if missing), keeping the newest `kept`.
    /// Checkpoints a crashed run left half written are removed.
    pub fn open(dir: &Path, kept: usize) -> std::io::Result<Store> {
        fs::create_dir_all(dir)?;
        for entry in fs::read_dir(dir)?.filter_map(|e| e.ok()) {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(TMP_PREFIX) && name.ends_with(TMP_SUFFIX) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Store {
            dir: dir.to_owned(),
            kept: kept.max(1),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The checkpoints in the directory, newest (latest epoch) first.
    pub fn list(&self) -> std::io::Result<Vec<PathBuf>> {
        list(&self.dir)
    }

    /// Writes a checkpoint under a temporary name: `header`, then the body
    /// `encode` streams, synced. [`Store::publish`] puts it in place; a
    /// checkpoint dropped unpublished is removed.
    pub fn prepare(
        &self,
        header: &Header,
        encode: impl FnOnce(&mut dyn Write) -> Result<(), FormatError>,
    ) -> Result<Prepared, FormatError> {
        let name = format!("{PREFIX}{:020}{SUFFIX}", header.complete_before);
        let prepared = Prepared {
            tmp: self.dir.join(format!("{TMP_PREFIX}{name}{TMP_SUFFIX}")),
            path: self.dir.join(&name),
        };
        let file = File::create(&prepared.tmp)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        format::write_header(&mut out, header)?;
        format::write_body(&mut out, encode)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(prepared)
    }

    /// Renames a prepared checkpoint into place and syncs the directory
    /// (atomic: a crash leaves the whole file or none), then removes all
    /// but the newest `kept`; returns its path and size in bytes.
    pub fn publish(&self, prepared: Prepared) -> Result<(PathBuf, u64), FormatError> {
        fs::rename(&prepared.tmp, &prepared.path)?;
        File::open(&self.dir)?.sync_all()?;
        let path = prepared.path.clone();
        let size = fs::metadata(&path)?.len();
        for old in self.list()?.into_iter().skip(self.kept) {
            if let Err(e) = fs::remove_file(&old) {
                tracing::warn!(path = %old.display(), error = %e, "could not remove an old checkpoint");
            }
        }
        Ok((path, size))
    }

    /// Writes a checkpoint of `body`'s bytes and publishes it.
    #[cfg(test)]
    pub fn write(&self, header: Header, body: &[u8]) -> Result<(PathBuf, u64), FormatError> {
        let prepared = self.prepare(&header, |out| Ok(out.write_all(body)?))?;
        self.publish(prepared)
    }

    /// The newest checkpoint that reads back whole, was taken under
    /// `fingerprint` and that `accept` takes; every newer one passed over,
    /// with the reason.
    pub fn newest_usable<T>(
        &self,
        fingerprint: &str,
        mut accept: impl FnMut(&Header, Body) -> Result<T, String>,
    ) -> std::io::Result<Found<T>> {
        let mut passed = Vec::new();
        for path in self.list()? {
            let pass = |reason: String| Passed {
                path: path.clone(),
                reason,
            };
            match read(&path) {
                Err(e) => passed.push(pass(e.to_string())),
                Ok((header, _)) if header.fingerprint != fingerprint => passed.push(pass(
                    "it was taken under another configuration (a setting that changes \
                     results differs)"
                        .into(),
                )),
                Ok((header, body)) => match accept(&header, body) {
                    Ok(t) => return Ok((Some((path, header, t)), passed)),
                    Err(reason) => passed.push(pass(reason)),
                },
            }
        }
        Ok((None, passed))
    }
}

impl Store {
    /// The headers of the checkpoints kept that read back (their states
    /// are not read).
    pub fn headers(&self) -> std::io::Result<Vec<Header>> {
        Ok(self
            .list()?
            .iter()
            .filter_map(|path| {
                let mut input = BufReader::new(File::open(path).ok()?);
                format::read_header(&mut input).ok()
            })
            .collect())
    }
}

/// The checkpoints in `dir`, newest first (their names sort by epoch).
pub fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
        })
        .collect();
    found.sort();
    found.reverse();
    Ok(found)
}

/// Reads and checks a whole checkpoint, and decodes its state.
pub fn read(path: &Path) -> Result<(Header, Body), FormatError> {
    let mut input = BufReader::with_capacity(1 << 20, File::open(path)?);
    let header = format::read_header(&mut input)?;
    let bytes = format::read_body(&mut input)?;
    let body = format::decode_body(&bytes)?;
    Ok((header, body))
}

/// Reads a checkpoint's header and checks its state's checksum without
/// decoding it.
pub fn inspect(path: &Path) -> Result<(Header, Result<(), FormatError>), FormatError> {
    let mut input = BufReader::with_capacity(1 << 20, File::open(path)?);
    let header = format::read_header(&mut input)?;
    let body = format::check_body(&mut input);
    Ok((header, body))
}

#[cfg(test)]
mod tests {
    use super::super::format::{Counts, FormatError, Header, FORMAT_VERSION};
    use super::*;

    fn header(complete_before: u64) -> Header {
        Header {
            version: FORMAT_VERSION,
            fingerprint: "f".repeat(64),
            complete_before,
            watermark: Some(complete_before as i64),
            written_at: "2026-12-06T00:00:00Z".into(),
            positions: Vec::new(),
            counts: Counts::default(),
        }
    }

    #[test]
    fn the_newest_few_are_kept_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 2).unwrap();
        for t in [60, 180, 120] {
            store.write(header(t), &[t as u8; 1000]).unwrap();
        }
        let kept = store.list().unwrap();
        assert_eq!(kept.len(), 2, "{kept:?}");
        let (h, body) = inspect(&kept[0]).unwrap();
        assert_eq!(h.complete_before, 180, "newest first");
        assert!(body.is_ok());
        let mut input = BufReader::new(File::open(&kept[0]).unwrap());
        format::read_header(&mut input).unwrap();
        assert_eq!(format::read_body(&mut input).unwrap(), vec![180u8; 1000]);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn a_checkpoint_not_published_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 2).unwrap();
        let prepared = store
            .prepare(&header(60), |out| Ok(out.write_all(&[1u8; 100])?))
            .unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(store.list().unwrap().is_empty(), "not a checkpoint yet");
        drop(prepared);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // One a crash left behind goes when the store is opened.
        let prepared = store
            .prepare(&header(60), |out| Ok(out.write_all(&[1u8; 100])?))
            .unwrap();
        std::mem::forget(prepared);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        Store::open(dir.path(), 2).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn damage_of_every_kind_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1).unwrap();
        let (path, _) = store.write(header(60), &[7u8; 5000]).unwrap();
        let good = std::fs::read(&path).unwrap();
        let damaged = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut bytes = good.clone();
            f(&mut bytes);
            std::fs::write(&path, &bytes).unwrap();
            match inspect(&path) {
                Ok((_, Ok(()))) => None,
                Ok((_, Err(e))) | Err(e) => Some(e),
            }
        };
        assert!(damaged(&|_| {}).is_none());
        assert!(matches!(
            damaged(&|b| b[3] ^= 1),
            Some(FormatError::NotACheckpoint)
        ));
        assert!(matches!(
            damaged(&|b| b[30] ^= 1),
            Some(FormatError::HeaderCorrupt)
        ));
        assert!(matches!(
            damaged(&|b| {
                let n = b.len();
                b[n - 20] ^= 1
            }),
            Some(FormatError::BodyCorrupt)
        ));
        // The body's length, after it.
        assert!(matches!(
            damaged(&|b| {
                let n = b.len();
                b[n - 10] ^= 1
            }),
            Some(FormatError::Truncated(_))
        ));
        assert!(matches!(
            damaged(&|b| b.truncate(b.len() - 100)),
            Some(FormatError::Truncated(_))
        ));
        assert!(matches!(
            damaged(&|b| b.truncate(25)),
            Some(FormatError::Truncated(_))
        ));
        // Another format version is named as such.
        let mut other = header(60);
        other.version = FORMAT_VERSION + 1;
        let mut bytes = Vec::new();
        let head = postcard::to_allocvec(&other).unwrap();
        bytes.extend_from_slice(super::super::format::MAGIC);
        bytes.extend_from_slice(&(head.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&head);
        bytes.extend_from_slice(&crc32fast::hash(&head).to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            inspect(&path),
            Err(FormatError::Version { found }) if found == FORMAT_VERSION + 1
        ));
    }
}
