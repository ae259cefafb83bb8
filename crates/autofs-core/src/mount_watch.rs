//! Notices a mount table changing without reading it. The kernel marks an open
//! `/proc/<pid>/mountinfo` with `POLLPRI | POLLERR` once a mount is added, removed or changed
//! in that process's mount namespace (proc(5), `/proc/<pid>/mounts`). One open table per
//! namespace, registered with tokio's reactor for priority readiness: waiting costs no timer,
//! no thread and no read.
//!
//! Linux only, behind the `watch` feature (the rest of the core needs no async runtime).

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::proc_root::ProcRoot;
use crate::scan::OpenTables;

/// The open mount tables of some mount namespaces, waiting for any of them to change.
#[derive(Debug)]
pub struct MountTableWatch {
    tables: Vec<AsyncFd<OwnedFd>>,
    unopened: usize,
    /// A change seen while the watch was set up ([`Self::adopt`]), not yet reported.
    pending: AtomicBool,
}

impl MountTableWatch {
    /// Opens `<pid>/mountinfo` of each of `members` (one process per mount namespace: the
    /// open file keeps following that namespace even after the process exits) and registers
    /// it with the current tokio runtime. A member that is gone, or whose table may not be
    /// opened, is skipped and counted in [`Self::unopened`].
    ///
    /// # Errors
    ///
    /// The reactor refused a registration.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with I/O enabled (as [`AsyncFd::new`]).
    pub fn open(root: &ProcRoot, members: impl IntoIterator<Item = i32>) -> io::Result<Self> {
        let mut watch = Self {
            tables: Vec::new(),
            unopened: 0,
            pending: AtomicBool::new(false),
        };
        for pid in members {
            let Ok(table) = root.open_pid_file(pid, "mountinfo") else {
                watch.unopened += 1;
                continue;
            };
            watch.register(table)?;
        }
        Ok(watch)
    }

    /// Watches the mount tables a scan read and left open
    /// ([`crate::Scanner::scan_keeping_tables`]), through `root` (the proc root the scan
    /// read): nothing changed after the scan read a table goes unseen, where a table opened
    /// only now would miss what was changed in between. The scan's count of tables it did
    /// not keep becomes [`Self::unopened`].
    ///
    /// # Errors
    ///
    /// The reactor refused a registration.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with I/O enabled (as [`AsyncFd::new`]).
    pub fn adopt(root: &ProcRoot, tables: OpenTables) -> io::Result<Self> {
        let mut watch = Self {
            tables: Vec::with_capacity(tables.tables.len()),
            unopened: tables.not_kept,
            pending: AtomicBool::new(false),
        };
        for (_, read) in tables.tables {
            // Registering a file with epoll polls it, and `mounts_poll` hands a change over
            // only once (it moves the file's baseline to the table's current event count):
            // epoll's second poll, when it reports, no longer sees it. So a fresh open of the
            // same table is registered, and only then is the table the scan read asked,
            // once, whether it changed since: a change before that is seen here, one after
            // it by the registered file.
            match root.reopen_own_fd(read.as_fd()) {
                Ok(fresh) => {
                    watch.register(fresh)?;
                    if changed_since_open(&read) {
                        watch.pending = AtomicBool::new(true);
                    }
                }
                // The process the table was read through has exited (the open file still
                // follows its namespace): watch that file, and take it as changed, since a
                // change made just before its registration could go unseen.
                Err(_) => {
                    watch.pending = AtomicBool::new(true);
                    watch.register(read)?;
                }
            }
        }
        Ok(watch)
    }

    fn register(&mut self, table: OwnedFd) -> io::Result<()> {
        // SAFETY: the `OwnedFd` keeps its descriptor open and unchanged until it is dropped,
        // which happens only when the `AsyncFd` holding it is dropped.
        #[allow(unsafe_code)]
        let table = unsafe { AsyncFd::register_with_interest(table, Interest::PRIORITY) }?;
        self.tables.push(table);
        Ok(())
    }

    /// How many mount tables are watched.
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    /// Whether no mount table is watched ([`Self::changed`] then never resolves).
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Namespaces whose table is not watched: members whose table could not be opened (gone,
    /// or refused), or the scan's count of tables it did not keep ([`Self::adopt`]).
    pub fn unopened(&self) -> usize {
        self.unopened
    }

    /// Resolves once a watched mount table has changed since it was opened (for
    /// [`Self::adopt`], since the scan read it) or since the last call that resolved; changes that came together resolve one call. Never resolves
    /// when nothing is watched. Cancel-safe: dropping the future loses no change.
    ///
    /// # Errors
    ///
    /// The reactor's error (the runtime is shutting down).
    pub async fn changed(&self) -> io::Result<()> {
        if self.pending.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        if self.tables.is_empty() {
            return std::future::pending().await;
        }
        let mut waits: Vec<_> = self
            .tables
            .iter()
            .map(|table| Box::pin(table.ready(Interest::PRIORITY)))
            .collect();
        std::future::poll_fn(|cx| {
            let mut woken = None;
            for wait in &mut waits {
                if let Poll::Ready(ready) = wait.as_mut().poll(cx) {
                    // The kernel reports a change once per poll; tokio keeps the readiness
                    // until it is cleared. Clear every table that fired, so one burst of
                    // changes across namespaces resolves one call.
                    match ready {
                        Ok(mut guard) => {
                            guard.clear_ready();
                            woken.get_or_insert(Ok(()));
                        }
                        Err(e) => woken = Some(Err(e)),
                    }
                }
            }
            woken.map_or(Poll::Pending, Poll::Ready)
        })
        .await
    }
}

/// Whether the mount table behind `table` changed since it was opened, or since a poll last
/// said so (`POLLPRI`, without waiting). A failed poll counts as a change: a rescan too many
/// is cheaper than a change missed.
fn changed_since_open(table: &OwnedFd) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(table.as_fd(), PollFlags::POLLPRI)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => fds[0]
            .revents()
            .is_none_or(|r| r.contains(PollFlags::POLLPRI)),
        Err(_) => true,
    }
}
