//! Suite checks of compiled artifacts: round trip by hash, failures kept, replace.

use lambda_core::{Language, ScriptHash};
use serde_json::json;

use super::at;
use crate::{Artifact, CompileStatus, Store};

pub async fn artifact_round_trip_and_replace(store: &dyn Store) {
    let hash = ScriptHash::compute(Language::Rust, "fn main() {}", None);
    assert_eq!(store.get_artifact(&hash).await.expect("get"), None);
    let failed = Artifact {
        script_hash: hash,
        language: Language::Rust,
        compile_status: CompileStatus::Failed,
        bytes: Vec::new(),
        compile_error: Some(json!({"message": "expected `;`", "line": 1, "column": 12})),
        created_at: at(0),
    };
    store.put_artifact(&failed).await.expect("put failed");
    assert_eq!(store.get_artifact(&hash).await.expect("get"), Some(failed));
    let built = Artifact {
        script_hash: hash,
        language: Language::Rust,
        compile_status: CompileStatus::Succeeded,
        bytes: (0..=255u8).cycle().take(70_000).collect(),
        compile_error: None,
        created_at: at(5),
    };
    store.put_artifact(&built).await.expect("replace");
    assert_eq!(store.get_artifact(&hash).await.expect("get"), Some(built));
    let other = ScriptHash::compute(Language::Wasm, "(module)", None);
    assert_eq!(store.get_artifact(&other).await.expect("get other"), None);
}
