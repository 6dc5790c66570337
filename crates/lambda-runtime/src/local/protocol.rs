//! The worker protocol: newline-delimited JSON frames, one request and one
//! response at a time, and the mapping of a host's error frame to [`LambdaError`].
//!
//! Requests: `{"op":"prepare","script":..}` and
//! `{"op":"invoke","params":..,"context":..,"request_id":..}`. Responses:
//! `{"ok":true,"result":..,"logs":[..]}` or `{"ok":false,"error":{..},"logs":[..]}`;
//! a fresh worker first writes `{"ok":true,"ready":true}`.

use std::io;

use lambda_core::{ErrorCode, LambdaError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

#[derive(Serialize)]
struct PrepareFrame<'a> {
    op: &'static str,
    seq: u64,
    script: &'a str,
}

#[derive(Serialize)]
struct InvokeFrame<'a> {
    op: &'static str,
    seq: u64,
    params: &'a Value,
    context: &'a Value,
    request_id: &'a str,
}

/// Writes a request carrying a script (with its newline) into `buf`,
/// replacing its contents: `op` is `prepare` (load it) or `check` (compile
/// only, nothing runs).
pub(crate) fn encode_script(buf: &mut Vec<u8>, op: &'static str, seq: u64, script: &str) {
    encode(buf, &PrepareFrame { op, seq, script });
}

/// Writes an invoke request (with its newline) into `buf`, replacing its contents.
pub(crate) fn encode_invoke(buf: &mut Vec<u8>, seq: u64, params: &Value, context: &Value, request_id: &str) {
    encode(buf, &InvokeFrame { op: "invoke", seq, params, context, request_id });
}

fn encode(buf: &mut Vec<u8>, frame: &impl Serialize) {
    buf.clear();
    // Serialising borrowed `Value`s and strings into a Vec cannot fail.
    if serde_json::to_writer(&mut *buf, frame).is_err() {
        buf.clear();
        buf.extend_from_slice(b"{}");
    }
    buf.push(b'\n');
}

/// One response frame of a host.
#[derive(Debug, Deserialize)]
pub(crate) struct Response {
    pub ok: bool,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub result: Value,
    #[serde(default)]
    pub logs: Vec<String>,
    #[serde(default)]
    pub error: Option<ErrorFrame>,
    /// The `seq` of the request this answers: a frame a script forged on the
    /// channel cannot shift the answers of the requests queued behind.
    #[serde(default)]
    pub seq: Option<u64>,
    /// A check's answer: the script runs code when it loads (module or handler form).
    #[serde(default)]
    pub load: bool,
    /// CPU time the host measured for this request (its whole process, µs).
    #[serde(default)]
    pub cpu_us: Option<u64>,
}

impl Response {
    pub(crate) fn parse(line: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(line)
    }
}

/// What a host reports when a prepare or an invocation fails.
#[derive(Debug, Default, Deserialize, PartialEq)]
pub(crate) struct ErrorFrame {
    /// `compile`, `runtime`, `limit` (a bound of the host was hit) or `protocol`.
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub stack: Option<String>,
    #[serde(default)]
    pub line: Option<u64>,
    #[serde(default)]
    pub column: Option<u64>,
    #[serde(default)]
    pub limit: Option<String>,
}

impl ErrorFrame {
    /// The client-facing error. `protocol` means host and supervisor disagree: a platform fault.
    pub(crate) fn into_error(self) -> LambdaError {
        let code = match self.kind.as_str() {
            "compile" => ErrorCode::CompileError,
            "runtime" => ErrorCode::RuntimeError,
            "limit" => ErrorCode::ResourceLimit,
            _ => return LambdaError::internal(format!("worker protocol error: {}", self.message)),
        };
        let mut err = LambdaError::new(code, self.message.clone());
        if code == ErrorCode::ResourceLimit {
            return err.with("limit", self.limit.unwrap_or_else(|| "result".to_owned()));
        }
        err = err.with("message", self.message);
        if let Some(line) = self.line {
            err = err.with("line", line);
        }
        if let Some(column) = self.column {
            err = err.with("column", column);
        }
        match self.stack {
            Some(stack) if code == ErrorCode::RuntimeError => err.with("stack_trace", stack),
            _ => err,
        }
    }
}

/// Outcome of reading one frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameRead {
    /// A complete line is in the buffer (without its newline).
    Line,
    /// The worker closed its end: it exited or was killed.
    Eof,
    /// The frame passed the bound; the rest of it is still unread.
    Oversize,
}

