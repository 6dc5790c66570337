//! The gRPC API (`lambda.v1.Lambda`, `proto/lambda/v1/lambda.proto`): each
//! RPC is the REST operation of the same name, run through the same router.
//! Authentication, rate limits, validation, logging and metrics are therefore
//! the REST API's own, and an error keeps its contract code: the gRPC status
//! says the class, the metadata the rest (`error-code`, `request-id`,
//! `error-details-bin`). The cost is one JSON encoding per call each way,
//! which a gRPC client pays in a protobuf encoding anyway.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use prost_types::value::Kind;
use serde_json::{Map, Number, Value, json};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tower::ServiceExt;

use proto::lambda_server::Lambda;

/// The generated messages, service and client.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("lambda.v1");

    /// Every file of the API, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/lambda_descriptor.bin"));
}

pub use proto::lambda_server::LambdaServer;

/// The `lambda.v1.Lambda` service over the REST router.
#[derive(Clone)]
pub struct GrpcApi {
    router: Router,
}

impl GrpcApi {
    /// `router` is the one [`crate::router`] built for the HTTP listener.
    pub fn new(router: Router) -> Self {
        Self { router }
    }

    /// Runs one REST call with the caller's credentials and address.
    async fn call(&self, call: RestCall<'_>) -> Result<Value, Status> {
        let mut request = Request::builder().method(call.method).uri(&call.uri);
        if let Some(auth) = call.metadata.get("authorization").and_then(|v| v.to_str().ok()) {
            request = request.header("authorization", auth);
        }
        for (name, value) in call.headers {
            request = request.header(*name, value.as_str());
        }
        let body = match call.body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        // A field that cannot be a header or a path (a newline in a title):
        // the client's mistake, told as REST would tell it.
        let mut request = request.body(body).map_err(|e| {
            let message = format!("a field cannot be sent: {e}");
            let body = json!({ "error": { "code": "INVALID_REQUEST", "message": message, "details": {} } });
            status_of(StatusCode::BAD_REQUEST, &body, None)
        })?;
        if let Some(addr) = call.remote {
            request.extensions_mut().insert(ConnectInfo(addr));
        }
        let response = match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.map_err(|e| Status::internal(e.to_string()))?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if parts.status.is_success() {
            return Ok(value);
        }
        let retry_after = parts.headers.get("retry-after").and_then(|v| v.to_str().ok());
        Err(status_of(parts.status, &value, retry_after))
    }
}

struct RestCall<'a> {
    method: Method,
    uri: String,
    headers: &'a [(&'static str, String)],
    body: Option<Value>,
    metadata: &'a MetadataMap,
    remote: Option<SocketAddr>,
}

impl<'a> RestCall<'a> {
    fn new<T>(method: Method, uri: String, request: &'a tonic::Request<T>) -> Self {
        Self {
            method,
            uri,
            headers: &[],
            body: None,
            metadata: request.metadata(),
            remote: request.remote_addr(),
        }
    }
}

#[tonic::async_trait]
impl Lambda for GrpcApi {
    async fn initialize(
        &self,
        request: tonic::Request<proto::InitializeRequest>,
    ) -> Result<tonic::Response<proto::InitializeResponse>, Status> {
        let r = request.get_ref();
        let mut headers = vec![("language-title", r.language_title.clone())];
        if let Some(id) = &r.request_id {
            headers.push(("x-request-id", id.clone()));
        }
        let mut body = Map::new();
        if let Some(script) = &r.script_content {
            body.insert("script_content".into(), Value::String(script.clone()));
        }
        if let Some(context) = &r.context {
            body.insert("context".into(), struct_to_json(context));
        }
        let mut call = RestCall::new(Method::POST, "/api/v1/initialize".into(), &request);
        call.headers = &headers;
        call.body = Some(Value::Object(body));
        let v = self.call(call).await?;
        Ok(tonic::Response::new(proto::InitializeResponse {
            request_id: text(&v["request_id"]),
            status: text(&v["status"]),
            expires_at: text(&v["expires_at"]),
            language_title: text(&v["language_title"]),
            compile_status: v["compile_status"].as_str().map(str::to_owned),
        }))
    }

