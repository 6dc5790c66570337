//! The hostile-script suite: scripts that attack the host, the controller and
//! their neighbours, run through the real binary with the default sandbox
//! (`auto`) while a well-behaved neighbour session keeps executing. Each case
//! asserts its specific outcome; none asserts timing. Bombs are bounded (they
//! stop at 2 GiB / 1000 forks) so a failing limit cannot take the machine down.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::{Value, json};
use support::{Server, assert_error};

/// Keeps executing an adder in `language` until stopped; counts the right answers and panics on a wrong one.
fn neighbour(
    s: Arc<Server>,
    title: &'static str,
    script: &'static str,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let task = tokio::spawn(async move {
        let id = s.session(title, script).await;
        let ok = AtomicU64::new(0);
        let mut i = 0u64;
        while !flag.load(Ordering::Relaxed) {
            i += 1;
            let r = s.execute_with(&id, &[("X-Cache-Control", "no-store")], json!({"a": i, "b": 1})).await;
            assert_eq!(
                (r.status, r.body["result"].clone()),
                (200, json!(i + 1)),
                "neighbour {title}: {}",
                r.body
            );
            ok.fetch_add(1, Ordering::Relaxed);
        }
        ok.load(Ordering::Relaxed)
    });
    (stop, task)
}

async fn run(s: &Server, title: &str, script: &str, timeout_ms: u64) -> support::Reply {
    let body = json!({"script_content": script, "context": {"timeout_ms": timeout_ms}});
    let r = s.initialize(title, body).await;
    assert_eq!(r.status, 200, "initialize {title}: {}", r.body);
    let id = r.body["request_id"].as_str().expect("id").to_owned();
    s.execute_with(&id, &[("X-Cache-Control", "no-store")], json!({})).await
}

fn port(s: &Server) -> u16 {
    s.base.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse().ok()).expect("port")
}

async fn assert_controller_alive(s: &Server) {
    let r = s.get("/health").await;
    assert_eq!(r.status, 200, "{}", r.body);
}