/// Reads one newline-terminated frame into `buf` (cleared first), never holding
/// more than about `max` bytes: a hostile script can write an endless line.
pub(crate) async fn read_frame<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<FrameRead> {
    buf.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(FrameRead::Eof);
        }
        if let Some(end) = available.iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(&available[..end]);
            reader.consume(end + 1);
            return Ok(if buf.len() > max { FrameRead::Oversize } else { FrameRead::Line });
        }
        let n = available.len();
        buf.extend_from_slice(available);
        reader.consume(n);
        if buf.len() > max {
            return Ok(FrameRead::Oversize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frame(v: Value) -> Response {
        Response::parse(v.to_string().as_bytes()).expect("valid frame")
    }

    #[test]
    fn invoke_frame_is_one_json_line() {
        let mut buf = Vec::new();
        encode_invoke(&mut buf, 7, &json!({"a": "x\ny"}), &json!({}), "r1");
        assert_eq!(buf.last(), Some(&b'\n'));
        assert_eq!(buf.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: Value = serde_json::from_slice(&buf).expect("json");
        assert_eq!(
            v,
            json!({"op": "invoke", "seq": 7, "params": {"a": "x\ny"}, "context": {}, "request_id": "r1"})
        );
        encode_script(&mut buf, "prepare", 8, "return 1;");
        let v: Value = serde_json::from_slice(&buf).expect("json");
        assert_eq!(v, json!({"op": "prepare", "seq": 8, "script": "return 1;"}));
    }

    #[test]
    fn success_frame_parses() {
        let r = frame(json!({"ok": true, "result": {"v": 3}, "logs": ["hi"]}));
        assert!(r.ok && !r.ready);
        assert_eq!(r.result, json!({"v": 3}));
        assert_eq!(r.logs, vec!["hi".to_owned()]);
        assert!(frame(json!({"ok": true, "ready": true})).ready);
        assert_eq!(frame(json!({"ok": true})).result, Value::Null);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Response::parse(b"hello").is_err());
        assert!(Response::parse(b"{\"ok\":\"yes\"}").is_err());
        assert!(Response::parse(b"").is_err());
    }

    #[test]
    fn compile_error_maps_to_line_and_column() {
        let e = ErrorFrame {
            kind: "compile".into(),
            message: "SyntaxError: x".into(),
            line: Some(2),
            column: Some(11),
            ..Default::default()
        }
        .into_error();
        assert_eq!(e.code, ErrorCode::CompileError);
        assert_eq!(e.details["line"], json!(2));
        assert_eq!(e.details["column"], json!(11));
        assert_eq!(e.details["message"], json!("SyntaxError: x"));
        assert!(!e.details.contains_key("stack_trace"));
    }

    #[test]
    fn runtime_error_carries_stack() {
        let r = frame(json!({"ok": false, "logs": ["a"],
            "error": {"kind": "runtime", "message": "Error: boom", "stack": "Error: boom\n  at script.js:1:7", "line": 1}}));
        let e = r.error.expect("error").into_error();
        assert_eq!(e.code, ErrorCode::RuntimeError);
        assert_eq!(e.message, "Error: boom");
        assert_eq!(e.details["stack_trace"], json!("Error: boom\n  at script.js:1:7"));
        assert_eq!(e.details["line"], json!(1));
        assert!(!e.details.contains_key("column"));
    }

    #[test]
    fn limit_and_protocol_errors() {
        let e = ErrorFrame { kind: "limit".into(), limit: Some("result".into()), ..Default::default() }
            .into_error();
        assert_eq!((e.code, e.details["limit"].clone()), (ErrorCode::ResourceLimit, json!("result")));
        let e = ErrorFrame { kind: "protocol".into(), ..Default::default() }.into_error();
        assert_eq!(e.code, ErrorCode::InternalError);
    }

    #[tokio::test]
    async fn frames_are_read_whole_and_bounded() {
        let mut input: &[u8] = b"{\"ok\":true}\nsecond\n0123456789";
        let mut buf = Vec::new();
        assert_eq!(read_frame(&mut input, &mut buf, 64).await.expect("read"), FrameRead::Line);
        assert_eq!(buf, b"{\"ok\":true}");
        assert_eq!(read_frame(&mut input, &mut buf, 64).await.expect("read"), FrameRead::Line);
        assert_eq!(buf, b"second");
        assert_eq!(read_frame(&mut input, &mut buf, 4).await.expect("read"), FrameRead::Oversize);
        assert_eq!(read_frame(&mut input, &mut buf, 64).await.expect("read"), FrameRead::Eof);
    }
}
