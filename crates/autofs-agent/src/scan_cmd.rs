//! `autofs-agent scan`: one scan of this machine, printed as a table or JSON lines, optionally
//! writing CRIU image files. The exit code says whether everything is dumpable.

use std::io::Write;

use std::path::{Path, PathBuf};

use autofs_core::selector::{SelectErrorKind, Workload};
use autofs_core::tasks::TaskReason;
use autofs_core::{Scan, Scanner, criu_image};

/// Exit code when every mount is dumpable (ACTIVE or CATATONIC).
pub const EXIT_DUMPABLE: u8 = 0;
/// Exit code when some mount would make CRIU's dump fail.
pub const EXIT_BLOCKED: u8 = 1;
/// Exit code for usage and fatal errors, and for a scan that could not see everything (a
/// restricted view of /proc, or a mount namespace whose table could not be read).
pub const EXIT_ERROR: u8 = 2;

/// Output format of `scan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned table plus a summary.
    Table,
    /// One JSON object per mount per line: the `autofs.v1.MountReport` message in its one
    /// JSON shape (`autofs_api::json`).
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
    /// Only the workload of this pid: the mount namespaces CRIU dumps with it
    /// ([`autofs_core::selector::Workload::check`]) and the tasks of its tree that stop the
    /// dump by themselves (printed to stderr, [`autofs_core::tasks`]); the exit code is its
    /// verdict.
    pub pid: Option<i32>,
    /// With `pid`: the mount points CRIU is told are external
    /// ([`autofs_core::selector::Workload::with_external_mounts`]).
    pub external: Vec<PathBuf>,
}

/// Runs one scan, writes the output to `out`, and returns the exit code.
///
/// # Errors
///
/// [`autofs_core::Error::ProcRoot`] when the proc root cannot be opened or listed; for `--pid`, the
/// [`autofs_core::SelectError`] of [`autofs_core::selector::mount_namespace_of`] with the context
/// `--pid` (a pid not found while the view is restricted is
/// [`autofs_core::SelectError::Unseen`]); the I/O or JSON error of writing to `out`; the
/// [`criu_image::ImageError`] of the first image that cannot be written ([`write_images`]). A
/// scan that could not see everything is not an error: it is [`EXIT_ERROR`] and a message on
/// stderr.
pub fn run(args: &ScanArgs, out: &mut impl Write) -> anyhow::Result<u8> {
    let scanner = Scanner::new(&args.proc_root, &args.node_name)?;
    let workload = match args.pid {
        Some(pid) => Some(workload(&scanner, pid, &args.external)?),
        None => None,
    };
    let mut scan = scanner.scan()?;
    // A pid's workload: its reports, and whether its dump would pass.
    let check = match &workload {
        Some(workload) => {
            let mut check = workload
                .check(&scan)
                .map_err(|e| anyhow::Error::new(e).context("--pid"))?;
            // What stops the dump that no mount shows, read from the workload's tasks.
            check.look_at_tasks(scanner.proc_root(), &scan);
            Some(check)
        }
        None => None,
    };
    if let Some(check) = &check {
        for task in &check.tasks {
            let kind = match task.reason {
                TaskReason::Unreadable => "error",
                _ => "blocked",
            };
            eprintln!("autofs-agent scan: {kind}: {}", task.message);
        }
        for &i in &check.external {
            eprintln!(
                "autofs-agent scan: {} is skipped by CRIU as an external bind (--external)",
                scan.reports[i].mount_point
            );
        }
        let keep: std::collections::HashSet<usize> = check.mounts.iter().copied().collect();
        let mut i = 0;
        scan.reports.retain(|_| {
            i += 1;
            keep.contains(&(i - 1))
        });
    }
    match args.format {
        Format::Table => out.write_all(crate::table::render(&scan.reports).as_bytes())?,
        Format::JsonLines => {
            for report in &scan.reports {
                serde_json::to_writer(&mut *out, &autofs_api::v1::MountReport::from(report))?;
                out.write_all(b"\n")?;
            }
        }
    }
    if let Some(dir) = &args.criu_images {
        write_images(&scan, dir)?;
    }
    out.flush()?;
    // "Could not see" must never read as "nothing there": say what was not seen.
    for problem in scan.view.problems() {
        eprintln!("autofs-agent scan: warning: {problem}");
    }
    // The namespaces looked at: every one, or the workload's (those of its reports and the
    // pid's own, whose unreadable table is a report of its own).
    let wanted: Option<std::collections::HashSet<u64>> = workload.as_ref().map(|w| {
        scan.reports
            .iter()
            .map(|r| r.mnt_ns)
            .chain(w.pid_namespace())
            .collect()
    });
    for ns in scan.namespaces.iter().filter(|n| {
        n.mount_table_error.is_some() && wanted.as_ref().is_none_or(|w| w.contains(&n.mnt_ns))
    }) {
        eprintln!(
            "autofs-agent scan: error: mount namespace {}: {}",
            ns.mnt_ns,
            ns.mount_table_error.as_deref().unwrap_or_default()
        );
    }
    // A whole-node scan that could not place some processes in a mount namespace may have
    // missed whole namespaces; a workload's check fails by itself when its own may be missing.
    if workload.is_none() && scan.view.unknown_namespaces > 0 {
        eprintln!(
            "autofs-agent scan: error: the mount namespaces of {} process(es) could not be read; their autofs mounts, if any, are not reported",
            scan.view.unknown_namespaces
        );
        return Ok(EXIT_ERROR);
    }
    Ok(match &check {
        Some(check) if !incomplete(&scan) => {
            if check.dumpable() {
                EXIT_DUMPABLE
            } else if check.blocking.is_empty()
                && check
                    .tasks
                    .iter()
                    .all(|t| t.reason == TaskReason::Unreadable)
            {
                // Only what could not be seen stands in the way: not a verdict.
                EXIT_ERROR
            } else {
                EXIT_BLOCKED
            }
        }
        _ => exit_code(&scan),
    })
}

