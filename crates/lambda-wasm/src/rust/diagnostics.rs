//! rustc's JSON diagnostics (from `cargo --message-format=json`) turned into
//! the `COMPILE_ERROR` details: positions in the user's own file, never the
//! template's, and host paths cut out of the rendered text.

use serde_json::{Value, json};

/// At most this many diagnostics, and this many characters of each, are returned.
const MAX_DIAGNOSTICS: usize = 20;
const MAX_RENDERED: usize = 4000;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Diagnostic {
    pub level: String,
    pub message: String,
    /// Position in the user's file (1-based), when the primary span is there.
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub rendered: String,
}

impl Diagnostic {
    /// One `compiler-message` of cargo's JSON stream, if it is an error or a
    /// warning about the user's crate (not cargo's "aborting due to" summary).
    pub(crate) fn from_cargo(message: &Value, user_file: &str, hide: &[&str]) -> Option<Self> {
        let level = message["level"].as_str()?;
        let text = message["message"].as_str()?;
        if !matches!(level, "error" | "warning") || text.starts_with("aborting due to") {
            return None;
        }
        if text.contains("warning emitted") || text.contains("warnings emitted") {
            return None;
        }
        let primary = message["spans"]
            .as_array()
            .and_then(|spans| spans.iter().find(|s| s["is_primary"] == true && s["file_name"] == user_file));
        let mut rendered = message["rendered"].as_str().unwrap_or(text).to_owned();
        for path in hide.iter().filter(|p| !p.is_empty()) {
            rendered = rendered.replace(path, "…");
        }
        if rendered.len() > MAX_RENDERED {
            let mut cut = MAX_RENDERED;
            while !rendered.is_char_boundary(cut) {
                cut -= 1;
            }
            rendered.truncate(cut);
            rendered.push_str("\n[truncated]");
        }
        Some(Self {
            level: level.to_owned(),
            message: text.to_owned(),
            line: primary.and_then(|s| s["line_start"].as_u64()),
            column: primary.and_then(|s| s["column_start"].as_u64()),
            rendered,
        })
    }

    fn to_json(&self) -> Value {
        json!({
            "level": self.level,
            "message": self.message,
            "line": self.line,
            "column": self.column,
            "rendered": self.rendered,
        })
    }
}

/// `details` of the `COMPILE_ERROR`: the first error's message and position,
/// and the diagnostics (errors first).
pub(crate) fn details(diagnostics: &[Diagnostic]) -> (String, serde_json::Map<String, Value>) {
    let mut ordered: Vec<&Diagnostic> = diagnostics.iter().filter(|d| d.level == "error").collect();
    ordered.extend(diagnostics.iter().filter(|d| d.level != "error"));
    ordered.truncate(MAX_DIAGNOSTICS);
    let first = ordered.iter().find(|d| d.level == "error").copied();
    let message = first.map_or_else(|| "the Rust code does not compile".to_owned(), |d| d.message.clone());
    let mut details = serde_json::Map::new();
    details.insert("message".into(), json!(message));
    if let Some(d) = first
        && let (Some(line), Some(column)) = (d.line, d.column)
    {
        details.insert("line".into(), json!(line));
        details.insert("column".into(), json!(column));
    }
    details.insert("diagnostics".into(), Value::Array(ordered.iter().map(|d| d.to_json()).collect()));
    (message, details)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(level: &str, text: &str, file: &str, line: u64) -> Value {
        json!({
            "level": level, "message": text,
            "rendered": format!("{level}: {text}\n --> {file}:{line}:5 /root/.cargo/registry/x"),
            "spans": [{"file_name": file, "line_start": line, "column_start": 5, "is_primary": true}]
        })
    }

    #[test]
    fn positions_only_in_the_users_file_and_paths_hidden() {
        let d = Diagnostic::from_cargo(
            &msg("error", "mismatched types", "src/user.rs", 3),
            "src/user.rs",
            &["/root"],
        )
        .expect("kept");
        assert_eq!((d.line, d.column), (Some(3), Some(5)));
        assert!(!d.rendered.contains("/root"), "{}", d.rendered);
        let glue =
            Diagnostic::from_cargo(&msg("error", "x", "src/main.rs", 60), "src/user.rs", &[]).expect("kept");
        assert_eq!(glue.line, None);
        assert!(
            Diagnostic::from_cargo(&msg("error", "aborting due to 1 previous error", "", 0), "", &[])
                .is_none()
        );
        assert!(Diagnostic::from_cargo(&msg("note", "n", "src/user.rs", 1), "src/user.rs", &[]).is_none());
    }

    #[test]
    fn details_lead_with_the_first_error() {
        let warn = Diagnostic::from_cargo(&msg("warning", "unused", "src/user.rs", 1), "src/user.rs", &[]);
        let err = Diagnostic::from_cargo(&msg("error", "boom", "src/user.rs", 7), "src/user.rs", &[]);
        let (message, details) = details(&[warn.expect("w"), err.expect("e")]);
        assert_eq!(message, "boom");
        assert_eq!((details["line"].clone(), details["column"].clone()), (json!(7), json!(5)));
        assert_eq!(details["diagnostics"][0]["level"], "error");
    }
}
