//! What a run printed, turned into a result or the contract's error: stdout
//! is the result JSON, stderr the logs; a panic, a trap, an exit status, the
//! deadline and the limits each become their own error.

use std::time::Duration;

use lambda_core::{ErrorCode, LambdaError, Limits};
use serde_json::Value;

use crate::engine::{Exit, RunReport};

/// The handler glue writes an `Err` of the user's `handle` behind this marker
/// (runtimes/rust/template/src/main.rs).
const ERROR_MARKER: &str = "\u{1e}lambda-error:";
const TRUNCATED: &str = "[output truncated]";

/// How the run's files are named, to report panics at the user's lines.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SourceInfo {
    /// The file the user's code was compiled as (rust only).
    pub user_file: Option<&'static str>,
}

/// A failed run: the error and the logs printed before it.
pub(crate) type Failure = (LambdaError, Vec<String>);

pub(crate) fn interpret(
    report: &RunReport,
    limits: &Limits,
    memory_limit: usize,
    timeout: Duration,
    source: SourceInfo,
) -> Result<(Value, Vec<String>), Failure> {
    let stderr = String::from_utf8_lossy(&report.stderr);
    let (mut logs, marked_error) = stderr_logs(&stderr, report.stderr_full, limits);
    if matches!(report.exit, Exit::NoSlot) {
        return Err((LambdaError::unavailable("no wasm instance slot was free before the deadline"), logs));
    }
    if report.timed_out {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let e = LambdaError::new(ErrorCode::Timeout, format!("execution exceeded the timeout of {ms} ms"))
            .with("timeout_ms", ms);
        return Err((e, logs));
    }
    if report.memory_denied {
        let mib = memory_limit / (1024 * 1024);
        let e = LambdaError::new(
            ErrorCode::ResourceLimit,
            format!("the module exceeded its memory limit of {mib} MiB"),
        )
        .with("limit", "memory")
        .with("limit_bytes", memory_limit);
        return Err((e, logs));
    }
    if report.stdout_full {
        let e = LambdaError::new(
            ErrorCode::ResourceLimit,
            format!("the result exceeds MAX_RESULT_SIZE ({} bytes)", limits.max_result_bytes),
        )
        .with("limit", "result")
        .with("limit_bytes", limits.max_result_bytes);
        return Err((e, logs));
    }
    match &report.exit {
        Exit::Trap { cause, full } => Err((trap_error(cause, full, &stderr, source), logs)),
        Exit::Status(code) => {
            let message = marked_error.unwrap_or_else(|| {
                let last = logs.last().map(|l| format!(": {l}")).unwrap_or_default();
                format!("the program exited with status {code}{last}")
            });
            Err((
                LambdaError::new(ErrorCode::RuntimeError, message.clone())
                    .with("message", message)
                    .with("exit_code", *code),
                logs,
            ))
        }
        Exit::Success | Exit::NoSlot => {
            let stdout = String::from_utf8_lossy(&report.stdout);
            match result_of(&stdout) {
                Some((result, printed)) => {
                    let mut all = printed;
                    all.append(&mut logs);
                    Ok((result, bound_lines(all, limits)))
                }
                None => {
                    let shown: String = stdout.chars().take(200).collect();
                    let message = if stdout.trim().is_empty() {
                        "the module printed nothing: it must print the result JSON on stdout".to_owned()
                    } else {
                        "output is not JSON: the module must print the result JSON on stdout".to_owned()
                    };
                    Err((
                        LambdaError::new(ErrorCode::RuntimeError, message.clone())
                            .with("message", message)
                            .with("output", shown),
                        logs,
                    ))
                }
            }
        }
    }
}

/// The whole of stdout as JSON; else its last non-empty line, the lines
/// before it being returned as logs.
fn result_of(stdout: &str) -> Option<(Value, Vec<String>)> {
    if let Ok(value) = serde_json::from_str(stdout) {
        return Some((value, Vec::new()));
    }
    let lines: Vec<&str> = stdout.lines().collect();
    let last = lines.iter().rposition(|l| !l.trim().is_empty())?;
    let value = serde_json::from_str(lines[last]).ok()?;
    Some((value, lines[..last].iter().map(|l| (*l).to_owned()).collect()))
}

/// stderr as log lines (the panic hint and the error marker left out), and
/// the message behind the marker, if any.
fn stderr_logs(stderr: &str, full: bool, limits: &Limits) -> (Vec<String>, Option<String>) {
    let mut marked = None;
    let mut lines = Vec::new();
    for line in stderr.lines() {
        if let Some(encoded) = line.strip_prefix(ERROR_MARKER) {
            marked = serde_json::from_str::<String>(encoded).ok().or_else(|| Some(encoded.to_owned()));
        } else if !line.starts_with("note: run with `RUST_BACKTRACE=1`") {
            lines.push(line.to_owned());
        }
    }
    if full {
        lines.push(TRUNCATED.to_owned());
    }
    (bound_lines(lines, limits), marked)
}

