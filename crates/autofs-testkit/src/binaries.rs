//! Finding a workspace binary from the tests of another package (Cargo sets
//! `CARGO_BIN_EXE_*` only for the package's own tests): an environment variable naming it;
//! else the one next to the running test binary, if it is newer than its sources; else built
//! now with cargo, once per process, into the same target dir and profile.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::SystemTime;

/// A binary of this workspace.
#[derive(Debug, Clone, Copy)]
pub struct WorkspaceBinary {
    /// Environment variable that names the binary explicitly.
    pub env: &'static str,
    /// Package that builds it.
    pub package: &'static str,
    /// Binary name.
    pub bin: &'static str,
    /// Source dirs (relative to the workspace root) it is built from.
    pub sources: &'static [&'static str],
}

/// The scenario init of this crate.
pub const SCENARIO: WorkspaceBinary = WorkspaceBinary {
    env: "AUTOFS_SCENARIO_BIN",
    package: "autofs-testkit",
    bin: "autofs-scenario",
    sources: &["crates/autofs-testkit/src"],
};

/// The node agent.
pub const AGENT: WorkspaceBinary = WorkspaceBinary {
    env: "AUTOFS_AGENT_BIN",
    package: "autofs-agent",
    bin: "autofs-agent",
    sources: &[
        "crates/autofs-agent/src",
        "crates/autofs-core/src",
        // The generated API: the root package today, `crates/autofs-api` once it moves there
        // (a dir that does not exist is skipped).
        "crates/autofs-api",
        "src",
        "proto",
    ],
};

impl WorkspaceBinary {
    /// The binary's path, and whether it was just built (or named explicitly).
    ///
    /// # Errors
    ///
    /// An error naming the variable when [`Self::env`] is set but is not a file; else, when no
    /// up-to-date binary is next to the test binary, the error of [`Self::build`].
    pub fn locate(&self) -> io::Result<(PathBuf, bool)> {
        if let Some(p) = std::env::var_os(self.env) {
            let p = PathBuf::from(p);
            return if p.is_file() {
                Ok((p, true))
            } else {
                Err(io::Error::other(format!(
                    "{}={} is not a file",
                    self.env,
                    p.display()
                )))
            };
        }
        if let Some(p) = profile_dir().map(|d| d.join(self.bin))
            && p.is_file()
            && !self.older_than_sources(&p)
        {
            return Ok((p, false));
        }
        self.build().map(|p| (p, true))
    }

    /// Builds the binary with cargo, once per process.
    ///
    /// # Errors
    ///
    /// An error naming the binary and [`Self::env`] when cargo cannot be run, fails, or leaves no
    /// binary where it was expected. A failure is remembered: later calls return it again.
    pub fn build(&self) -> io::Result<PathBuf> {
        static BUILT: Mutex<Vec<(&'static str, Result<PathBuf, String>)>> = Mutex::new(Vec::new());
        let mut built = BUILT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, result)) = built.iter().find(|(bin, _)| *bin == self.bin) {
            return result.clone().map_err(io::Error::other);
        }
        let result = self.cargo_build();
        built.push((self.bin, result.clone()));
        result.map_err(io::Error::other)
    }

    fn cargo_build(&self) -> Result<PathBuf, String> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let mut cmd = Command::new(&cargo);
        cmd.args(["build", "--quiet", "-p", self.package, "--bin", self.bin])
            .arg("--manifest-path")
            .arg(workspace_root().join("Cargo.toml"));
        let profile = profile_dir().unwrap_or_else(|| workspace_root().join("target/debug"));
        match profile.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                cmd.arg("--release");
            }
            Some(p) => {
                cmd.args(["--profile", p]);
            }
        }
        if let Some(target) = profile.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        let out = profile.join(self.bin);
        let status = cmd.status().map_err(|e| {
            format!(
                "{} not found and running `{} build` failed: {e}; set {}",
                self.bin,
                cargo.to_string_lossy(),
                self.env
            )
        })?;
        if !status.success() || !out.is_file() {
            return Err(format!(
                "building {} failed ({status}); expected it at {}; set {}",
                self.bin,
                out.display(),
                self.env
            ));
        }
        Ok(out)
    }

    fn older_than_sources(&self, bin: &Path) -> bool {
        let root = workspace_root();
        let sources = self
            .sources
            .iter()
            .filter_map(|d| newest_mtime(&root.join(d)))
            .max();
        let built = std::fs::metadata(bin).and_then(|m| m.modified()).ok();
        matches!((sources, built), (Some(s), Some(b)) if s > b)
    }
}

/// The dir of the workspace's root `Cargo.toml`.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `<target>/<profile>` of the running binary (test binaries live in `<profile>/deps`).
fn profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    Some(if dir.file_name()? == "deps" {
        dir.parent()?.to_path_buf()
    } else {
        dir.to_path_buf()
    })
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let t = if p.is_dir() {
            newest_mtime(&p)
        } else {
            e.metadata().ok()?.modified().ok()
        };
        newest = newest.max(t);
    }
    newest
}
