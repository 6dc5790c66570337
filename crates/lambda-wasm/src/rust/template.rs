//! The template crate (runtimes/rust/template) a user's code is compiled in,
//! laid out under the Rust cache dir, and the one-time build of its
//! dependencies for both profiles.
//!
//! Layout: `<cache>/template-<digest>/` with `template/` (the crate),
//! `target/` (the shared `CARGO_TARGET_DIR` holding the prebuilt
//! dependencies), `builds/` (one short-lived crate per compile), `artifacts/`
//! (compiled `.wasm` by script hash) and `prebuilt-<profile>` markers. The
//! digest covers the template's files, so changing the template starts a
//! fresh directory. Several servers may share it: cargo locks the target dir.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::options::{Profile, TARGET};
use super::toolchain::{Toolchain, run};
use crate::modules::write_atomic;

pub(crate) const MANIFEST: &str = include_str!("../../../../runtimes/rust/template/Cargo.toml");
pub(crate) const LOCK: &str = include_str!("../../../../runtimes/rust/template/Cargo.lock");
pub(crate) const GLUE: &str = include_str!("../../../../runtimes/rust/template/src/main.rs");
const SAMPLE: &str = include_str!("../../../../runtimes/rust/template/src/user.rs");

/// A first build downloads and compiles the dependencies: allow it time.
const PREBUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone)]
pub(crate) struct Template {
    root: PathBuf,
}

impl Template {
    pub(crate) fn new(cache_dir: &Path) -> Self {
        let mut h = Sha256::new();
        for text in [MANIFEST, LOCK, GLUE, SAMPLE] {
            h.update((text.len() as u64).to_le_bytes());
            h.update(text.as_bytes());
        }
        let digest = hex::encode(h.finalize());
        Self { root: cache_dir.join(format!("template-{}", &digest[..16])) }
    }

    pub(crate) fn crate_dir(&self) -> PathBuf {
        self.root.join("template")
    }
    pub(crate) fn target_dir(&self) -> PathBuf {
        self.root.join("target")
    }
    pub(crate) fn builds_dir(&self) -> PathBuf {
        self.root.join("builds")
    }
    pub(crate) fn artifacts_dir(&self) -> PathBuf {
        self.root.join("artifacts")
    }

    /// Writes a crate (manifest, lock, sources) into `dir`, leaving files
    /// that already hold the same text untouched.
    pub(crate) fn write_crate(dir: &Path, manifest: &str, sources: &[(&str, &str)]) -> Result<(), String> {
        std::fs::create_dir_all(dir.join("src")).map_err(|e| format!("{}: {e}", dir.display()))?;
        let files =
            [("Cargo.toml", manifest), ("Cargo.lock", LOCK)].into_iter().chain(sources.iter().copied());
        for (name, text) in files {
            let path = dir.join(name);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
                write_atomic(&path, text.as_bytes())?;
            }
        }
        Ok(())
    }

    /// Builds the template's dependencies for both profiles, once per cache
    /// dir (markers record success). Tries offline first; fetches the crates
    /// from crates.io only when they are not in cargo's cache yet.
    pub(crate) async fn prebuild(&self, toolchain: &Toolchain, jobs: usize) -> Result<(), String> {
        let dir = self.crate_dir();
        Self::write_crate(&dir, MANIFEST, &[("src/main.rs", GLUE), ("src/user.rs", SAMPLE)])?;
        for dir in [self.builds_dir(), self.artifacts_dir()] {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        for profile in Profile::ALL {
            let marker = self.root.join(format!("prebuilt-{}", profile.as_str()));
            if marker.exists() {
                continue;
            }
            let started = std::time::Instant::now();
            tracing::info!(profile = profile.as_str(), dir = %self.root.display(), "building the Rust template's dependencies (once)");
            if self.build(toolchain, profile, jobs, true).await.is_err() {
                let fetch =
                    run(toolchain.cargo(&dir, &self.target_dir(), &["fetch", "--locked"]), PREBUILD_TIMEOUT)
                        .await;
                if let Ok(out) = &fetch
                    && !out.status.success()
                {
                    return Err(format!("fetching the template's crates failed: {}", tail(&out.stderr)));
                }
                self.build(toolchain, profile, jobs, false).await?;
            }
            std::fs::write(&marker, b"").map_err(|e| format!("{}: {e}", marker.display()))?;
            tracing::info!(
                profile = profile.as_str(),
                seconds = started.elapsed().as_secs_f64(),
                "Rust template ready"
            );
        }
        Ok(())
    }

    async fn build(
        &self,
        toolchain: &Toolchain,
        profile: Profile,
        jobs: usize,
        offline: bool,
    ) -> Result<(), String> {
        let jobs = jobs.to_string();
        let mut args = vec!["build", "--locked", "--target", TARGET, "-j", &jobs];
        if profile == Profile::Release {
            args.push("--release");
        }
        if offline {
            args.push("--offline");
        }
        let cmd = toolchain.cargo(&self.crate_dir(), &self.target_dir(), &args);
        match run(cmd, PREBUILD_TIMEOUT).await {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!("building the Rust template failed: {}", tail(&out.stderr))),
            Err(e) => Err(format!("building the Rust template failed: {e:?}")),
        }
    }
}

/// The last lines of a command's stderr, for an error message.
pub(crate) fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(6)..].join("\n")
}