fn bound_lines(mut lines: Vec<String>, limits: &Limits) -> Vec<String> {
    if lines.len() > limits.max_log_lines {
        lines.truncate(limits.max_log_lines.saturating_sub(1));
        lines.push(TRUNCATED.to_owned());
    }
    lines
}

/// A trap, explained by the panic message on stderr when there is one.
fn trap_error(cause: &str, trap: &str, stderr: &str, source: SourceInfo) -> LambdaError {
    let Some(panic) = panic_of(stderr) else {
        let message = format!("the module trapped: {cause}");
        return LambdaError::new(ErrorCode::RuntimeError, message.clone())
            .with("message", message)
            .with("stack_trace", trap);
    };
    let mut e = LambdaError::new(ErrorCode::RuntimeError, format!("panicked: {}", panic.message))
        .with("message", panic.message.clone())
        .with("stack_trace", trap);
    if let Some((file, line, column)) = panic.location
        && source.user_file == Some(file.as_str())
    {
        e = e.with("line", line).with("column", column);
    }
    e
}

struct Panic {
    message: String,
    location: Option<(String, u64, u64)>,
}

/// Rust's default panic report: `thread 'main' (1) panicked at FILE:LINE:COL:`
/// followed by the message lines.
fn panic_of(stderr: &str) -> Option<Panic> {
    let lines: Vec<&str> = stderr.lines().collect();
    let at = lines.iter().rposition(|l| l.starts_with("thread '") && l.contains(" panicked at "))?;
    let place = lines[at].split(" panicked at ").nth(1)?.trim_end_matches(':');
    let mut parts = place.rsplitn(3, ':');
    let column = parts.next().and_then(|c| c.parse().ok());
    let line = parts.next().and_then(|l| l.parse().ok());
    let location = match (parts.next(), line, column) {
        (Some(file), Some(line), Some(column)) => Some((file.to_owned(), line, column)),
        _ => None,
    };
    let message: Vec<&str> =
        lines[at + 1..].iter().take_while(|l| !l.starts_with("note: ")).copied().collect();
    Some(Panic { message: message.join("\n"), location })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(exit: Exit, stdout: &str, stderr: &str) -> RunReport {
        RunReport {
            exit,
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
            stdout_full: false,
            stderr_full: false,
            timed_out: false,
            memory_denied: false,
            peak_memory: 0,
            instantiate: Duration::ZERO,
        }
    }

    fn trap(cause: &str) -> Exit {
        Exit::Trap { cause: cause.to_owned(), full: cause.to_owned() }
    }

    fn run(r: &RunReport) -> Result<(Value, Vec<String>), Failure> {
        interpret(
            r,
            &Limits::default(),
            1 << 27,
            Duration::from_millis(300),
            SourceInfo { user_file: Some("src/user.rs") },
        )
    }

    #[test]
    fn stdout_is_the_result_and_earlier_lines_are_logs() {
        assert_eq!(run(&report(Exit::Success, "{\"a\":1}\n", "")).ok(), Some((json!({"a": 1}), vec![])));
        let (value, logs) = run(&report(Exit::Success, "debug line\n42\n", "warn\n")).expect("ok");
        assert_eq!((value, logs), (json!(42), vec!["debug line".to_owned(), "warn".to_owned()]));
        let (e, _) = run(&report(Exit::Success, "not json", "")).expect_err("fails");
        assert_eq!((e.code, e.message.starts_with("output is not JSON")), (ErrorCode::RuntimeError, true));
    }

    #[test]
    fn panics_report_message_and_user_position() {
        let stderr = "log\nthread 'main' (1) panicked at src/user.rs:4:5:\nboom: 7\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        let (e, logs) = run(&report(trap("wasm trap: unreachable"), "", stderr)).expect_err("fails");
        assert_eq!(e.message, "panicked: boom: 7");
        assert_eq!((e.details["line"].clone(), e.details["column"].clone()), (json!(4), json!(5)));
        assert!(!logs.iter().any(|l| l.starts_with("note: run with")));
    }

    #[test]
    fn marked_errors_limits_and_deadline() {
        let (e, _) =
            run(&report(Exit::Status(1), "", "\u{1e}lambda-error:\"bad input\"\n")).expect_err("fails");
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::RuntimeError, "bad input"));
        let mut r = report(trap("x"), "", "");
        r.memory_denied = true;
        assert_eq!(
            run(&r).err().map(|(e, _)| (e.code, e.details["limit"].clone())),
            Some((ErrorCode::ResourceLimit, json!("memory")))
        );
        r.timed_out = true;
        assert_eq!(run(&r).err().map(|(e, _)| e.code), Some(ErrorCode::Timeout));
    }
}
