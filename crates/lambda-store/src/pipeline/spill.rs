//! The spill file: log entries that did not fit in memory (or could not be
//! written before shutdown), one JSON line each, oldest first, waiting on disk
//! until the writer has them in the store.
//!
//! Entries are consumed from a cursor (a byte offset, saved beside the file
//! in `<name>.cursor` after each committed batch) rather than by rewriting the
//! file; the file is truncated once the cursor reaches its end. Appends are
//! one `write` of a whole line, so a crash leaves at most one partial last
//! line, which `open` terminates so that it is skipped as undecodable.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::LogEntry;

#[derive(Debug)]
pub(super) struct SpillFile {
    path: PathBuf,
    cursor_path: PathBuf,
    /// Append handle, opened on first use so that an idle pipeline leaves no file.
    file: Option<File>,
    /// Byte offset of the first line not yet in the store.
    cursor: u64,
    /// Bytes of complete lines in the file.
    len: u64,
    /// Lines between `cursor` and `len`.
    pending: u64,
}

/// Lines read from the spill file, not yet committed.
#[derive(Debug)]
pub(super) struct SpillBatch {
    pub entries: Vec<LogEntry>,
    /// Where the cursor goes once `entries` are in the store.
    end: u64,
    /// Lines consumed, undecodable ones included.
    lines: u64,
}

impl SpillFile {
    /// Opens what a previous run left (if anything) and finds where it stopped.
    pub fn open(path: &Path) -> io::Result<Self> {
        let mut spill = Self::empty(path);
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(spill),
            Err(e) => return Err(e),
        };
        let mut file = open_append(path)?;
        let mut len = bytes.len() as u64;
        if bytes.last().is_some_and(|b| *b != b'\n') {
            file.write_all(b"\n")?;
            len += 1;
        }
        let cursor = fs::read_to_string(&spill.cursor_path).ok().and_then(|s| s.trim().parse::<u64>().ok());
        // A cursor that does not sit at a line start is not ours to trust.
        spill.cursor = cursor
            .filter(|&c| c <= bytes.len() as u64)
            .filter(|&c| c == 0 || usize::try_from(c - 1).ok().and_then(|i| bytes.get(i)) == Some(&b'\n'))
            .unwrap_or(0);
        let rest = usize::try_from(spill.cursor).ok().and_then(|c| bytes.get(c..)).unwrap_or_default();
        spill.pending = rest.iter().filter(|b| **b == b'\n').count() as u64;
        if len > bytes.len() as u64 {
            spill.pending += 1;
        }
        spill.len = len;
        spill.file = Some(file);
        Ok(spill)
    }

    /// A spill file with nothing pending, whatever is on disk.
    pub fn empty(path: &Path) -> Self {
        let mut cursor_path = path.as_os_str().to_owned();
        cursor_path.push(".cursor");
        Self {
            path: path.to_owned(),
            cursor_path: cursor_path.into(),
            file: None,
            cursor: 0,
            len: 0,
            pending: 0,
        }
    }

    pub fn pending(&self) -> u64 {
        self.pending
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn append(&mut self, entry: &LogEntry) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(open_append(&self.path)?),
        };
        file.write_all(&line)?;
        file.flush()?;
        self.len += line.len() as u64;
        self.pending += 1;
        Ok(())
    }

    /// Up to `max` lines from the cursor; undecodable lines are skipped.
    pub fn read_batch(&self, max: usize) -> io::Result<SpillBatch> {
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(self.cursor))?;
        let mut reader = BufReader::new(file.take(self.len - self.cursor));
        let mut batch = SpillBatch { entries: Vec::new(), end: self.cursor, lines: 0 };
        let mut line = Vec::new();
        while batch.lines < max as u64 {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            batch.end += n as u64;
            batch.lines += 1;
            match serde_json::from_slice(&line) {
                Ok(entry) => batch.entries.push(entry),
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, "skipping an undecodable spilled log entry")
                }
            }
        }
        Ok(batch)
    }

    /// The batch is in the store: move past it, and empty the file when done.
    pub fn commit(&mut self, batch: &SpillBatch) -> io::Result<()> {
        self.cursor = batch.end;
        self.pending = self.pending.saturating_sub(batch.lines);
        if self.cursor < self.len {
            return fs::write(&self.cursor_path, self.cursor.to_string());
        }
        // Drop the cursor first: a crash in between then replays (duplicates)
        // rather than skips.
        remove_if_exists(&self.cursor_path)?;
        if let Some(file) = &self.file {
            file.set_len(0)?;
        }
        self.cursor = 0;
        self.len = 0;
        self.pending = 0;
        Ok(())
    }

    /// Puts `older` (entries that were in memory) before what is left in the
    /// file, so that the next run writes everything in submission order.
    pub fn prepend(&mut self, older: &[LogEntry]) -> io::Result<()> {
        if older.is_empty() {
            return Ok(());
        }
        let mut tmp_path = self.path.as_os_str().to_owned();
        tmp_path.push(".tmp");
        let tmp_path = PathBuf::from(tmp_path);
        let mut tmp = File::create(&tmp_path)?;
        for entry in older {
            let mut line = serde_json::to_vec(entry)?;
            line.push(b'\n');
            tmp.write_all(&line)?;
        }
        if self.pending > 0 {
            let mut old = File::open(&self.path)?;
            old.seek(SeekFrom::Start(self.cursor))?;
            io::copy(&mut old.take(self.len - self.cursor), &mut tmp)?;
        }
        tmp.sync_all()?;
        let len = tmp.metadata()?.len();
        remove_if_exists(&self.cursor_path)?;
        fs::rename(&tmp_path, &self.path)?;
        self.file = Some(open_append(&self.path)?);
        self.cursor = 0;
        self.len = len;
        self.pending += older.len() as u64;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "spill_tests.rs"]
mod tests;
