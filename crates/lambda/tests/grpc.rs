//! End to end: the gRPC API of the real binary, with a tonic client, the
//! standard health service and server reflection (what grpcurl uses).

mod support;

use std::collections::BTreeMap;

use lambda_api::grpc::proto::lambda_client::LambdaClient;
use lambda_api::grpc::proto::{
    ExecuteRequest, GetFunctionRequest, GetSessionRequest, InitializeRequest, ListFunctionsRequest,
};
use prost_types::value::Kind;
use support::Server;
use tonic::Code;
use tonic::transport::Channel;

async fn client(s: &Server) -> LambdaClient<Channel> {
    LambdaClient::connect(s.grpc.clone()).await.expect("gRPC connect")
}

fn number(n: f64) -> prost_types::Value {
    prost_types::Value { kind: Some(Kind::NumberValue(n)) }
}

fn params(pairs: &[(&str, f64)]) -> prost_types::Struct {
    prost_types::Struct {
        fields: pairs.iter().map(|(k, v)| ((*k).to_owned(), number(*v))).collect::<BTreeMap<_, _>>(),
    }
}

fn init(title: &str, script: Option<&str>) -> InitializeRequest {
    InitializeRequest {
        language_title: title.into(),
        script_content: script.map(str::to_owned),
        context: None,
        request_id: None,
    }
}

fn execute(id: &str, p: prost_types::Struct) -> ExecuteRequest {
    ExecuteRequest { request_id: id.into(), params: Some(p), cache_control: Some("no-store".into()) }
}

/// The contract's error code of a failed call, from its metadata.
fn error_code(status: &tonic::Status) -> &str {
    status.metadata().get("error-code").and_then(|v| v.to_str().ok()).unwrap_or_default()
}

