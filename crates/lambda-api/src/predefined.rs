//! The functions shipped with the platform, seeded into the store at first start.

use chrono::Utc;
use lambda_core::{Function, FunctionKind, LanguageMap};
use serde::Deserialize;
use serde_json::Value;

/// `(language_title, script, metadata JSON)` of every shipped function.
const SHIPPED: &[(&str, &str, &str)] = &[
    (
        "nodejs-calculator",
        include_str!("../functions/nodejs-calculator.js"),
        include_str!("../functions/nodejs-calculator.json"),
    ),
    (
        "python-textprocessor",
        include_str!("../functions/python-textprocessor.py"),
        include_str!("../functions/python-textprocessor.json"),
    ),
    (
        "rust-validator",
        include_str!("../functions/rust-validator.rs"),
        include_str!("../functions/rust-validator.json"),
    ),
];

#[derive(Deserialize)]
struct Metadata {
    description: String,
    schema: Value,
    examples: Value,
}

/// The shipped functions as store rows. Panics only if the files in this
/// crate are malformed, which the unit test below rules out.
pub fn shipped() -> Vec<Function> {
    let map = LanguageMap::default();
    let now = Utc::now();
    SHIPPED
        .iter()
        .map(|(language_title, script, metadata)| {
            let meta: Metadata =
                serde_json::from_str(metadata).expect("shipped function metadata is valid JSON");
            let parsed = map.parse(language_title).expect("shipped function title is valid");
            Function {
                language_title: (*language_title).to_owned(),
                language: parsed.language(),
                title: parsed.title().to_owned(),
                description: meta.description,
                kind: FunctionKind::Predefined,
                user_id: None,
                script_content: (*script).to_owned(),
                schema: Some(meta.schema),
                examples: meta.examples,
                compile_options: None,
                created_at: now,
                updated_at: now,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_functions_are_well_formed() {
        let functions = shipped();
        assert_eq!(functions.len(), SHIPPED.len());
        for f in functions {
            let schema = f.schema.as_ref().and_then(|s| s.get("params")).cloned().unwrap_or_default();
            let validator = jsonschema::validator_for(&schema);
            assert!(validator.is_ok(), "{}: params schema compiles", f.language_title);
            let Ok(validator) = validator else { continue };
            for example in f.examples.as_array().into_iter().flatten() {
                assert!(
                    validator.is_valid(&example["params"]),
                    "{}: example matches schema",
                    f.language_title
                );
            }
        }
    }
}
