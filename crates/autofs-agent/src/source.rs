//! Where the inventory's scans come from: anything that can produce a [`Scan`]. The agent
//! serves a live proc root ([`Scanner`]); benchmarks plug in a generated set
//! (the `synthetic` module) without the production types knowing about it.

use autofs_core::{ProcRoot, Scan, Scanner};

/// A source of scans.
pub trait ScanSource: Send + Sync + 'static {
    /// Runs one scan. Called on the inventory's own scan thread, never on the runtime: it may
    /// block for as long as a /proc read does.
    ///
    /// # Errors
    ///
    /// The scan could not run at all (e.g. the proc root is gone).
    fn scan(&self) -> Result<Scan, autofs_core::Error>;

    /// The live proc root the scans read, if they read one. Only a live proc root can answer
    /// what a scan's reports cannot: a pid's mount namespace, host facts, change signs
    /// between scans, mount-table changes.
    fn proc_root(&self) -> Option<&ProcRoot>;
}

impl ScanSource for Scanner {
    fn scan(&self) -> Result<Scan, autofs_core::Error> {
        Scanner::scan(self)
    }

    fn proc_root(&self) -> Option<&ProcRoot> {
        Some(Scanner::proc_root(self))
    }
}
