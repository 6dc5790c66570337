//! Languages, `Language-Title` parsing and the configurable prefix/regex table
//! that maps a title to its runtime.

use std::fmt;
use std::str::FromStr;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::error::LambdaError;

/// The runtimes the platform knows. A closed set: code `match`es on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Nodejs,
    Python,
    Rust,
    Wasm,
}

impl Language {
    pub const ALL: [Language; 4] = [Self::Nodejs, Self::Python, Self::Rust, Self::Wasm];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nodejs => "nodejs",
            Self::Python => "python",
            Self::Rust => "rust",
            Self::Wasm => "wasm",
        }
    }

    /// Only compiled languages accept `compile_options`.
    pub fn is_compiled(self) -> bool {
        matches!(self, Self::Rust)
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Language {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Language::ALL.into_iter().find(|l| l.as_str() == s).ok_or_else(|| format!("unknown language `{s}`"))
    }
}

/// Longest accepted `Language-Title` header value.
pub const MAX_LANGUAGE_TITLE_LEN: usize = 128;

/// A parsed `Language-Title`, e.g. `nodejs-calculator` or `js-adder`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LanguageTitle {
    raw: String,
    language: Language,
    title: String,
}

impl LanguageTitle {
    pub fn as_str(&self) -> &str {
        &self.raw
    }
    pub fn language(&self) -> Language {
        self.language
    }
    pub fn title(&self) -> &str {
        &self.title
    }
}

impl fmt::Display for LanguageTitle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// How one table entry recognises a title.
#[derive(Debug, Clone)]
enum Matcher {
    Prefix(String),
    Regex(Regex),
}

/// One line of the mapping table as written in `RUNTIME_MAPPINGS` (JSON):
/// `{"prefix": "nodejs-", "runtime": "nodejs"}` or `{"regex": "^js-", "runtime": "nodejs"}`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MappingRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    pub runtime: Language,
}

/// The ordered prefix/regex table; the first matching rule wins.
#[derive(Debug, Clone)]
pub struct LanguageMap {
    rules: Vec<(Matcher, Language)>,
}

impl Default for LanguageMap {
    fn default() -> Self {
        Self::from_rules(&Self::default_rules()).expect("default rules are valid")
    }
}

impl LanguageMap {
    pub fn default_rules() -> Vec<MappingRule> {
        let prefix = |p: &str, runtime| MappingRule { prefix: Some(p.into()), regex: None, runtime };
        vec![
            prefix("nodejs-", Language::Nodejs),
            prefix("python-", Language::Python),
            prefix("rust-", Language::Rust),
            prefix("wasm-", Language::Wasm),
            MappingRule { prefix: None, regex: Some("^js-".into()), runtime: Language::Nodejs },
        ]
    }

