//! The served OpenAPI document, checked by a third-party tester: schemathesis
//! (from PyPI) fuzzes every operation of a running server with auth on and
//! fails on any server error or any response that does not match the document.
//! `scripts/test` installs it and sets `SCHEMATHESIS`.

mod support;

use std::process::Command;

use support::Server;

const SECRET: &str = "conformance-secret-of-at-least-32-bytes";

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_or_schema_mismatch() {
    let schemathesis = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".to_owned());
    let version = Command::new(&schemathesis).arg("--version").output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "schemathesis is not installed: run the tests with scripts/test (it installs it), or set SCHEMATHESIS"
    );
    let s = Server::start(&[
        ("LAMBDA_JWT_SECRET", SECRET),
        ("LAMBDA_AUTH", "required"),
        ("RATE_LIMIT_EXECUTE", "0"),
        ("RATE_LIMIT_FUNCTIONS", "0"),
        ("LAMBDA_WORKERS_MAX", "8"),
    ]);
    let token = Command::new(env!("CARGO_BIN_EXE_lambda"))
        .args(["token", "--sub", "conformance", "--scope", "admin", "--ttl", "1h"])
        .env("LAMBDA_JWT_SECRET", SECRET)
        .output()
        .expect("lambda token");
    let token = String::from_utf8(token.stdout).expect("utf8").trim().to_owned();
    let url = format!("{}/api/v1/openapi.json", s.base);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&schemathesis)
            .args(["run", &url, "--header", &format!("Authorization: Bearer {token}")])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
            ])
            .args(["--max-examples", "40", "--seed", "1", "--no-color"])
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .output()
    })
    .await
    .expect("join")
    .expect("run schemathesis");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "schemathesis failed:\n{report}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(report.contains("passed"), "{report}");
}
