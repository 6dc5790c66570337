//! Every limit of the platform as one value with the contract's defaults.

use std::time::Duration;

/// Limits are values passed down, not literals scattered through the code.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// `MAX_SCRIPT_SIZE`: bytes of `script_content`.
    pub max_script_bytes: usize,
    /// Bytes of an execute request body.
    pub max_body_bytes: usize,
    /// Default per-execution wall-clock limit when `context.timeout_ms` is absent.
    pub default_timeout: Duration,
    /// `RUNTIME_TIMEOUT_SECONDS`: cap on any `timeout_ms`.
    pub max_timeout: Duration,
    /// `SESSION_EXPIRY_SECONDS`.
    pub session_expiry: Duration,
    /// Lines of console output returned per execution.
    pub max_log_lines: usize,
    /// Bytes of console output kept per execution.
    pub max_log_bytes: usize,
    /// Bytes of a serialised result.
    pub max_result_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_script_bytes: 1024 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            default_timeout: Duration::from_millis(30_000),
            max_timeout: Duration::from_secs(30),
            session_expiry: Duration::from_secs(3600),
            max_log_lines: 1000,
            max_log_bytes: 64 * 1024,
            max_result_bytes: 8 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// The timeout an execution gets: the requested one capped by config, or the default.
    pub fn effective_timeout(&self, requested_ms: Option<u64>) -> Duration {
        requested_ms.map(Duration::from_millis).unwrap_or(self.default_timeout).min(self.max_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_is_capped() {
        let l = Limits { max_timeout: Duration::from_secs(10), ..Limits::default() };
        assert_eq!(l.effective_timeout(None), Duration::from_secs(10));
        assert_eq!(l.effective_timeout(Some(250)), Duration::from_millis(250));
        assert_eq!(l.effective_timeout(Some(60_000)), Duration::from_secs(10));
    }
}
