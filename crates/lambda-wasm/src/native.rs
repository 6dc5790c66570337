//! Compiling wasm to native code in a process of its own (`lambda
//! wasm-compile`): cranelift's working memory and code pages stay out of the
//! controller (a 1.4 MB Rust module left ≈40 MB in its RSS), and a module
//! that makes the compiler misbehave ends that process, not the controller.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use wasmtime::Engine;

use crate::engine::engine_config;

/// The subcommand of the compiler executable (`lambda`'s `WasmCompile`).
const SUBCOMMAND: &str = "wasm-compile";

/// Why an out-of-process compile gave no native code.
#[derive(Debug)]
pub(crate) enum NativeFailure {
    /// wasmtime refused the module: its message.
    Invalid(String),
    /// The module took longer than this to compile (the process is killed).
    TimedOut(Duration),
    /// The compiler needed more data memory than its bound, bytes.
    OutOfMemory(u64),
    /// The compiler could not run or was killed.
    Failed(String),
}

/// Why the compiler process wrote no native code.
#[derive(Debug)]
pub enum CompileNativeError {
    /// The engine could not be built: ours, not the module's.
    Engine(String),
    /// wasmtime refused the module: its message.
    Module(String),
}

/// The compiler process's side: `wasm` in, the engine's native code out, for
/// an engine configured like the runtime's. `before_compile` runs once the
/// engine stands (its pools mapped), right before the compile: where the
/// process bounds what the compile itself may allocate.
pub fn compile_native(
    memory_limit: usize,
    max_instances: u32,
    wasm: &[u8],
    before_compile: impl FnOnce() -> Result<(), String>,
) -> Result<Vec<u8>, CompileNativeError> {
    let engine = Engine::new(&engine_config(memory_limit, max_instances))
        .map_err(|e| CompileNativeError::Engine(format!("wasm engine: {e:#}")))?;
    before_compile().map_err(CompileNativeError::Engine)?;
    engine.precompile_module(wasm).map_err(|e| CompileNativeError::Module(format!("{e:#}")))
}

/// The controller's side: runs `<compiler> wasm-compile` with `wasm` on its
/// stdin and returns what it wrote on stdout. Exit status 1 is wasmtime's
/// refusal (its message on stderr); anything else is a failure of ours.
pub(crate) async fn compile_in_child(
    compiler: &Path,
    memory_limit: usize,
    max_instances: u32,
    compile_memory: u64,
    wasm: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, NativeFailure> {
    let mut child = Command::new(compiler)
        .arg(SUBCOMMAND)
        .arg(memory_limit.to_string())
        .arg(max_instances.to_string())
        .arg(compile_memory.to_string())
        // wasmtime's message without a backtrace of the compiler's threads.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| NativeFailure::Failed(format!("cannot start {}: {e}", compiler.display())))?;
    let stdin = child.stdin.take();
    let feed = async move {
        if let Some(mut stdin) = stdin {
            // A compiler that exits early closes the pipe; its status says why.
            let _ = stdin.write_all(&wasm).await;
        }
    };
    let run = async { tokio::join!(feed, child.wait_with_output()).1 };
    let output = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| NativeFailure::TimedOut(timeout))?
        .map_err(|e| NativeFailure::Failed(format!("waiting for the compiler: {e}")))?;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    match output.status.code() {
        Some(0) => Ok(output.stdout),
        Some(1) => Err(NativeFailure::Invalid(stderr)),
        _ if crate::ran_out_of_memory(&stderr) => Err(NativeFailure::OutOfMemory(compile_memory)),
        _ => Err(NativeFailure::Failed(format!("the compiler process failed ({}): {stderr}", output.status))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_a_module_and_refuses_garbage() {
        // wasmtime's `wat` feature reads the text format too.
        let wat = b"(module (func (export \"f\") (result i32) i32.const 7))";
        let native = compile_native(1 << 20, 2, wat, || Ok(())).expect("compiles");
        assert!(!native.is_empty());
        assert!(matches!(
            compile_native(1 << 20, 2, b"not wasm", || Ok(())),
            Err(CompileNativeError::Module(_))
        ));
    }

    #[tokio::test]
    async fn a_compiler_that_cannot_start_is_a_failure() {
        let result = compile_in_child(
            Path::new("/nonexistent/lambda"),
            1 << 20,
            2,
            1 << 30,
            vec![0],
            Duration::from_secs(5),
        )
        .await;
        assert!(matches!(result, Err(NativeFailure::Failed(_))));
    }

    #[tokio::test]
    async fn a_compile_past_its_time_is_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let compiler = dir.path().join("slow-compiler");
        std::fs::write(&compiler, "#!/bin/sh\nexec sleep 30\n").expect("write");
        std::fs::set_permissions(&compiler, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let started = std::time::Instant::now();
        let result =
            compile_in_child(&compiler, 1 << 20, 2, 1 << 30, vec![0], Duration::from_millis(200)).await;
        assert!(
            matches!(result, Err(NativeFailure::TimedOut(t)) if t == Duration::from_millis(200)),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "the compile was not cut short");
    }
}
