//! One compile of a user's Rust source to a `wasm32-wasip1` module, in a
//! short-lived copy of the template that shares the prebuilt target dir.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lambda_core::{ErrorCode, LambdaError, ScriptHash};
use regex::Regex;
use serde_json::Value;

use super::diagnostics::{self, Diagnostic};
use super::options::{CompileOptions, Profile, TARGET};
use super::template::{GLUE, MANIFEST, Template, tail};
use super::toolchain::{RunFailure, Toolchain, run};

/// Why a compile produced no module.
#[derive(Debug)]
pub(crate) enum CompileFailure {
    /// rustc rejected the code: a `COMPILE_ERROR` that is stored with the
    /// artifact, so the same script is not compiled again.
    Rejected(LambdaError),
    /// A bound was hit or the toolchain failed: answered, not stored.
    Transient(LambdaError),
}

static MAIN_FN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\bfn\s+main\s*\(").expect("static regex"));
/// Constructs that make rustc read files of the compiling host.
static HOST_FILE_READ: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(include|include_str|include_bytes)\s*!|#\s*!?\s*\[\s*path\b").expect("static regex")
});

/// A whole program (`fn main` reading stdin) rather than a `handle` function.
pub(crate) fn is_program(source: &str) -> bool {
    MAIN_FN.is_match(source)
}

/// The file rustc sees the user's code as (its diagnostics and panics name it).
pub(crate) fn user_file(source: &str) -> &'static str {
    if is_program(source) { "src/main.rs" } else { "src/user.rs" }
}

/// Refuses `include!`-like macros and `#[path]`: they read host files at
/// compile time, which a sandboxed execution could then print.
fn check_host_reads(source: &str) -> Result<(), LambdaError> {
    let Some(m) = HOST_FILE_READ.find(source) else { return Ok(()) };
    let before = &source[..m.start()];
    let line = before.matches('\n').count() as u64 + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64 + 1;
    let message = format!(
        "`{}` is not allowed: include!, include_str!, include_bytes! and #[path] read files of the host",
        m.as_str()
    );
    Err(LambdaError::new(ErrorCode::CompileError, message.clone())
        .with("message", message)
        .with("line", line)
        .with("column", column))
}

/// Paths of this build; removed again when it is done.
struct BuildDir<'a> {
    dir: std::path::PathBuf,
    bin: String,
    target_dir: std::path::PathBuf,
    profile: Profile,
    _template: &'a Template,
}

impl Drop for BuildDir<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let out = self.target_dir.join(TARGET).join(self.profile.as_str());
        for ext in ["wasm", "d"] {
            let _ = std::fs::remove_file(out.join(format!("{}.{ext}", self.bin)));
        }
        if let Ok(entries) = std::fs::read_dir(out.join("deps")) {
            let prefix = format!("{}-", self.bin);
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
}

pub(crate) struct Compile<'a> {
    pub template: &'a Template,
    pub toolchain: &'a Toolchain,
    pub timeout: Duration,
    pub jobs: usize,
}

