//! Fixture proc trees for agents run over a `--proc-root` that is no procfs: a copy of one of
//! autofs-core's fixture trees, and reads of it made to hang, as on a node where a `/proc`
//! read hangs behind a stuck unmount.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A copy of autofs-core's fixture proc tree `name` (symlinks preserved) in a temp dir; the
/// tree is at `<tempdir>/proc`.
///
/// # Panics
///
/// When the temp dir cannot be made or `cp -a` fails.
pub fn fixture_proc_root(name: &str) -> (tempfile::TempDir, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../autofs-core/tests/fixtures/proc")
        .join(name);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("proc");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&root)
        .status()
        .expect("run cp");
    assert!(status.success(), "cp -a {} failed", src.display());
    (dir, root)
}

/// `mountinfo` files of a fixture proc tree replaced by FIFOs without a writer: a reader
/// blocks in open(). Released (readers let go, real files back) by
/// [`HungMountinfo::release`] or on drop, also when a test fails.
pub struct HungMountinfo {
    files: Vec<PathBuf>,
    released: bool,
}

impl HungMountinfo {
    /// Every `mountinfo` of `proc_root`'s process directories.
    ///
    /// # Panics
    ///
    /// When `proc_root` cannot be listed, has no `mountinfo`, or one cannot be replaced.
    pub fn hang(proc_root: &Path) -> HungMountinfo {
        let files: Vec<PathBuf> = std::fs::read_dir(proc_root)
            .unwrap()
            .map(|entry| entry.unwrap().path().join("mountinfo"))
            .filter(|path| path.is_file())
            .collect();
        assert!(!files.is_empty(), "no mountinfo in {}", proc_root.display());
        HungMountinfo::hang_files(files)
    }

    /// Only these `mountinfo` files.
    ///
    /// # Panics
    ///
    /// When one cannot be moved aside or its FIFO cannot be made.
    pub fn hang_files(files: Vec<PathBuf>) -> HungMountinfo {
        for path in &files {
            std::fs::rename(path, real(path)).unwrap();
            nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        }
        HungMountinfo {
            files,
            released: false,
        }
    }

    /// The FIFOs, at the paths of the files they stand for.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Puts the real files back, then opens each FIFO for writing and closes it: a reader
    /// blocked in open() gets an empty file, later opens the real one.
    pub fn release(&mut self) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        for path in &self.files {
            let fifo = path.with_extension("fifo");
            let _ = std::fs::rename(path, &fifo);
            let _ = std::fs::rename(real(path), path);
            // ENXIO when nobody waits on it; then there is nothing to let go.
            let _ = OpenOptions::new()
                .write(true)
                .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
                .open(&fifo);
            let _ = std::fs::remove_file(&fifo);
        }
    }
}

impl Drop for HungMountinfo {
    fn drop(&mut self) {
        self.release();
    }
}

/// Where the real file waits while its FIFO stands in.
fn real(path: &Path) -> PathBuf {
    path.with_extension("real")
}
