//! End to end: JWT auth modes, scopes, ownership, rate limits, CORS, limits, OpenAPI.

mod support;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use lambda_api::auth::{Claims, sign_hs256};
use serde_json::json;
use support::{Server, assert_error};

const SECRET: &str = "an-end-to-end-test-secret-of-32-bytes-or-more";

fn token(sub: &str, scope: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lambda"))
        .args(["token", "--sub", sub, "--scope", scope, "--ttl", "10m"])
        .env("LAMBDA_JWT_SECRET", SECRET)
        .output()
        .expect("lambda token");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf8").trim().to_owned()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn required() -> Server {
    Server::start(&[("LAMBDA_JWT_SECRET", SECRET)])
}

async fn init_as(s: &Server, auth: &str, title: &str, body: serde_json::Value) -> support::Reply {
    s.post("/api/v1/initialize", &[("Authorization", auth), ("Language-Title", title)], &body).await
}

#[tokio::test]
async fn required_mode_checks_tokens() {
    let s = required();
    let plain = s.initialize("nodejs-x", json!({"script_content": "return 1"})).await;
    assert_error(&plain, 401, "UNAUTHORIZED");
    assert_eq!(plain.headers.get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
    let garbage = init_as(&s, "Bearer not-a-token", "nodejs-x", json!({"script_content": "return 1"})).await;
    assert_error(&garbage, 401, "UNAUTHORIZED");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let expired = sign_hs256(
        SECRET.as_bytes(),
        &Claims { sub: "a".into(), exp: now - 600, scope: "execute:all".into(), iat: None },
    )
    .expect("sign");
    let e = assert_error(
        &init_as(&s, &bearer(&expired), "nodejs-x", json!({"script_content": "return 1"})).await,
        401,
        "UNAUTHORIZED",
    );
    assert!(e["message"].as_str().is_some_and(|m| m.contains("expired")), "{e}");
    let forged = sign_hs256(
        b"another-secret-another-secret-another",
        &Claims { sub: "a".into(), exp: now + 600, scope: "admin".into(), iat: None },
    )
    .expect("sign");
    assert_error(
        &init_as(&s, &bearer(&forged), "nodejs-x", json!({"script_content": "return 1"})).await,
        401,
        "UNAUTHORIZED",
    );

    let alice = bearer(&token("alice", "execute:nodejs"));
    let ok = init_as(&s, &alice, "nodejs-x", json!({"script_content": "return 1"})).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let e = assert_error(
        &init_as(&s, &alice, "python-x", json!({"script_content": "result = 1"})).await,
        403,
        "FORBIDDEN",
    );
    assert!(e["message"].as_str().is_some_and(|m| m.contains("execute:python")), "{e}");
    assert_error(
        &s.request(reqwest::Method::GET, "/api/v1/functions", &[("Authorization", &alice)], None).await,
        403,
        "FORBIDDEN",
    );
    let reader = bearer(&token("carol", "read:functions"));
    let listed =
        s.request(reqwest::Method::GET, "/api/v1/functions", &[("Authorization", &reader)], None).await;
    assert_eq!(listed.status, 200, "{}", listed.body);

    // No auth needed for these.
    assert_eq!(s.get("/health").await.status, 200);
    assert_eq!(s.get("/metrics").await.status, 200);
    let doc = s.get("/api/v1/openapi.json").await;
    assert_eq!(doc.status, 200);
    assert!(doc.body["paths"]["/api/v1/execute/{request_id}"].is_object(), "{}", doc.body);
    assert_eq!(doc.body["components"]["securitySchemes"]["bearerAuth"]["scheme"], "bearer");
}

#[tokio::test]
async fn sessions_belong_to_their_creator() {
    let s = required();
    let alice = bearer(&token("alice", "execute:all read:functions"));
    let bob = bearer(&token("bob", "execute:all read:functions"));
    // context.user_id does not override the token's subject.
    let r = init_as(
        &s,
        &alice,
        "python-mine",
        json!({"context": {"user_id": "bob"}, "script_content": "result = 7"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.body["request_id"].as_str().expect("id").to_owned();
    let exec = |auth: String| {
        let s = &s;
        let id = id.clone();
        async move {
            s.post(&format!("/api/v1/execute/{id}"), &[("Authorization", &auth)], &json!({"params": {}}))
                .await
        }
    };
    assert_eq!(exec(alice.clone()).await.body["result"], 7);
    let denied = exec(bob.clone()).await;
    assert_error(&denied, 403, "FORBIDDEN");
    assert_eq!(denied.body["request_id"], id.as_str());
    let get = s
        .request(reqwest::Method::GET, &format!("/api/v1/sessions/{id}"), &[("Authorization", &bob)], None)
        .await;
    assert_error(&get, 403, "FORBIDDEN");
    let admin = bearer(&token("root", "admin"));
    assert_eq!(exec(admin).await.status, 200);
    let f = s
        .request(reqwest::Method::GET, "/api/v1/functions/python-mine", &[("Authorization", &bob)], None)
        .await;
    assert_eq!(f.body["user_id"], "alice", "{}", f.body);
}

#[tokio::test]
async fn rate_limits_answer_429_with_headers() {
    let s = Server::start(&[
        ("LAMBDA_JWT_SECRET", SECRET),
        ("LAMBDA_AUTH", "optional"),
        ("RATE_LIMIT_EXECUTE", "3"),
        ("RATE_LIMIT_EXECUTE_ANONYMOUS", "2"),
    ]);
    let alice = bearer(&token("alice", "execute:all"));
    let r = init_as(&s, &alice, "nodejs-rl", json!({"script_content": "return 1"})).await;
    let id = r.body["request_id"].as_str().expect("id").to_owned();
    let path = format!("/api/v1/execute/{id}");
    for remaining in ["2", "1", "0"] {
        let ok = s.post(&path, &[("Authorization", &alice)], &json!({})).await;
        assert_eq!(ok.status, 200, "{}", ok.body);
        assert_eq!(ok.headers.get("x-ratelimit-limit").and_then(|v| v.to_str().ok()), Some("3"));
        assert_eq!(ok.headers.get("x-ratelimit-remaining").and_then(|v| v.to_str().ok()), Some(remaining));
        assert!(ok.headers.contains_key("x-ratelimit-reset"));
    }
    let limited = s.post(&path, &[("Authorization", &alice)], &json!({})).await;
    assert_error(&limited, 429, "RATE_LIMITED");
    assert_eq!(limited.body["request_id"], id.as_str(), "the session of the path is known");
    let bad_token = s.post(&path, &[("Authorization", "Bearer not-a-token")], &json!({})).await;
    assert_error(&bad_token, 401, "UNAUTHORIZED");
    assert_eq!(bad_token.body["request_id"], id.as_str());
    let retry: u64 =
        limited.headers.get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok()).expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");

    // Anonymous callers are limited per address, separately and lower.
    let anon = s.initialize("nodejs-anon", json!({"script_content": "return 2"})).await;
    assert_eq!(anon.status, 200, "{}", anon.body);
    let anon_id = anon.body["request_id"].as_str().expect("id").to_owned();
    assert_eq!(s.execute(&anon_id, json!({})).await.status, 200);
    assert_eq!(s.execute(&anon_id, json!({})).await.status, 200);
    assert_error(&s.execute(&anon_id, json!({})).await, 429, "RATE_LIMITED");
    // An anonymous caller cannot run an owned session.
    let s2 = s.post(&path, &[], &json!({})).await;
    assert!(s2.status == 403 || s2.status == 429, "{}", s2.body);
}

#[tokio::test]
async fn cors_preflight_and_origins() {
    let s = Server::start(&[("CORS_ALLOWED_ORIGINS", "https://app.example.com")]);
    let preflight = s
        .request(
            reqwest::Method::OPTIONS,
            "/api/v1/initialize",
            &[
                ("Origin", "https://app.example.com"),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type,language-title,authorization"),
            ],
            None,
        )
        .await;
    assert!(preflight.status == 200 || preflight.status == 204, "{}", preflight.status);
    let h = |name: &str| {
        preflight.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_ascii_lowercase()
    };
    assert_eq!(h("access-control-allow-origin"), "https://app.example.com");
    assert_eq!(h("access-control-max-age"), "86400");
    for method in ["get", "post", "options"] {
        assert!(h("access-control-allow-methods").contains(method), "{}", h("access-control-allow-methods"));
    }
    for header in ["content-type", "authorization", "language-title", "x-request-id", "x-cache-control"] {
        assert!(h("access-control-allow-headers").contains(header), "{}", h("access-control-allow-headers"));
    }
    let other =
        s.request(reqwest::Method::GET, "/health", &[("Origin", "https://evil.example.org")], None).await;
    assert!(other.headers.get("access-control-allow-origin").is_none());
    let same =
        s.request(reqwest::Method::GET, "/health", &[("Origin", "https://app.example.com")], None).await;
    assert_eq!(
        same.headers.get("access-control-allow-origin").and_then(|v| v.to_str().ok()),
        Some("https://app.example.com")
    );
}

#[tokio::test]
async fn bodies_and_headers_are_bounded() {
    let s = Server::start(&[("MAX_BODY_SIZE", "1024"), ("MAX_HEADER_SIZE", "4096")]);
    let id = s.session("nodejs-echo", "return event.params;").await;
    let big = s.execute(&id, json!({"pad": "x".repeat(2000)})).await;
    assert_error(&big, 413, "PAYLOAD_TOO_LARGE");
    let huge_header = "y".repeat(8000);
    let r = s.request(reqwest::Method::GET, "/api/v1/functions", &[("X-Padding", &huge_header)], None).await;
    assert_error(&r, 400, "INVALID_REQUEST");
}

#[test]
fn secrets_never_reach_the_log() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lambda"))
        .arg("serve")
        .env("PORT", "0")
        .env("GRPC_PORT", "0")
        .env("HOST", "127.0.0.1")
        .env("LAMBDA_DATA_DIR", tmp.path())
        .env("LAMBDA_JWT_SECRET", SECRET)
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Drain stderr from the start: a full pipe would stall the server's logging.
    let mut stderr = child.stderr.take().expect("stderr");
    let log_reader = std::thread::spawn(move || {
        let mut log = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut log);
        log
    });
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let base = loop {
        let line = lines.next().expect("listening line").expect("read");
        if let Some(url) = line.strip_prefix("lambda listening on ") {
            break url.to_owned();
        }
    };
    let tok = token("alice", "execute:all");
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let client = reqwest::Client::new();
        let r = client
            .post(format!("{base}/api/v1/initialize"))
            .header("Authorization", bearer(&tok))
            .header("Language-Title", "nodejs-secret")
            .body(json!({"script_content": "return 'hush';"}).to_string())
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
    });
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .expect("term");
    std::thread::spawn(move || for _ in lines {});
    child.wait().expect("wait");
    let log = log_reader.join().expect("log reader");
    assert!(!log.is_empty());
    assert!(!log.contains(SECRET), "the JWT secret leaked into the log");
    assert!(!log.contains(&tok), "a bearer token leaked into the log");
    assert!(!log.contains("return 'hush'"), "script content leaked into the log");
}

#[tokio::test]
async fn rate_limits_hold_across_controllers_sharing_redis() {
    let prefix = lambda_cache::testing::unique_prefix();
    let redis = lambda_cache::testing::redis_url();
    let env = [
        ("LAMBDA_JWT_SECRET", SECRET),
        ("RATE_LIMIT_EXECUTE", "4"),
        ("REDIS_URL", redis.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
    ];
    let (a, b) = (Server::start(&env), Server::start(&env));
    let alice = bearer(&token("alice", "execute:all"));
    let r = init_as(&a, &alice, "nodejs-shared", json!({"script_content": "return 1"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let path = format!("/api/v1/execute/{}", r.body["request_id"].as_str().expect("id"));
    for server in [&a, &b, &a, &b] {
        let ok = server
            .post(&path, &[("Authorization", &alice), ("X-Cache-Control", "no-store")], &json!({}))
            .await;
        assert_eq!(ok.status, 200, "{}", ok.body);
    }
    let limited = b.post(&path, &[("Authorization", &alice)], &json!({})).await;
    assert_error(&limited, 429, "RATE_LIMITED");
    assert_error(&a.post(&path, &[("Authorization", &alice)], &json!({})).await, 429, "RATE_LIMITED");
}
