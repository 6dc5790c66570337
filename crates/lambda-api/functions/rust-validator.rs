// Validates `data` against per-field `rules`; compiled to wasm32-wasip1.
use regex::Regex;
use serde_json::{Map, Value, json};

pub fn handle(params: Value) -> Result<Value, String> {
    let data = params["data"].as_object().ok_or("params.data must be an object")?;
    let empty = Map::new();
    let rules = match &params["rules"] {
        Value::Null => &empty,
        Value::Object(rules) => rules,
        _ => return Err("params.rules must be an object".into()),
    };
    let mut errors = Vec::new();
    for (field, rule) in rules {
        for message in check(data.get(field), rule)? {
            errors.push(json!({ "field": field, "message": message }));
        }
    }
    Ok(json!({ "valid": errors.is_empty(), "errors": errors }))
}

/// The problems of one field's value under its rule.
fn check(value: Option<&Value>, rule: &Value) -> Result<Vec<String>, String> {
    let value = match value {
        None | Some(Value::Null) if rule["required"] == true => return Ok(vec!["is required".into()]),
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(value) => value,
    };
    if let Some(expected) = rule["type"].as_str() {
        let actual = type_name(value);
        if actual != expected {
            return Ok(vec![format!("must be of type {expected}, not {actual}")]);
        }
    }
    let mut problems = Vec::new();
    let (size, unit) = match value {
        Value::Number(n) => (n.as_f64(), ""),
        Value::String(s) => (Some(s.chars().count() as f64), " characters"),
        _ => (None, ""),
    };
    if let Some(size) = size {
        if let Some(min) = rule["min"].as_f64().filter(|min| size < *min) {
            problems.push(format!("must be at least {min}{unit}"));
        }
        if let Some(max) = rule["max"].as_f64().filter(|max| size > *max) {
            problems.push(format!("must be at most {max}{unit}"));
        }
    }
    if let (Some(pattern), Value::String(text)) = (rule["pattern"].as_str(), value) {
        let re = Regex::new(pattern).map_err(|e| format!("the pattern {pattern:?} is not a valid regex: {e}"))?;
        if !re.is_match(text) {
            problems.push(format!("must match the pattern {pattern}"));
        }
    }
    Ok(problems)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