fn start() -> Arc<Server> {
    Arc::new(Server::start(&[("SECRET_TOKEN", "hunter2-controller-secret"), ("LAMBDA_WORKERS_MAX", "12")]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_hostile_scripts_fail_alone() {
    let s = start();
    let report = s.get("/health").await.body["components"]["sandbox"].clone();
    assert_eq!(report["mode"], "auto", "{report}");
    let full = report["status"] == "full";
    let (stop, task) = neighbour(s.clone(), "python-neighbour", "result = params['a'] + params['b']");
    let data = s.data_dir.display().to_string();
    let p = port(&s);

    // The environment holds only what the runtime sets.
    let r = run(&s, "python-env", "import os\nresult = dict(os.environ)", 5000).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let env = r.body["result"].as_object().expect("env");
    assert!(env.keys().all(|k| ["PATH", "LANG", "HOME", "LC_CTYPE"].contains(&k.as_str())), "{env:?}");
    assert!(!r.body.to_string().contains("hunter2"));

    // Host files: the data dir, /etc/shadow, the host's processes.
    let script = format!(
        "import os\nresult = {{'data': os.path.exists({data:?}), 'db': os.path.exists({db:?}), 'shadow': os.path.exists('/etc/shadow'), 'procs': [p for p in os.listdir('/proc') if p.isdigit()], 'uid_map': open('/proc/self/uid_map').read().split()}}",
        db = format!("{data}/lambda.db")
    );
    let r = run(&s, "python-files", &script, 5000).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = &r.body["result"];
    assert_eq!((v["data"].clone(), v["db"].clone()), (json!(false), json!(false)), "{v}");
    assert_eq!(v["shadow"], false, "{v}");
    assert_ne!(v["uid_map"][1], "0", "uid 0 inside must not be root outside: {v}");
    if full {
        assert_eq!(v["procs"], json!(["1", "2"]), "only the sandbox's init and the worker: {v}");
    }
    let r = run(&s, "python-shadow", "result = open('/etc/shadow').read()", 5000).await;
    assert_error(&r, 460, "RUNTIME_ERROR");

    // Network: the controller's own port and other loopback services.
    for target in [p, 22, 5432] {
        let script = format!(
            "import socket\nsocket.create_connection(('127.0.0.1', {target}), timeout=2)\nresult = 'connected'"
        );
        let r = run(&s, "python-net", &script, 5000).await;
        let e = assert_error(&r, 460, "RUNTIME_ERROR");
        let m = e["message"].as_str().unwrap_or_default();
        assert!(m.contains("Permission denied") || m.contains("unreachable"), "port {target}: {m}");
    }

    // Writes: only the private /tmp is writable.
    let r = run(&s, "python-write", "open('/tmp/ok', 'w').write('x')\nopen('/usr/evil', 'w')", 5000).await;
    let e = assert_error(&r, 460, "RUNTIME_ERROR");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("Read-only")), "{e}");

    // Fork bomb (bounded at 1000 children that sleep, then exit).
    let bomb = "import os, time\nfor i in range(1000):\n    if os.fork() == 0:\n        time.sleep(20)\n        os._exit(0)\nresult = 'forked 1000'";
    let r = run(&s, "python-forkbomb", bomb, 10000).await;
    assert!(r.status == 462 || r.status == 460, "{}", r.body);
    if r.status == 462 {
        assert_eq!(r.body["error"]["details"]["limit"], "processes", "{}", r.body);
    }

    // Memory bomb (touched pages, 32 MiB steps up to 2 GiB).
    let bomb = "chunks = []\nfor i in range(64):\n    chunks.append(b'x' * (32 << 20))\nresult = len(chunks)";
    let r = run(&s, "python-membomb", bomb, 20000).await;
    let e = assert_error(&r, 462, "RESOURCE_LIMIT");
    assert_eq!(e["details"]["limit"], "memory", "{e}");

    // CPU spin and SIGSTOP of its own group: both end at the deadline.
    let r = run(&s, "python-spin", "while True:\n    pass", 1500).await;
    assert_error(&r, 504, "TIMEOUT");
    let r =
        run(&s, "python-sigstop", "import os, signal\nos.killpg(0, signal.SIGSTOP)\nresult = 1", 1500).await;
    assert_error(&r, 504, "TIMEOUT");

    // Signals at the parent (the sandbox's init), PID 1 and everything visible.
    let r = run(
        &s,
        "python-killparent",
        "import os\nos.kill(os.getppid(), 9)\nos.kill(1, 9)\nresult = 'alive'",
        5000,
    )
    .await;
    assert!(r.status == 200 || r.status == 460, "{}", r.body);
    let r = run(&s, "python-killall", "import os\nos.kill(-1, 9)\nresult = 'alive'", 5000).await;
    assert!(r.status == 200 || r.status == 460, "{}", r.body);
    assert_controller_alive(&s).await;

    // Output and result bounds.
    let r = run(&s, "python-stdout", "for i in range(200000):\n    print('x' * 100)\nresult = 'done'", 20000)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let logs = r.body["logs"].as_array().expect("logs");
    assert_eq!(logs.last(), Some(&json!("[output truncated]")));
    assert!(logs.len() <= 1001, "{}", logs.len());
    let r = run(&s, "python-result", "result = 'x' * (20 << 20)", 20000).await;
    let e = assert_error(&r, 462, "RESOURCE_LIMIT");
    assert_eq!(e["details"]["limit"], "result");

    // A worker that exits fails its request only; the session works again.
    let body = json!({"script_content": "import os\nif params.get('die'):\n    os._exit(3)\nresult = 'ok'"});
    let id = s.initialize("python-exit", body).await.body["request_id"].as_str().expect("id").to_owned();
    let r = s.execute_with(&id, &[("X-Cache-Control", "no-store")], json!({"die": true})).await;
    let e = assert_error(&r, 460, "RUNTIME_ERROR");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("exited")), "{e}");
    let r = s.execute_with(&id, &[("X-Cache-Control", "no-store")], json!({})).await;
    assert_eq!((r.status, r.body["result"].clone()), (200, json!("ok")), "{}", r.body);

    stop.store(true, Ordering::Relaxed);
    let answered = task.await.expect("neighbour");
    assert!(answered > 0);
    assert_controller_alive(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodejs_hostile_scripts_fail_alone() {
    let s = start();
    let (stop, task) = neighbour(s.clone(), "nodejs-neighbour", "return event.params.a + event.params.b;");
    let data = s.data_dir.display().to_string();
    let p = port(&s);

    let r = run(&s, "nodejs-env", "return process.env;", 5000).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let env = r.body["result"].as_object().expect("env");
    assert!(env.keys().all(|k| ["PATH", "LANG", "HOME"].contains(&k.as_str())), "{env:?}");

    let script = format!(
        "const fs = require('fs'); return {{ data: fs.existsSync({data:?}), shadow: fs.existsSync('/etc/shadow'), procs: fs.readdirSync('/proc').filter(p => /^\\d+$/.test(p)).length }};"
    );
    let r = run(&s, "nodejs-files", &script, 5000).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.body["result"]["data"].clone(), r.body["result"]["shadow"].clone()),
        (json!(false), json!(false))
    );

    for target in [p, 22] {
        let script = format!(
            "const net = require('net'); return await new Promise((ok, fail) => {{ const c = net.connect({target}, '127.0.0.1', () => ok('connected')); c.on('error', fail); }});"
        );
        let r = run(&s, "nodejs-net", &script, 5000).await;
        let e = assert_error(&r, 460, "RUNTIME_ERROR");
        let m = e["message"].as_str().unwrap_or_default();
        assert!(m.contains("EACCES") || m.contains("ENETUNREACH"), "port {target}: {m}");
    }

    let r = run(
        &s,
        "nodejs-write",
        "require('fs').writeFileSync('/tmp/ok', 'x'); require('fs').writeFileSync('/usr/evil', 'x');",
        5000,
    )
    .await;
    let e = assert_error(&r, 460, "RUNTIME_ERROR");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("EROFS")), "{e}");

    // Process bomb: spawn sleeping children until refused (bounded at 300).
    let bomb = "const cp = require('child_process'); for (let i = 0; i < 300; i++) { cp.spawn('/bin/sleep', ['20']); } await new Promise(r => setTimeout(r, 300)); return 'spawned';";
    let r = run(&s, "nodejs-forkbomb", bomb, 10000).await;
    assert!(r.status == 462 || r.status == 460, "{}", r.body);

    // Buffer bomb: outside the V8 heap, only the cgroup stops it.
    let bomb =
        "const a = []; for (let i = 0; i < 64; i++) a.push(Buffer.alloc(32 << 20, 1)); return a.length;";
    let r = run(&s, "nodejs-membomb", bomb, 20000).await;
    let e = assert_error(&r, 462, "RESOURCE_LIMIT");
    assert_eq!(e["details"]["limit"], "memory", "{e}");

    let r = run(&s, "nodejs-spin", "for (;;) {}", 1500).await;
    assert_error(&r, 504, "TIMEOUT");
    let r = run(&s, "nodejs-sigstop", "process.kill(0, 'SIGSTOP'); return 1;", 1500).await;
    assert_error(&r, 504, "TIMEOUT");

    let r = run(
        &s,
        "nodejs-killparent",
        "process.kill(process.ppid, 'SIGKILL'); process.kill(1, 'SIGKILL'); return 'alive';",
        5000,
    )
    .await;
    assert!(r.status == 200 || r.status == 460, "{}", r.body);
    assert_controller_alive(&s).await;

    let r = run(
        &s,
        "nodejs-stdout",
        "for (let i = 0; i < 200000; i++) console.log('x'.repeat(100)); return 'done';",
        20000,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["logs"].as_array().and_then(|l| l.last()), Some(&json!("[output truncated]")));
    let r = run(&s, "nodejs-result", "return 'x'.repeat(20 << 20);", 20000).await;
    let e = assert_error(&r, 462, "RESOURCE_LIMIT");
    assert_eq!(e["details"]["limit"], "result");

    let r = run(&s, "nodejs-exit", "process.exit(3);", 5000).await;
    assert_error(&r, 460, "RUNTIME_ERROR");

    stop.store(true, Ordering::Relaxed);
    assert!(task.await.expect("neighbour") > 0);
    assert_controller_alive(&s).await;
}

