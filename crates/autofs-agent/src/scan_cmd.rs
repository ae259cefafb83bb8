//! `autofs-agent scan`: one scan of this machine, printed as a table or JSON lines, optionally
//! writing CRIU image files. The exit code says whether everything is dumpable.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use autofs_core::{Scan, Scanner, criu_image};

/// Exit code when every mount is dumpable (ACTIVE or CATATONIC).
pub const EXIT_DUMPABLE: u8 = 0;
/// Exit code when some mount would make CRIU's dump fail.
pub const EXIT_BLOCKED: u8 = 1;
/// Exit code for usage and fatal errors.
pub const EXIT_ERROR: u8 = 2;

/// Output format of `scan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned table plus a summary.
    Table,
    /// One JSON object per mount per line, fields named as in `MountReport`.
    JsonLines,
}

/// What `scan` was asked to do.
#[derive(Debug, Clone)]
pub struct ScanArgs {
    /// Proc root to inspect.
    pub proc_root: PathBuf,
    /// Node name written into every report.
    pub node_name: String,
    /// Output format.
    pub format: Format,
    /// Where to write CRIU images, if anywhere.
    pub criu_images: Option<PathBuf>,
    /// Only the mount namespace of this pid.
    pub pid: Option<i32>,
}

/// Runs one scan, writes the output to `out`, and returns the exit code.
pub fn run(args: &ScanArgs, out: &mut impl Write) -> anyhow::Result<u8> {
    let scanner = Scanner::new(&args.proc_root, &args.node_name)?;
    let only_ns = match args.pid {
        Some(pid) if pid <= 0 => anyhow::bail!("--pid must be a positive pid, got {pid}"),
        Some(pid) => Some(
            scanner
                .proc_root()
                .mount_namespace(pid)
                .with_context(|| format!("no mount namespace for --pid {pid}"))?,
        ),
        None => None,
    };
    let mut scan = scanner.scan()?;
    if let Some(ns) = only_ns {
        scan.reports.retain(|r| r.mnt_ns == ns);
    }
    match args.format {
        Format::Table => out.write_all(crate::table::render(&scan.reports).as_bytes())?,
        Format::JsonLines => {
            for report in &scan.reports {
                serde_json::to_writer(&mut *out, report)?;
                out.write_all(b"\n")?;
            }
        }
    }
    if let Some(dir) = &args.criu_images {
        write_images(&scan, dir)?;
    }
    out.flush()?;
    Ok(exit_code(&scan))
}

/// 0 when nothing blocks a dump, 1 otherwise.
pub fn exit_code(scan: &Scan) -> u8 {
    if scan.reports.iter().any(|r| r.blocks_dump()) {
        EXIT_BLOCKED
    } else {
        EXIT_DUMPABLE
    }
}

/// Writes `DIR/<mnt_ns>/autofs-<s_dev>.img` for every dumpable mount, as CRIU would when
/// dumping that mount namespace (pgrp is namespace-relative, so namespaces get their own
/// directory). Returns the paths written.
pub fn write_images(scan: &Scan, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for report in scan.reports.iter().filter(|r| r.dumpable) {
        if let Some(entry) = &report.entry {
            let ns_dir = dir.join(report.mnt_ns.to_string());
            written.push(criu_image::write_image(&ns_dir, report.criu_s_dev, entry)?);
        }
    }
    Ok(written)
}
