// Replaced by the user's source at each compile; this one builds the template.
use serde_json::{Value, json};

pub fn handle(params: Value) -> Value {
    let re = regex::Regex::new("^[a-z]+$").expect("valid regex");
    json!({ "params": params, "matches": re.is_match("abc") })
}
