//! Spawns real sandboxed processes (the interpreters the workers use) and
//! checks what they can see and do from inside.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use lambda_sandbox::{FsView, Mode, Sandbox, SandboxConfig};

fn python() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 on PATH");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig { mode: Mode::Auto, ..SandboxConfig::default() }).expect("sandbox")
}

/// Runs `code` in a sandboxed python and returns (exit code, stdout, stderr).
fn run_python(sandbox: &Sandbox, code: &str) -> (i32, String, String) {
    let py = python();
    let view = sandbox.view(&FsView::for_program(&py, 1 << 20)).expect("view");
    let (mut cmd, jail) = sandbox.command("test", &view, &py).expect("command");
    cmd.args(["-I", "-S", "-c", code]).env("SECRET_OF_TEST", "x");
    let out = cmd.stdin(Stdio::null()).output().expect("spawn");
    drop(jail);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn python_runs_inside_and_sees_only_its_view() {
    let s = sandbox();
    eprintln!("{}", s.report());
    let code = r#"
import os, socket, json
out = {}
out["pid"] = os.getpid()
out["uid"] = os.getuid()
out["uid_map"] = open("/proc/self/uid_map").read().split()
out["root"] = sorted(os.listdir("/"))
out["procs"] = sorted(p for p in os.listdir("/proc") if p.isdigit())
out["shadow"] = os.path.exists("/etc/shadow")
out["cwd"] = os.getcwd()
out["env"] = dict(os.environ)
out["cap"] = [l for l in open("/proc/self/status") if l.startswith(("CapEff", "CapBnd", "NoNewPrivs", "Seccomp"))]
try:
    socket.create_connection(("127.0.0.1", 22), timeout=1); out["net"] = "connected"
except OSError as e:
    out["net"] = str(e)
try:
    open("/usr/evil", "w"); out["write_usr"] = "yes"
except OSError as e:
    out["write_usr"] = str(e)
open("/tmp/ok", "w").write("fine")
out["hostname"] = socket.gethostname()
print(json.dumps(out))
"#;
    let (code, stdout, stderr) = run_python(&s, code);
    assert_eq!(code, 0, "stdout {stdout} stderr {stderr}");
    println!("{stdout}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("json");
    if s.has_fs_view() {
        assert_eq!(v["pid"], 2, "{v}");
        assert_eq!(v["shadow"], false);
        assert_eq!(v["cwd"], "/tmp");
        assert!(v["write_usr"].as_str().is_some_and(|e| e.contains("Read-only")), "{v}");
    }
    // Only what the caller set (python adds LC_CTYPE itself, PEP 538).
    let env = v["env"].as_object().expect("env");
    assert!(env.keys().all(|k| k == "SECRET_OF_TEST" || k == "LC_CTYPE"), "{env:?}");
    assert_ne!(v["uid_map"][1], "0", "uid 0 inside must not be root outside: {v}");
    // Landlock refuses the connect (EACCES); without it the empty network namespace does (ENETUNREACH).
    assert!(
        v["net"].as_str().is_some_and(|e| e.contains("unreachable") || e.contains("Permission denied")),
        "{v}"
    );
    if s.has_fs_view() {
        assert_eq!(v["procs"], serde_json::json!(["1", "2"]), "{v}");
        assert!(v["cap"][0].as_str().is_some_and(|c| c.ends_with("0000000000000000\n")), "{v}");
    }
}
