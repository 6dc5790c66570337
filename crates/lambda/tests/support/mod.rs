//! Starts the real `lambda` binary on a free port with its own data dir.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// Shared by all test servers (and test binaries) of this target dir, so the
/// Rust template's dependencies are built once per checkout, not per test.
pub fn rust_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("lambda-rust-cache")
}

pub struct Server {
    child: Option<Child>,
    pub base: String,
    /// `http://<addr>` of the gRPC listener.
    #[allow(dead_code, reason = "only the gRPC tests use it")]
    pub grpc: String,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Server {
    pub fn start(env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let mut server = Self::start_in(&data_dir, env);
        server._tmp = Some(tmp);
        server
    }

    /// Starts on an existing data dir (restart tests keep the TempDir themselves).
    pub fn start_in(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        Self::start_wrapped(&[], data_dir, env)
    }

    /// Starts the binary through `wrapper` (e.g. `setpriv --reuid=…`, to run it
    /// as another user); an empty wrapper is [`Server::start_in`].
    pub fn start_wrapped(wrapper: &[&str], data_dir: &Path, env: &[(&str, &str)]) -> Server {
        Self::launch(wrapper, None, data_dir, env)
    }

    /// Starts in the working directory `cwd`, where a relative `data_dir`
    /// is what a user's `LAMBDA_DATA_DIR=data` (or the default `./data`) is.
    pub fn start_from(cwd: &Path, data_dir: &Path, env: &[(&str, &str)]) -> Server {
        Self::launch(&[], Some(cwd), data_dir, env)
    }

    fn launch(wrapper: &[&str], cwd: Option<&Path>, data_dir: &Path, env: &[(&str, &str)]) -> Server {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(env!("CARGO_BIN_EXE_lambda"));
                cmd
            }
            None => Command::new(env!("CARGO_BIN_EXE_lambda")),
        };
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("GRPC_PORT", "0")
            .env("LAMBDA_DATA_DIR", data_dir)
            .env("LAMBDA_WORKERS_GENERIC", "1")
            // One Rust template build (dependencies) for every test server.
            .env("LAMBDA_RUST_CACHE_DIR", rust_cache_dir())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        let mut child = cmd.spawn().expect("spawn lambda");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut grpc = String::new();
        let base = loop {
            let line = lines.next().expect("lambda exited before listening").expect("read stdout");
            if let Some(addr) = line.strip_prefix("lambda gRPC listening on ") {
                grpc = format!("http://{}", addr.trim());
            }
            if let Some(url) = line.strip_prefix("lambda listening on ") {
                break url.trim().to_owned();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
        let data_dir = cwd.map_or_else(|| data_dir.to_owned(), |cwd| cwd.join(data_dir));
        Server { child: Some(child), base, grpc, client, data_dir, _tmp: None }
    }

    /// SIGTERM, then wait for an orderly exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        child.wait().expect("wait")
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Reply {
        let mut req = self.client.request(method, format!("{}{}", self.base, path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply { status, body, headers }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(reqwest::Method::GET, path, &[], None).await
    }

    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
        self.request(reqwest::Method::POST, path, headers, Some(body.to_string())).await
    }

    pub async fn initialize(&self, title: &str, body: Value) -> Reply {
        self.post("/api/v1/initialize", &[("Language-Title", title)], &body).await
    }

    /// Initializes and asserts success; returns the session id.
    pub async fn session(&self, title: &str, script: &str) -> String {
        let r = self.initialize(title, serde_json::json!({ "script_content": script })).await;
        assert_eq!(r.status, 200, "initialize {title}: {}", r.body);
        r.body["request_id"].as_str().expect("request_id").to_owned()
    }

    pub async fn execute(&self, id: &str, params: Value) -> Reply {
        self.execute_with(id, &[], params).await
    }

    pub async fn execute_with(&self, id: &str, headers: &[(&str, &str)], params: Value) -> Reply {
        self.post(&format!("/api/v1/execute/{id}"), headers, &serde_json::json!({ "params": params })).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Asserts the contract's error body and returns its `error` object.
pub fn assert_error(reply: &Reply, status: u16, code: &str) -> Value {
    assert_eq!(reply.status, status, "status of {}", reply.body);
    assert_eq!(reply.body["error"]["code"], code, "code of {}", reply.body);
    assert!(
        reply.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message of {}",
        reply.body
    );
    reply.body["error"].clone()
}