#[tokio::test]
async fn every_operation_works_over_grpc_like_rest() {
    let s = Server::start(&[]);
    let mut c = client(&s).await;

    for (title, script) in [
        ("nodejs-grpc-adder", "return event.params.a + event.params.b;"),
        ("python-grpc-adder", "result = params['a'] + params['b']"),
    ] {
        let r = c.initialize(init(title, Some(script))).await.expect("initialize").into_inner();
        assert_eq!((r.status.as_str(), r.language_title.as_str()), ("initialized", title));
        assert!(!r.expires_at.is_empty());
        let out =
            c.execute(execute(&r.request_id, params(&[("a", 2.0), ("b", 3.0)]))).await.expect("execute");
        let out = out.into_inner();
        assert_eq!((out.request_id.as_str(), out.cached), (r.request_id.as_str(), false));
        // Whole numbers stay integers on the way in: 5, not 5.0, in both languages.
        assert_eq!(out.result.and_then(|v| v.kind), Some(Kind::NumberValue(5.0)), "{title}");
        let session = c.get_session(GetSessionRequest { request_id: r.request_id.clone() }).await;
        let session = session.expect("session").into_inner();
        assert_eq!((session.status.as_str(), session.execution_count), ("active", 1));
        // The REST API sees the same session.
        assert_eq!(s.get(&format!("/api/v1/sessions/{}", r.request_id)).await.body["execution_count"], 1);
    }

    // Logs and structured results.
    let r = c
        .initialize(init(
            "nodejs-grpc-obj",
            Some("console.log('hi'); return {sum: event.params.a, list: [1, 'x', null]};"),
        ))
        .await;
    let id = r.expect("initialize").into_inner().request_id;
    let out = c.execute(execute(&id, params(&[("a", 1.5)]))).await.expect("execute").into_inner();
    assert_eq!(out.logs, ["hi"]);
    let Some(Kind::StructValue(result)) = out.result.and_then(|v| v.kind) else { panic!("not an object") };
    assert_eq!(result.fields["sum"].kind, Some(Kind::NumberValue(1.5)));

    // Functions.
    let list = c
        .list_functions(ListFunctionsRequest {
            r#type: Some("predefined".into()),
            per_page: Some(2),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!((list.page, list.per_page, list.functions.len()), (1, 2, 2));
    assert!(list.total >= 3 && list.functions.iter().all(|f| f.r#type == "predefined"));
    let calc = c
        .get_function(GetFunctionRequest { language_title: "nodejs-calculator".into() })
        .await
        .expect("function")
        .into_inner();
    assert_eq!((calc.language.as_str(), calc.title.as_str()), ("nodejs", "calculator"));
    assert!(matches!(calc.schema.and_then(|v| v.kind), Some(Kind::StructValue(_))));
}

#[tokio::test]
async fn errors_keep_their_contract_code_and_session() {
    let s = Server::start(&[]);
    let mut c = client(&s).await;

    let e = c.execute(execute("no-such-session", params(&[]))).await.expect_err("unknown session");
    assert_eq!((e.code(), error_code(&e)), (Code::NotFound, "NOT_FOUND"));
    assert_eq!(e.metadata().get("request-id").and_then(|v| v.to_str().ok()), Some("no-such-session"));

    let e = c.initialize(init("cobol-x", Some("x"))).await.expect_err("unknown language");
    assert_eq!((e.code(), error_code(&e)), (Code::InvalidArgument, "INVALID_REQUEST"));
    assert!(e.message().contains("nodejs"), "{e:?}");

    let e = c.initialize(init("nodejs-broken", Some("return a +;"))).await.expect_err("syntax");
    assert_eq!((e.code(), error_code(&e)), (Code::InvalidArgument, "COMPILE_ERROR"));
    let details = e.metadata().get_bin("error-details-bin").and_then(|v| v.to_bytes().ok()).expect("details");
    let details: serde_json::Value = serde_json::from_slice(&details).expect("JSON details");
    assert_eq!(details["line"], 1, "{details}");

    let id = c.initialize(init("nodejs-thrower", Some("throw new Error('no');"))).await.expect("init");
    let id = id.into_inner().request_id;
    let e = c.execute(execute(&id, params(&[]))).await.expect_err("throws");
    assert_eq!((e.code(), error_code(&e)), (Code::Aborted, "RUNTIME_ERROR"));

    // A title that cannot be a header is the client's mistake.
    let e = c.initialize(init("nodejs-a\nb", Some("return 1;"))).await.expect_err("newline");
    assert_eq!((e.code(), error_code(&e)), (Code::InvalidArgument, "INVALID_REQUEST"));

    // An id that is not a path segment names no session, and reaches no other route.
    let e = c.get_session(GetSessionRequest { request_id: "../../health".into() }).await.expect_err("odd id");
    assert_eq!((e.code(), error_code(&e)), (Code::NotFound, "NOT_FOUND"));

    // The predefined calculator's schema, through gRPC.
    let calc = c.initialize(init("nodejs-calculator", None)).await.expect("calculator").into_inner();
    let bad = prost_types::Struct {
        fields: [(
            "operation".to_owned(),
            prost_types::Value { kind: Some(Kind::StringValue("power".into())) },
        )]
        .into(),
    };
    let e = c.execute(execute(&calc.request_id, bad)).await.expect_err("schema");
    assert_eq!((e.code(), error_code(&e)), (Code::InvalidArgument, "INVALID_PARAMS"));
}

#[tokio::test]
async fn auth_is_the_rest_apis_own() {
    let secret = "grpc-test-secret-of-enough-length-for-hs256";
    let s = Server::start(&[("LAMBDA_JWT_SECRET", secret), ("LAMBDA_AUTH", "required")]);
    let mut c = client(&s).await;
    let e = c.initialize(init("nodejs-x", Some("return 1;"))).await.expect_err("no token");
    assert_eq!((e.code(), error_code(&e)), (Code::Unauthenticated, "UNAUTHORIZED"));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lambda"))
        .args(["token", "--sub", "alice", "--scope", "execute:all"])
        .env("LAMBDA_JWT_SECRET", secret)
        .output()
        .expect("lambda token");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let mut request = tonic::Request::new(init("nodejs-x", Some("return 1;")));
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    let r = c.initialize(request).await.expect("with a token").into_inner();
    assert_eq!(r.status, "initialized");
}

#[tokio::test]
async fn health_and_reflection_serve_generic_clients() {
    use tokio_stream::StreamExt;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let s = Server::start(&[]);
    let channel = Channel::from_shared(s.grpc.clone()).expect("uri").connect().await.expect("connect");
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "lambda.v1.Lambda"] {
        let r = health.check(HealthCheckRequest { service: service.into() }).await.expect("health");
        assert_eq!(r.into_inner().status, ServingStatus::Serving as i32, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers =
        reflection.server_reflection_info(tokio_stream::iter([ask])).await.expect("reflection").into_inner();
    let answer = answers.next().await.expect("an answer").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for name in ["lambda.v1.Lambda", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }
}
