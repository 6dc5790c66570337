//! The OpenAPI 3 document of the REST API, generated from the handlers'
//! annotations and the types in [`crate::wire`].

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{execute, functions, health, initialize, sessions};
use crate::wire;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Lambda Microservice",
        description = "Initialize a script once (Node.js, Python, Rust, WebAssembly), execute it many times. \
            Error bodies are `{request_id?, error: {code, message, details}}`; statuses 460–462 are faults of user code.",
    ),
    paths(
        initialize::initialize,
        execute::execute,
        sessions::get_session,
        functions::list,
        functions::get_one,
        health::health,
    ),
    components(schemas(
        wire::InitializeRequest,
        wire::InitializeResponse,
        wire::ExecuteRequest,
        wire::ExecuteResponse,
        wire::ExecutionMetrics,
        wire::SessionResponse,
        wire::FunctionEntry,
        wire::FunctionList,
        wire::FunctionDetail,
        wire::HealthResponse,
        wire::ErrorObject,
        wire::ErrorResponse,
    )),
    modifiers(&BearerAuth, &SessionLinks),
    tags(
        (name = "sessions", description = "Initialize and execute scripts"),
        (name = "functions", description = "Registered functions"),
        (name = "operations", description = "Health"),
    ),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".to_owned());
        scheme.description = Some(
            "JWT with `sub`, `exp` and `scope` (space-separated: execute:all, execute:<language>, \
             read:functions, write:functions, admin). Needed when auth is `required`; optional otherwise."
                .to_owned(),
        );
        components.add_security_scheme("bearerAuth", SecurityScheme::Http(scheme));
    }
}

/// Tells generic clients that initialize's `request_id` feeds execute and
/// the session lookup (OpenAPI links).
struct SessionLinks;

impl Modify for SessionLinks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, link::Link};
        let Some(item) = openapi.paths.paths.get_mut("/api/v1/initialize") else { return };
        let Some(op) = item.post.as_mut() else { return };
        let Some(RefOr::T(ok)) = op.responses.responses.get_mut("200") else { return };
        for (name, operation_id) in [("execute", "execute"), ("session", "get_session")] {
            let link = Link::builder()
                .operation_id(operation_id)
                .parameter("request_id", "$response.body#/request_id")
                .description(format!("Use the new session's id with `{operation_id}`"))
                .build();
            ok.links.insert(name.to_owned(), RefOr::T(link));
        }
    }
}

/// The document as served at `/api/v1/openapi.json`.
pub fn document(version: &str) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = version.to_owned();
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_errors() {
        let doc = serde_json::to_value(document("1.0.0")).unwrap_or_default();
        let mut paths =
            doc["paths"].as_object().map(|p| p.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
        paths.sort();
        assert_eq!(
            paths,
            vec![
                "/api/v1/execute/{request_id}",
                "/api/v1/functions",
                "/api/v1/functions/{language_title}",
                "/api/v1/initialize",
                "/api/v1/sessions/{request_id}",
                "/health",
            ]
        );
        let execute = &doc["paths"]["/api/v1/execute/{request_id}"]["post"]["responses"];
        for status in ["200", "400", "404", "429", "460", "462", "504"] {
            assert!(execute.get(status).is_some(), "execute documents {status}");
        }
        assert_eq!(doc["components"]["securitySchemes"]["bearerAuth"]["scheme"], "bearer");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    }
}