impl Compile<'_> {
    /// Compiles `source` to wasm bytes.
    pub(crate) async fn run(
        &self,
        hash: &ScriptHash,
        source: &str,
        options: &CompileOptions,
    ) -> Result<Vec<u8>, CompileFailure> {
        check_host_reads(source).map_err(CompileFailure::Rejected)?;
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let short = &hash.to_hex()[..16];
        let build = BuildDir {
            dir: self.template.builds_dir().join(format!(
                "{short}-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            )),
            bin: format!("u{short}"),
            target_dir: self.template.target_dir(),
            profile: options.profile,
            _template: self.template,
        };
        let manifest = MANIFEST
            .replace("[[bin]]\nname = \"lambda-user\"", &format!("[[bin]]\nname = \"{}\"", build.bin));
        let sources: Vec<(&str, &str)> = if is_program(source) {
            vec![("src/main.rs", source)]
        } else {
            vec![("src/main.rs", GLUE), ("src/user.rs", source)]
        };
        Template::write_crate(&build.dir, &manifest, &sources).map_err(|e| transient_unavailable(&e))?;

        let jobs = self.jobs.to_string();
        let features = options.features.join(",");
        let mut args =
            vec!["build", "--offline", "--locked", "--target", TARGET, "-j", &jobs, "--message-format=json"];
        if options.profile == Profile::Release {
            args.push("--release");
        }
        if !features.is_empty() {
            args.extend(["--features", &features]);
        }
        let cmd = self.toolchain.cargo(&build.dir, &build.target_dir, &args);
        let output = match run(cmd, self.timeout).await {
            Ok(output) => output,
            Err(RunFailure::TimedOut) => {
                return Err(CompileFailure::Transient(crate::compile_time_exceeded(
                    "compiling",
                    self.timeout,
                )));
            }
            Err(RunFailure::Spawn(e)) => {
                return Err(transient_unavailable(&format!("cannot run cargo: {e}")));
            }
        };
        let home = std::env::var("HOME").unwrap_or_default();
        let dir = build.dir.to_string_lossy().into_owned();
        let hide = [dir.as_str(), home.as_str()];
        let user = user_file(source);
        let mut diagnostics = Vec::new();
        let mut wasm = None;
        for line in output.stdout.split(|&b| b == b'\n') {
            let Ok(message) = serde_json::from_slice::<Value>(line) else { continue };
            match message["reason"].as_str() {
                Some("compiler-message") => {
                    diagnostics.extend(Diagnostic::from_cargo(&message["message"], user, &hide));
                }
                Some("compiler-artifact") if message["target"]["name"] == build.bin.as_str() => {
                    wasm = message["filenames"]
                        .as_array()
                        .and_then(|f| f.iter().filter_map(Value::as_str).find(|f| f.ends_with(".wasm")))
                        .map(str::to_owned);
                }
                _ => {}
            }
        }
        if output.status.success() {
            let path = wasm.ok_or_else(|| transient_unavailable("cargo reported no .wasm file"))?;
            return std::fs::read(&path).map_err(|e| transient_unavailable(&format!("{path}: {e}")));
        }
        if diagnostics.iter().any(|d| d.level == "error") {
            let (message, details) = diagnostics::details(&diagnostics);
            let mut error = LambdaError::new(ErrorCode::CompileError, format!("rustc: {message}"));
            error.details = details;
            if !is_program(source) && error.details.get("line").is_none() {
                error.message.push_str(
                    " (a handler is `pub fn handle(params: serde_json::Value) -> serde_json::Value` \
                     or returns `Result<serde_json::Value, String>`)",
                );
            }
            return Err(CompileFailure::Rejected(error));
        }
        let stderr = tail(&output.stderr);
        if crate::ran_out_of_memory(&stderr) {
            return Err(CompileFailure::Transient(
                LambdaError::new(ErrorCode::CompileError, "compiling ran out of its memory bound")
                    .with("limit", "compile_memory"),
            ));
        }
        Err(transient_unavailable(&format!("the Rust toolchain failed: {stderr}")))
    }
}

fn transient_unavailable(message: &str) -> CompileFailure {
    CompileFailure::Transient(LambdaError::unavailable(message.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_told_apart_by_fn_main() {
        assert!(is_program("use std::io::Read;\nfn main() {}"));
        assert!(!is_program("pub fn handle(p: Value) -> Value { p }"));
        assert_eq!(user_file("pub fn handle() {}"), "src/user.rs");
    }

    #[test]
    fn host_file_reads_are_refused_with_their_position() {
        let e = check_host_reads("fn a() {}\n  const S: &str = include_str!(\"/etc/passwd\");")
            .expect_err("refused");
        assert_eq!(e.code, ErrorCode::CompileError);
        assert_eq!((e.details["line"].clone(), e.details["column"].clone()), (2.into(), 19.into()));
        assert!(check_host_reads("#[path = \"/etc\"] mod x;").is_err());
        assert!(check_host_reads("let included = 1; // include it").is_ok());
    }
}
