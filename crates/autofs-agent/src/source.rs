//! Where the inventory's scans come from: anything that can produce a [`Scan`]. The agent
//! serves a live proc root ([`Scanner`]); benchmarks plug in a generated set
//! (the `synthetic` module) without the production types knowing about it.

use autofs_core::{OpenTables, ProcRoot, Scan, Scanner};

/// A source of scans.
pub trait ScanSource: Send + Sync + 'static {
    /// Runs one scan, keeping open the mount tables it read of up to `keep_tables` mount
    /// namespaces ([`Scanner::scan_keeping_tables`]; none from a source without tables).
    /// Called on the inventory's own scan thread, never on the runtime: it may block for as
    /// long as a /proc read does.
    ///
    /// # Errors
    ///
    /// The scan could not run at all (e.g. the proc root is gone).
    fn scan(&self, keep_tables: usize) -> Result<(Scan, OpenTables), autofs_core::Error>;

    /// The live proc root the scans read, if they read one. Only a live proc root can answer
    /// what a scan's reports cannot: a pid's mount namespace, host facts, change signs
    /// between scans, mount-table changes.
    fn proc_root(&self) -> Option<&ProcRoot>;
}

impl ScanSource for Scanner {
    fn scan(&self, keep_tables: usize) -> Result<(Scan, OpenTables), autofs_core::Error> {
        Scanner::scan_keeping_tables(self, keep_tables)
    }

    fn proc_root(&self) -> Option<&ProcRoot> {
        Some(Scanner::proc_root(self))
    }
}
