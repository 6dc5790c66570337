//! Measures what the sandbox adds to a spawn: median wall time of
//! spawn → exit of `<interpreter> <args>` plain and sandboxed.
//! `cargo run --release -p lambda-sandbox --example spawn_cost -- /usr/bin/node -e 0`

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lambda_sandbox::{FsView, Sandbox, SandboxConfig};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let program = PathBuf::from(args.next().unwrap_or_else(|| "/usr/bin/node".into()));
    let rest: Vec<String> = args.collect();
    let rounds = 30;
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("sandbox");
    let view = sandbox.view(&FsView::for_program(&program, 1 << 20)).expect("view");
    let mut plain = Vec::new();
    let mut boxed = Vec::new();
    let mut setup = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let ok =
            Command::new(&program).args(&rest).env_clear().stdout(Stdio::null()).status().expect("plain");
        plain.push(t.elapsed());
        assert!(ok.success());
        let t = Instant::now();
        let (mut cmd, jail) = sandbox.command("bench", &view, &program).expect("command");
        setup.push(t.elapsed());
        let ok = cmd.args(&rest).stdout(Stdio::null()).status().expect("sandboxed");
        boxed.push(t.elapsed());
        assert!(ok.success(), "sandboxed run failed: {ok}");
        drop(jail);
    }
    println!(
        "{}: plain {:?}, sandboxed {:?} (of which cgroup create {:?}), {rounds} rounds, medians",
        program.display(),
        median(plain),
        median(boxed),
        median(setup)
    );
}