    /// Builds the table; an entry must have exactly one of `prefix` or `regex`.
    pub fn from_rules(rules: &[MappingRule]) -> Result<Self, String> {
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                let matcher = match (&rule.prefix, &rule.regex) {
                    (Some(p), None) if !p.is_empty() => Matcher::Prefix(p.clone()),
                    (None, Some(r)) => {
                        Matcher::Regex(Regex::new(r).map_err(|e| format!("rule {i}: invalid regex: {e}"))?)
                    }
                    _ => return Err(format!("rule {i}: give exactly one non-empty `prefix` or `regex`")),
                };
                Ok((matcher, rule.runtime))
            })
            .collect::<Result<Vec<_>, String>>()?;
        if rules.is_empty() {
            return Err("the mapping table is empty".into());
        }
        Ok(Self { rules })
    }

    /// The languages some rule maps to, for error messages.
    pub fn supported(&self) -> Vec<Language> {
        let mut langs: Vec<Language> = self.rules.iter().map(|(_, l)| *l).collect();
        langs.sort();
        langs.dedup();
        langs
    }

    /// Parses and maps a `Language-Title` header value.
    pub fn parse(&self, raw: &str) -> Result<LanguageTitle, LambdaError> {
        let well_formed = !raw.is_empty()
            && raw.len() <= MAX_LANGUAGE_TITLE_LEN
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && raw.as_bytes()[0].is_ascii_alphanumeric();
        let dash = raw.find('-');
        let Some(dash) = dash.filter(|&d| well_formed && d > 0 && d + 1 < raw.len()) else {
            return Err(LambdaError::invalid_request(format!(
                "Language-Title must look like `<language>-<title>` using [A-Za-z0-9._-], at most {MAX_LANGUAGE_TITLE_LEN} characters"
            ))
            .with("header", "Language-Title"));
        };
        for (matcher, language) in &self.rules {
            let title = match matcher {
                Matcher::Prefix(p) => raw.strip_prefix(p.as_str()),
                Matcher::Regex(r) => r.is_match(raw).then(|| &raw[dash + 1..]),
            };
            if let Some(title) = title.filter(|t| !t.is_empty()) {
                return Ok(LanguageTitle {
                    raw: raw.to_owned(),
                    language: *language,
                    title: title.to_owned(),
                });
            }
        }
        let supported: Vec<&str> = self.supported().into_iter().map(Language::as_str).collect();
        Err(LambdaError::invalid_request(format!(
            "unknown language in Language-Title `{raw}`; supported: {}",
            supported.join(", ")
        ))
        .with("header", "Language-Title")
        .with("supported", supported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn parse(raw: &str) -> Result<(Language, String), ErrorCode> {
        LanguageMap::default().parse(raw).map(|t| (t.language(), t.title().to_owned())).map_err(|e| e.code)
    }

    #[test]
    fn maps_default_prefixes_and_regex() {
        assert_eq!(parse("nodejs-calculator"), Ok((Language::Nodejs, "calculator".into())));
        assert_eq!(parse("python-text-processor"), Ok((Language::Python, "text-processor".into())));
        assert_eq!(parse("rust-validator"), Ok((Language::Rust, "validator".into())));
        assert_eq!(parse("wasm-add"), Ok((Language::Wasm, "add".into())));
        assert_eq!(parse("js-adder"), Ok((Language::Nodejs, "adder".into())));
    }

    #[test]
    fn rejects_malformed_and_unknown() {
        for bad in ["", "nodejs", "nodejs-", "-x", "node js-x", "nodejs-a/b", "nodejs-\u{e9}"] {
            assert_eq!(parse(bad), Err(ErrorCode::InvalidRequest), "{bad:?}");
        }
        let err = LanguageMap::default().parse("cobol-payroll").err().map(|e| e.details);
        let supported = err.and_then(|d| d.get("supported").cloned());
        assert_eq!(supported, Some(serde_json::json!(["nodejs", "python", "rust", "wasm"])));
        assert_eq!(parse(&format!("nodejs-{}", "a".repeat(200))), Err(ErrorCode::InvalidRequest));
    }

    #[test]
    fn custom_table_is_ordered_and_validated() {
        let rules: Vec<MappingRule> = serde_json::from_str(
            r#"[{"regex": "^(py|python3)-", "runtime": "python"}, {"prefix": "node-", "runtime": "nodejs"}]"#,
        )
        .expect("json");
        let map = LanguageMap::from_rules(&rules).expect("valid");
        assert_eq!(map.parse("py-x").map(|t| t.language()).ok(), Some(Language::Python));
        assert_eq!(map.parse("node-x").map(|t| t.title().to_owned()).ok(), Some("x".into()));
        assert!(map.parse("nodejs-x").is_err());
        let both =
            MappingRule { prefix: Some("a-".into()), regex: Some("^a".into()), runtime: Language::Wasm };
        assert!(LanguageMap::from_rules(&[both]).is_err());
        let bad = MappingRule { prefix: None, regex: Some("(".into()), runtime: Language::Wasm };
        assert!(LanguageMap::from_rules(&[bad]).is_err());
    }
}