    async fn execute(
        &self,
        request: tonic::Request<proto::ExecuteRequest>,
    ) -> Result<tonic::Response<proto::ExecuteResponse>, Status> {
        let r = request.get_ref();
        let headers: Vec<_> = r.cache_control.iter().map(|c| ("x-cache-control", c.clone())).collect();
        let params = r.params.as_ref().map_or_else(|| json!({}), struct_to_json);
        let uri = format!("/api/v1/execute/{}", path_segment(&r.request_id));
        let mut call = RestCall::new(Method::POST, uri, &request);
        call.headers = &headers;
        call.body = Some(json!({ "params": params }));
        let v = self.call(call).await?;
        let logs = v["logs"].as_array().map(|l| l.iter().map(text).collect()).unwrap_or_default();
        Ok(tonic::Response::new(proto::ExecuteResponse {
            request_id: text(&v["request_id"]),
            language_title: text(&v["language_title"]),
            execution_time: v["execution_time"].as_u64().unwrap_or(0),
            cached: v["cached"].as_bool().unwrap_or(false),
            result: Some(json_to_value(&v["result"])),
            logs,
        }))
    }

    async fn get_session(
        &self,
        request: tonic::Request<proto::GetSessionRequest>,
    ) -> Result<tonic::Response<proto::Session>, Status> {
        let uri = format!("/api/v1/sessions/{}", path_segment(&request.get_ref().request_id));
        let v = self.call(RestCall::new(Method::GET, uri, &request)).await?;
        Ok(tonic::Response::new(proto::Session {
            request_id: text(&v["request_id"]),
            language_title: text(&v["language_title"]),
            status: text(&v["status"]),
            created_at: text(&v["created_at"]),
            expires_at: text(&v["expires_at"]),
            execution_count: v["execution_count"].as_i64().unwrap_or(0),
            last_executed_at: v["last_executed_at"].as_str().map(str::to_owned),
        }))
    }

