//! Unit tests of the spill file: append, read back, commit, crash leftovers.

use std::io::Write;

use chrono::DateTime;

use super::*;
use crate::SessionExecution;

fn entry(n: i64) -> LogEntry {
    LogEntry::Execution(SessionExecution {
        request_id: format!("s{n}"),
        executed_at: DateTime::from_timestamp_millis(n).unwrap_or_default(),
        close: false,
    })
}

fn ids(batch: &SpillBatch) -> Vec<String> {
    batch
        .entries
        .iter()
        .map(|e| match e {
            LogEntry::Execution(x) => x.request_id.clone(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn no_file_until_first_append() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("spill.jsonl");
    let spill = SpillFile::open(&path)?;
    assert_eq!(spill.pending(), 0);
    assert!(!path.exists());
    Ok(())
}

#[test]
fn reads_in_batches_and_truncates_when_drained() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("spill.jsonl");
    let mut spill = SpillFile::open(&path)?;
    for n in 0..5 {
        spill.append(&entry(n))?;
    }
    assert_eq!(spill.pending(), 5);

    let first = spill.read_batch(3)?;
    assert_eq!(ids(&first), ["s0", "s1", "s2"]);
    // Reading does not consume: only a commit does.
    assert_eq!(ids(&spill.read_batch(3)?), ["s0", "s1", "s2"]);
    spill.commit(&first)?;
    assert_eq!(spill.pending(), 2);

    // A restart resumes at the saved cursor.
    let mut spill = SpillFile::open(&path)?;
    assert_eq!(spill.pending(), 2);
    let rest = spill.read_batch(10)?;
    assert_eq!(ids(&rest), ["s3", "s4"]);
    spill.commit(&rest)?;
    assert_eq!(spill.pending(), 0);
    assert_eq!(std::fs::metadata(&path)?.len(), 0);

    spill.append(&entry(9))?;
    assert_eq!(ids(&spill.read_batch(10)?), ["s9"]);
    Ok(())
}

#[test]
fn a_torn_last_line_is_skipped() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("spill.jsonl");
    let mut spill = SpillFile::open(&path)?;
    spill.append(&entry(1))?;
    drop(spill);
    std::fs::OpenOptions::new().append(true).open(&path)?.write_all(b"{\"kind\":\"exec")?;

    let mut spill = SpillFile::open(&path)?;
    assert_eq!(spill.pending(), 2);
    spill.append(&entry(2))?;
    let batch = spill.read_batch(10)?;
    assert_eq!(ids(&batch), ["s1", "s2"]);
    spill.commit(&batch)?;
    assert_eq!(spill.pending(), 0);
    Ok(())
}

#[test]
fn prepend_puts_memory_before_the_file() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("spill.jsonl");
    let mut spill = SpillFile::open(&path)?;
    for n in 2..5 {
        spill.append(&entry(n))?;
    }
    let first = spill.read_batch(1)?;
    spill.commit(&first)?;
    spill.prepend(&[entry(0), entry(1)])?;
    assert_eq!(spill.pending(), 4);

    let spill = SpillFile::open(&path)?;
    assert_eq!(ids(&spill.read_batch(10)?), ["s0", "s1", "s3", "s4"]);
    Ok(())
}

#[test]
fn a_cursor_off_a_line_start_is_ignored() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("spill.jsonl");
    let mut spill = SpillFile::open(&path)?;
    spill.append(&entry(1))?;
    spill.append(&entry(2))?;
    std::fs::write(dir.path().join("spill.jsonl.cursor"), "3")?;
    let spill = SpillFile::open(&path)?;
    assert_eq!(spill.pending(), 2);
    Ok(())
}

#[test]
fn the_default_config_spills_into_the_data_dir() {
    let config = crate::PipelineConfig::in_data_dir(Path::new("/var/lib/lambda"));
    assert_eq!(config.spill_path, Path::new("/var/lib/lambda/log-spill.jsonl"));
    assert_eq!((config.capacity, config.batch_size), (10_000, 1024));
    assert_eq!(config.flush_interval, std::time::Duration::from_millis(50));
}