#[tokio::test]
async fn executions_report_cpu_and_peak_memory() {
    let s = Server::start(&[]);
    let id = s
        .session("python-burn", "x = sum(range(2_000_000))\nblob = b'y' * (8 << 20)\nresult = len(blob)")
        .await;
    let r = s.execute(&id, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let m: &Value = &r.body["metrics"];
    let report = s.get("/health").await.body["components"]["sandbox"].clone();
    if report["cgroup_controllers"]["memory"] == true {
        assert!(m["peak_memory_bytes"].as_u64().is_some_and(|b| b >= 8 << 20), "{m}");
        assert!(m["cpu_us"].as_u64().is_some_and(|us| us > 0), "{m}");
    }
}

#[test]
fn an_unknown_required_mechanism_is_a_configuration_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lambda"))
        .arg("serve")
        .env_clear()
        .env("PORT", "0")
        .env("GRPC_PORT", "0")
        .env("LAMBDA_SANDBOX_REQUIRE", "selinux")
        .output()
        .expect("run lambda");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("LAMBDA_SANDBOX_REQUIRE") && stderr.contains("selinux"), "{stderr}");
}

/// The wrapper that runs the binary as `nobody` (user namespaces only, no cgroups), when we are root.
fn as_nobody() -> Option<[&'static str; 5]> {
    let root = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")));
    let setpriv = std::path::Path::new("/usr/bin/setpriv").exists();
    (root && setpriv).then_some([
        "/usr/bin/setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
    ])
}

