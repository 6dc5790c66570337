//! Suite checks of functions: round trip, insert-if-free, filters and paging.

use lambda_core::{FunctionFilter, FunctionKind, Language};
use serde_json::json;

use super::{at, function};
use crate::Store;

pub async fn function_round_trip(store: &dyn Store) {
    let mut f = function(Language::Rust, "validator", FunctionKind::Dynamic, Some("bob"));
    f.schema = Some(json!({"params": {"type": "object"}, "result": {"type": "object"}}));
    f.examples = json!([{"params": {"data": {}}, "result": {"valid": true}}]);
    f.compile_options = Some(json!({"optimization_level": "debug"}));
    f.updated_at = at(2_500) + chrono::Duration::microseconds(7);
    assert!(store.register_function(&f).await.expect("register"));
    assert_eq!(store.get_function("rust-validator").await.expect("get"), Some(f));
    assert_eq!(store.get_function("rust-nope").await.expect("get"), None);
}

pub async fn register_function_only_where_free(store: &dyn Store) {
    let first = function(Language::Nodejs, "adder", FunctionKind::Dynamic, Some("alice"));
    assert!(store.register_function(&first).await.expect("register"));
    let mut second = function(Language::Nodejs, "adder", FunctionKind::Dynamic, Some("mallory"));
    second.script_content = "// evil".into();
    assert!(!store.register_function(&second).await.expect("register again"));
    assert!(!store.seed_function(&second).await.expect("seed over it"));
    assert_eq!(store.get_function("nodejs-adder").await.expect("get"), Some(first));
}

pub async fn seed_function_is_idempotent(store: &dyn Store) {
    let calc = function(Language::Nodejs, "calculator", FunctionKind::Predefined, None);
    assert!(store.seed_function(&calc).await.expect("seed"));
    assert!(!store.seed_function(&calc).await.expect("seed again"));
    assert!(!store.register_function(&calc).await.expect("register over it"));
    let (total, _) = store.list_functions(&page(1, 10)).await.expect("list");
    assert_eq!(total, 1);
}

fn page(page: u32, per_page: u32) -> FunctionFilter {
    FunctionFilter { page, per_page, ..FunctionFilter::default() }
}

fn titles(functions: &[lambda_core::Function]) -> Vec<&str> {
    functions.iter().map(|f| f.language_title.as_str()).collect()
}

pub async fn list_functions_pages_in_title_order(store: &dyn Store) {
    // Inserted out of order on purpose.
    for title in ["e", "a", "d", "b", "c"] {
        let f = function(Language::Python, title, FunctionKind::Predefined, None);
        assert!(store.seed_function(&f).await.expect("seed"));
    }
    let (total, first) = store.list_functions(&page(1, 2)).await.expect("page 1");
    assert_eq!((total, titles(&first)), (5, vec!["python-a", "python-b"]));
    let (total, second) = store.list_functions(&page(2, 2)).await.expect("page 2");
    assert_eq!((total, titles(&second)), (5, vec!["python-c", "python-d"]));
    let (total, last) = store.list_functions(&page(3, 2)).await.expect("page 3");
    assert_eq!((total, titles(&last)), (5, vec!["python-e"]));
    let (total, beyond) = store.list_functions(&page(4, 2)).await.expect("page 4");
    assert_eq!((total, beyond.len()), (5, 0));
    let (total, all) = store.list_functions(&page(1, 100)).await.expect("all");
    assert_eq!((total, all.len()), (5, 5));
    // Page 0 is read as the first page.
    let (_, zero) = store.list_functions(&page(0, 2)).await.expect("page 0");
    assert_eq!(titles(&zero), vec!["python-a", "python-b"]);
}

pub async fn list_functions_filters_combine(store: &dyn Store) {
    let rows = [
        function(Language::Nodejs, "calculator", FunctionKind::Predefined, None),
        function(Language::Python, "textprocessor", FunctionKind::Predefined, None),
        function(Language::Nodejs, "a-mine", FunctionKind::Dynamic, Some("alice")),
        function(Language::Python, "b-mine", FunctionKind::Dynamic, Some("alice")),
        function(Language::Nodejs, "theirs", FunctionKind::Dynamic, Some("bob")),
    ];
    for f in &rows {
        assert!(store.register_function(f).await.expect("register"));
    }
    let list = |language, user_id: Option<&str>, kind| FunctionFilter {
        language,
        user_id: user_id.map(str::to_owned),
        kind,
        page: 1,
        per_page: 20,
    };
    let cases = [
        (
            list(Some(Language::Nodejs), None, None),
            vec!["nodejs-a-mine", "nodejs-calculator", "nodejs-theirs"],
        ),
        (list(None, Some("alice"), None), vec!["nodejs-a-mine", "python-b-mine"]),
        (list(None, None, Some(FunctionKind::Predefined)), vec!["nodejs-calculator", "python-textprocessor"]),
        (list(Some(Language::Nodejs), Some("alice"), None), vec!["nodejs-a-mine"]),
        (
            list(Some(Language::Nodejs), None, Some(FunctionKind::Dynamic)),
            vec!["nodejs-a-mine", "nodejs-theirs"],
        ),
        (list(None, Some("alice"), Some(FunctionKind::Predefined)), vec![]),
        (list(Some(Language::Rust), None, None), vec![]),
        (list(Some(Language::Python), Some("alice"), Some(FunctionKind::Dynamic)), vec!["python-b-mine"]),
    ];
    for (filter, expected) in cases {
        let (total, functions) = store.list_functions(&filter).await.expect("list");
        assert_eq!(titles(&functions), expected, "{filter:?}");
        assert_eq!(total, expected.len() as u64, "{filter:?}");
    }
    let mut paged = list(Some(Language::Nodejs), None, None);
    paged.per_page = 1;
    paged.page = 2;
    let (total, functions) = store.list_functions(&paged).await.expect("list");
    assert_eq!((total, titles(&functions)), (3, vec!["nodejs-calculator"]));
}
