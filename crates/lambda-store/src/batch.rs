//! A log batch regrouped for the database: rows by table in arrival order, and
//! one counter update per session however many executions it saw. Shared by
//! both backends, so they write the same rows in the same statements.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::{ErrorLog, LogEntry, RequestLog};

/// Rows per multi-row `INSERT`: well under both backends' bind-parameter
/// limits (SQLite 32,766; PostgreSQL 65,535) at 11 columns.
pub(crate) const ROWS_PER_INSERT: usize = 256;

/// The executions of one session within a batch.
#[derive(Debug, PartialEq)]
pub(crate) struct Tally<'a> {
    pub request_id: &'a str,
    pub count: i64,
    pub last_executed_at: DateTime<Utc>,
    pub close: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Grouped<'a> {
    pub requests: Vec<&'a RequestLog>,
    pub errors: Vec<&'a ErrorLog>,
    /// In order of each session's first execution in the batch.
    pub tallies: Vec<Tally<'a>>,
}

pub(crate) fn group(batch: &[LogEntry]) -> Grouped<'_> {
    let mut grouped = Grouped::default();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for entry in batch {
        match entry {
            LogEntry::Request(r) => grouped.requests.push(r),
            LogEntry::Error(e) => grouped.errors.push(e),
            LogEntry::Execution(x) => match index.get(x.request_id.as_str()) {
                Some(&i) => {
                    let t = &mut grouped.tallies[i];
                    t.count += 1;
                    t.last_executed_at = t.last_executed_at.max(x.executed_at);
                    t.close |= x.close;
                }
                None => {
                    index.insert(&x.request_id, grouped.tallies.len());
                    grouped.tallies.push(Tally {
                        request_id: &x.request_id,
                        count: 1,
                        last_executed_at: x.executed_at,
                        close: x.close,
                    });
                }
            },
        }
    }
    grouped
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::SessionExecution;

    fn execution(id: &str, second: u32, close: bool) -> LogEntry {
        let executed_at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, second).single().unwrap_or_default();
        LogEntry::Execution(SessionExecution { request_id: id.into(), executed_at, close })
    }

    #[test]
    fn one_tally_per_session_with_the_latest_time() {
        let batch = [execution("a", 5, false), execution("b", 1, false), execution("a", 3, true)];
        let g = group(&batch);
        let summary: Vec<_> = g
            .tallies
            .iter()
            .map(|t| (t.request_id, t.count, t.last_executed_at.timestamp() % 60, t.close))
            .collect();
        assert_eq!(summary, [("a", 2, 5, true), ("b", 1, 1, false)]);
        assert!(g.requests.is_empty() && g.errors.is_empty());
    }
}