fn nobody_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    tmp
}

#[test]
fn non_root_required_mode_names_the_missing_mechanisms() {
    let Some(wrapper) = as_nobody() else { return };
    let tmp = nobody_dir();
    let out = std::process::Command::new(wrapper[0])
        .args(&wrapper[1..])
        .arg(env!("CARGO_BIN_EXE_lambda"))
        .arg("serve")
        .env_clear()
        .env("PORT", "0")
        .env("GRPC_PORT", "0")
        .env("LAMBDA_DATA_DIR", tmp.path().join("data"))
        .env("LAMBDA_SANDBOX", "required")
        .output()
        .expect("run lambda");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("required but not available") && stderr.contains("memory"), "{stderr}");
}

#[tokio::test]
async fn non_root_auto_mode_runs_sandboxed_with_user_namespaces_only() {
    let Some(wrapper) = as_nobody() else { return };
    let tmp = nobody_dir();
    let s = Server::start_wrapped(&wrapper, &tmp.path().join("data"), &[("LAMBDA_NODE", "/usr/bin/node")]);
    let report = s.get("/health").await.body["components"]["sandbox"].clone();
    assert_eq!(report["namespaces"]["user"], true, "{report}");
    assert_eq!(report["running_as_root"], false, "{report}");
    let id = s.session("nodejs-nobody", "return { pids: require('fs').readdirSync('/proc').filter(p => /^\\d+$/.test(p)).length, sum: event.params.a + 1 };").await;
    let r = s.execute(&id, json!({"a": 1})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["result"]["sum"], 2);
    assert_eq!(r.body["result"]["pids"], 2, "its own PID namespace: {}", r.body);
}
