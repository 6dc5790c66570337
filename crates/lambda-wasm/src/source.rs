//! The source of a `wasm` script: base64 of a binary module, or WAT text.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The module bytes for wasmtime: the decoded binary when the text is base64
/// of something starting with the wasm magic, else the text itself (WAT,
/// which wasmtime parses). Whitespace inside base64 is allowed.
pub(crate) fn module_bytes(source: &str) -> Vec<u8> {
    let compact: String = source.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    match STANDARD.decode(compact.as_bytes()) {
        Ok(bytes) if bytes.starts_with(b"\0asm") => bytes,
        _ => source.as_bytes().to_vec(),
    }
}

/// Line and column of a WAT parse error, from wasmtime's message
/// (`--> <anon>:LINE:COL`).
pub(crate) fn wat_position(message: &str) -> Option<(u64, u64)> {
    let rest = &message[message.find("<anon>:")? + "<anon>:".len()..];
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let line = parts.next()?.parse().ok()?;
    let column = parts.next()?.parse().ok()?;
    Some((line, column))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_binary_and_wat_text() {
        let binary = b"\0asm\x01\0\0\0".to_vec();
        let encoded = STANDARD.encode(&binary);
        let wrapped = format!("{}\n{}", &encoded[..4], &encoded[4..]);
        assert_eq!(module_bytes(&wrapped), binary);
        assert_eq!(module_bytes("(module)"), b"(module)".to_vec());
        // Valid base64 that is not a module stays text.
        assert_eq!(module_bytes("abcd"), b"abcd".to_vec());
    }

    #[test]
    fn wat_errors_carry_their_position() {
        let msg = "expected `(`\n     --> <anon>:3:14\n      |";
        assert_eq!(wat_position(msg), Some((3, 14)));
        assert_eq!(wat_position("no position"), None);
    }
}
