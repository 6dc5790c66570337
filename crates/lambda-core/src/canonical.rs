//! Canonical JSON (object keys sorted, no whitespace) for cache keys, so the
//! same params hash the same whatever their key order on the wire.

use serde_json::Value;

/// Writes `value` canonically. Independent of serde_json's `preserve_order`.
pub fn canonical_json(value: &Value) -> String {
    let mut out = Vec::new();
    write_canonical_json(value, &mut out);
    // serde_json's output and ASCII punctuation: always UTF-8, so nothing is lost.
    String::from_utf8_lossy(&out).into_owned()
}

/// Appends `value` canonically to `out`, for callers that hash the text
/// rather than keep it.
pub fn write_canonical_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                scalar(k, out);
                out.push(b':');
                write_canonical_json(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical_json(v, out);
            }
            out.push(b']');
        }
        other => scalar(other, out),
    }
}

/// A string, number, bool or null, as serde_json writes it compactly.
fn scalar<T: serde::Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    // Writing these into a `Vec` cannot fail.
    let _ = serde_json::to_writer(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_does_not_matter() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[1,{"d":2,"c":"x"}],"x":null}}"#).unwrap_or_default();
        let b: Value =
            serde_json::from_str(r#"{"a":{"x":null,"y":[1,{"c":"x","d":2}]},"b":1}"#).unwrap_or_default();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&a), r#"{"a":{"x":null,"y":[1,{"c":"x","d":2}]},"b":1}"#);
    }

    #[test]
    fn scalars_are_written_as_serde_json_writes_them() {
        let v = serde_json::json!({"é": 1.5, "b": [true, null, -3, "\u{1F600}", 1e300, u64::MAX]});
        let text = canonical_json(&v);
        assert_eq!(text, "{\"b\":[true,null,-3,\"\u{1F600}\",1e+300,18446744073709551615],\"é\":1.5}");
        let mut appended = b"prefix:".to_vec();
        write_canonical_json(&v, &mut appended);
        assert_eq!(appended, [b"prefix:".as_slice(), text.as_bytes()].concat());
    }

    #[test]
    fn escapes_keys_and_strings() {
        let v = serde_json::json!({"q\"k": "line\nbreak"});
        assert_eq!(canonical_json(&v), r#"{"q\"k":"line\nbreak"}"#);
    }
}