/// The workload of `pid` (with its external mount points), resolved before the scan so that
/// a process that exits meanwhile is still answered for by its namespace.
fn workload(scanner: &Scanner, pid: i32, external: &[PathBuf]) -> anyhow::Result<Workload> {
    use std::os::unix::ffi::OsStrExt;
    let workload = match Workload::of_pid(scanner.proc_root(), pid) {
        Ok(workload) => workload,
        // A pid not found through a restricted view may be there, hidden: judge the view.
        Err(e) if e.kind() == SelectErrorKind::NotFound => {
            let view = scanner.scan()?.view;
            return Err(anyhow::Error::new(e.unless_hidden(&view)).context("--pid"));
        }
        Err(e) => return Err(anyhow::Error::new(e).context("--pid")),
    };
    workload
        .with_external_mounts(external.iter().map(|p| p.as_os_str().as_bytes()))
        .map_err(|e| anyhow::Error::new(e).context("--external"))
}

/// Whether the scan could not see everything: a restricted view, or a mount table it could
/// not read completely.
fn incomplete(scan: &Scan) -> bool {
    scan.view.restricted
        || scan
            .reports
            .iter()
            .any(|r| r.reason == autofs_core::Reason::MountTableUnreadable)
}

/// 2 when the scan could not see everything (restricted view, an unreadable mount table),
/// else 1 when something blocks a dump, else 0.
pub fn exit_code(scan: &Scan) -> u8 {
    if incomplete(scan) {
        EXIT_ERROR
    } else if scan.reports.iter().any(|r| r.blocks_dump()) {
        EXIT_BLOCKED
    } else {
        EXIT_DUMPABLE
    }
}

/// Writes `DIR/<mnt_ns>/autofs-<s_dev>.img` for every dumpable mount, as CRIU would when
/// dumping that mount namespace (pgrp is namespace-relative, so namespaces get their own
/// directory). Returns the paths written.
///
/// # Errors
///
/// The [`criu_image::ImageError`] of the first image (or its directory) that cannot be written; the
/// images written before it stay.
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
