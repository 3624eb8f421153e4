//! JSON Lines files: the simplest sink, and the dead-letter's default home.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    #[error(
        "cannot open {path} for writing: {source}; check that its folder exists and is writable"
    )]
    Open { path: PathBuf, source: io::Error },
    #[error("writing {path} failed: {source}; check free disk space")]
    Write { path: PathBuf, source: io::Error },
    #[error("a record could not be encoded as JSON: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Appends one JSON object per line. `-` means standard output.
pub struct JsonlWriter {
    path: PathBuf,
    out: BufWriter<Box<dyn Write + Send>>,
    written: u64,
}

impl JsonlWriter {
    /// Creates (truncating) `path`, making its parent folders.
    pub fn create(path: &Path) -> Result<Self, JsonlError> {
        Self::open(path, false)
    }

    /// Opens `path` for appending (a dead-letter survives restarts).
    pub fn append(path: &Path) -> Result<Self, JsonlError> {
        Self::open(path, true)
    }

    /// Cuts `path` back to its first `len` bytes and appends after them
    /// (a restart going on from a checkpoint that saw the file that long).
    pub fn continue_at(path: &Path, len: u64) -> Result<Self, JsonlError> {
        let open_error = |source| JsonlError::Open {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(open_error)?;
        file.set_len(len).map_err(open_error)?;
        drop(file);
        Self::open(path, true)
    }

    fn open(path: &Path, append: bool) -> Result<Self, JsonlError> {
        let sink: Box<dyn Write + Send> = if path.as_os_str() == "-" {
            Box::new(io::stdout())
        } else {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|source| JsonlError::Open {
                    path: path.to_owned(),
                    source,
                })?;
            }
            let file: File = if append {
                OpenOptions::new().create(true).append(true).open(path)
            } else {
                File::create(path)
            }
            .map_err(|source| JsonlError::Open {
                path: path.to_owned(),
                source,
            })?;
            Box::new(file)
        };
        Ok(JsonlWriter {
            path: path.to_owned(),
            out: BufWriter::with_capacity(1 << 16, sink),
            written: 0,
        })
    }

    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<(), JsonlError> {
        serde_json::to_writer(&mut self.out, record)?;
        self.write_raw_newline()
    }

    /// Writes an already-encoded JSON line.
    pub fn write_line(&mut self, line: &str) -> Result<(), JsonlError> {
        self.out
            .write_all(line.as_bytes())
            .map_err(|source| JsonlError::Write {
                path: self.path.clone(),
                source,
            })?;
        self.write_raw_newline()
    }

    /// Writes `lines` already-encoded JSON lines, each ending in a newline.
    pub fn write_encoded(&mut self, bytes: &[u8], lines: u64) -> Result<(), JsonlError> {
        self.written += lines;
        self.out
            .write_all(bytes)
            .map_err(|source| JsonlError::Write {
                path: self.path.clone(),
                source,
            })
    }

    fn write_raw_newline(&mut self) -> Result<(), JsonlError> {
        self.written += 1;
        self.out
            .write_all(b"\n")
            .map_err(|source| JsonlError::Write {
                path: self.path.clone(),
                source,
            })
    }

    pub fn flush(&mut self) -> Result<(), JsonlError> {
        self.out.flush().map_err(|source| JsonlError::Write {
            path: self.path.clone(),
            source,
        })
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for JsonlWriter {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}
