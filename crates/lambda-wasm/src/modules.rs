//! Loaded modules by script hash: in memory (LRU-bounded) as ready-to-run
//! `InstancePre`s, and on disk as precompiled native code (`.cwasm`) so a
//! restart loads in a fraction of a millisecond instead of recompiling.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lambda_core::ScriptHash;
use sha2::{Digest, Sha256};
use wasmtime::{Engine, InstancePre, Module};

use crate::engine::Ctx;

/// A module ready to instantiate.
pub(crate) struct Loaded {
    pub pre: InstancePre<Ctx>,
}

pub(crate) struct ModuleCache {
    memory: moka::sync::Cache<ScriptHash, Arc<Loaded>>,
    dir: PathBuf,
}

impl ModuleCache {
    pub(crate) fn new(dir: PathBuf, capacity: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { memory: moka::sync::Cache::new(capacity), dir })
    }

    pub(crate) fn get(&self, hash: &ScriptHash) -> Option<Arc<Loaded>> {
        self.memory.get(hash)
    }

    pub(crate) fn insert(&self, hash: ScriptHash, loaded: Arc<Loaded>) {
        self.memory.insert(hash, loaded);
    }

    fn paths(&self, hash: &ScriptHash) -> (PathBuf, PathBuf) {
        let hex = hash.to_hex();
        (self.dir.join(format!("{hex}.cwasm")), self.dir.join(format!("{hex}.cwasm.sha256")))
    }

    /// The precompiled module of `hash`, if one was written by this engine
    /// configuration and its checksum matches. Anything else is a miss.
    pub(crate) fn load_native(&self, engine: &Engine, hash: &ScriptHash) -> Option<Module> {
        let (path, sum_path) = self.paths(hash);
        let expected = std::fs::read_to_string(&sum_path).ok()?;
        let bytes = std::fs::read(&path).ok()?;
        if hex::encode(Sha256::digest(&bytes)) != expected.trim() {
            tracing::warn!(path = %path.display(), "precompiled module fails its checksum; recompiling");
            return None;
        }
        deserialize(engine, &bytes)
            .map_err(|e| tracing::warn!(path = %path.display(), error = %e, "precompiled module rejected"))
            .ok()
    }

    /// Writes the native code of a module for the next start (best effort).
    pub(crate) fn save_native(&self, hash: &ScriptHash, native: &[u8]) {
        let (path, sum_path) = self.paths(hash);
        let sum = hex::encode(Sha256::digest(native));
        let written = write_atomic(&path, native).and_then(|()| write_atomic(&sum_path, sum.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "could not cache a precompiled module");
        }
    }
}

/// The one place this crate uses `unsafe`.
#[allow(unsafe_code)]
pub(crate) fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Module> {
    // SAFETY: `Module::deserialize` trusts its input to be native code that
    // wasmtime produced. Two sources reach here. (1) `precompile_module`'s
    // bytes, from this process or from the compiler process (this program's
    // own executable, `wasm-compile`, through a pipe), which only compiles
    // with cranelift and never runs the module. (2) Files written by `save_native` with those
    // same bytes, into a directory of our data dir, whose sha256 was checked
    // against the digest written beside them, so a truncated or altered file
    // is refused before it gets here. Nothing else writes to
    // `<data_dir>/wasm-cache`. wasmtime itself refuses bytes from another
    // version or an incompatible engine configuration.
    unsafe { Module::deserialize(engine, bytes) }
}

/// Writes through a temporary file and a rename, so a reader (another
/// server on the same directory) never sees half a file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}