    async fn list_functions(
        &self,
        request: tonic::Request<proto::ListFunctionsRequest>,
    ) -> Result<tonic::Response<proto::ListFunctionsResponse>, Status> {
        let r = request.get_ref();
        let numbers = [("page", r.page), ("per_page", r.per_page)];
        let query: Vec<String> = [("language", &r.language), ("user_id", &r.user_id), ("type", &r.r#type)]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", path_segment(v))))
            .chain(numbers.into_iter().filter_map(|(k, v)| v.map(|v| format!("{k}={v}"))))
            .collect();
        let uri = format!("/api/v1/functions?{}", query.join("&"));
        let v = self.call(RestCall::new(Method::GET, uri, &request)).await?;
        let functions =
            v["functions"].as_array().map(|f| f.iter().map(function).collect()).unwrap_or_default();
        Ok(tonic::Response::new(proto::ListFunctionsResponse {
            total: v["total"].as_u64().unwrap_or(0),
            page: v["page"].as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
            per_page: v["per_page"].as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
            functions,
        }))
    }

    async fn get_function(
        &self,
        request: tonic::Request<proto::GetFunctionRequest>,
    ) -> Result<tonic::Response<proto::Function>, Status> {
        let uri = format!("/api/v1/functions/{}", path_segment(&request.get_ref().language_title));
        let v = self.call(RestCall::new(Method::GET, uri, &request)).await?;
        Ok(tonic::Response::new(function(&v)))
    }
}

fn function(v: &Value) -> proto::Function {
    let value = |key: &str| v.get(key).filter(|v| !v.is_null()).map(json_to_value);
    proto::Function {
        language: text(&v["language"]),
        title: text(&v["title"]),
        language_title: text(&v["language_title"]),
        description: text(&v["description"]),
        r#type: text(&v["type"]),
        created_at: text(&v["created_at"]),
        updated_at: text(&v["updated_at"]),
        user_id: v["user_id"].as_str().map(str::to_owned),
        schema: value("schema"),
        examples: value("examples"),
        script_content: v["script_content"].as_str().map(str::to_owned),
        compile_options: value("compile_options"),
    }
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// A client's value as one path segment or query value: everything but the
/// unreserved characters percent-encoded, so that it names one resource.
fn path_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The gRPC status of a REST error: the class in the code, the contract's
/// code, session and details in the metadata.
fn status_of(http: StatusCode, body: &Value, retry_after: Option<&str>) -> Status {
    let error = &body["error"];
    let code = error["code"].as_str().unwrap_or(match http {
        StatusCode::NOT_FOUND => "NOT_FOUND",
        _ => "INTERNAL_ERROR",
    });
    let class = match code {
        "INVALID_REQUEST" | "INVALID_PARAMS" | "COMPILE_ERROR" => Code::InvalidArgument,
        "UNAUTHORIZED" => Code::Unauthenticated,
        "FORBIDDEN" => Code::PermissionDenied,
        "NOT_FOUND" => Code::NotFound,
        "CONFLICT" => Code::AlreadyExists,
        "PAYLOAD_TOO_LARGE" | "RATE_LIMITED" | "RESOURCE_LIMIT" => Code::ResourceExhausted,
        "RUNTIME_ERROR" => Code::Aborted,
        "TIMEOUT" => Code::DeadlineExceeded,
        "UNAVAILABLE" => Code::Unavailable,
        _ => Code::Internal,
    };
    let message = error["message"].as_str().unwrap_or("request failed");
    let mut status = Status::new(class, message);
    let metadata = status.metadata_mut();
    if let Ok(v) = MetadataValue::try_from(code) {
        metadata.insert("error-code", v);
    }
    if let Some(Ok(v)) = body["request_id"].as_str().map(MetadataValue::try_from) {
        metadata.insert("request-id", v);
    }
    if let Some(Ok(v)) = retry_after.map(MetadataValue::try_from) {
        metadata.insert("retry-after", v);
    }
    let details = serde_json::to_vec(&error["details"]).unwrap_or_default();
    metadata.insert_bin("error-details-bin", MetadataValue::from_bytes(&details));
    status
}

fn struct_to_json(s: &prost_types::Struct) -> Value {
    Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), value_to_json(v))).collect())
}

/// protobuf numbers are doubles: a whole one within ±2^53 becomes a JSON
/// integer, so `2` reaches a script as `2`, not `2.0`.
fn value_to_json(v: &prost_types::Value) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::NumberValue(n)) => {
            const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
            if n.fract() == 0.0 && n.abs() <= EXACT {
                Value::Number(Number::from(*n as i64))
            } else {
                Number::from_f64(*n).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(value_to_json).collect()),
    }
}

fn json_to_value(v: &Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => {
            Kind::ListValue(prost_types::ListValue { values: a.iter().map(json_to_value).collect() })
        }
        Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect::<BTreeMap<_, _>>(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_survives_the_protobuf_value_round_trip() {
        let v = json!({"a": 2, "b": -1.5, "c": [true, null, "x"], "d": {"e": 9007199254740992u64}});
        assert_eq!(value_to_json(&json_to_value(&v)), v);
    }

    #[test]
    fn ids_become_one_path_segment() {
        assert_eq!(path_segment("ab-1.2_~"), "ab-1.2_~");
        assert_eq!(path_segment("../x y"), "..%2Fx%20y");
    }

    #[test]
    fn contract_codes_keep_their_class_and_their_name() {
        let body = json!({"request_id": "s1", "error": {"code": "RUNTIME_ERROR", "message": "boom", "details": {"line": 3}}});
        let s = status_of(StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST), &body, None);
        assert_eq!((s.code(), s.message()), (Code::Aborted, "boom"));
        assert_eq!(s.metadata().get("error-code").and_then(|v| v.to_str().ok()), Some("RUNTIME_ERROR"));
        assert_eq!(s.metadata().get("request-id").and_then(|v| v.to_str().ok()), Some("s1"));
        let details = s.metadata().get_bin("error-details-bin").and_then(|v| v.to_bytes().ok());
        assert_eq!(details.as_deref(), Some(&br#"{"line":3}"#[..]));
    }
}
