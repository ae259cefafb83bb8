//! Notices a mount table changing without reading it. The kernel marks an open
//! `/proc/<pid>/mountinfo` with `POLLPRI | POLLERR` once a mount is added, removed or changed
//! in that process's mount namespace since the file was opened or last reported a change
//! (proc(5), `/proc/<pid>/mounts`; `mounts_poll` in fs/proc_namespace.c).
//!
//! One open table per namespace, waited on with `poll(2)`, which reports a change and moves
//! the file's baseline in the same call. epoll would lose one: registering a file polls it
//! (taking a change already pending) and the poll at delivery no longer sees it. So the
//! tables a scan read can be watched as they are ([`MountTableWatch::adopt`]): a change made
//! after the scan read one, even before the watch began, ends the first wait.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::scan::OpenTables;

/// The open mount tables of some mount namespaces.
#[derive(Debug, Default)]
pub struct MountTableWatch {
    tables: Vec<OwnedFd>,
    unopened: usize,
}

/// What ended a [`MountTableWatch::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Woken {
    /// A watched mount table changed.
    pub changed: bool,
    /// The `wake` descriptor is readable, or its other end was closed.
    pub woken: bool,
}

impl MountTableWatch {
    /// Watches the mount tables a scan read and kept open
    /// ([`crate::Scanner::scan_keeping_tables`]): each was opened before the scan read it,
    /// so every change the scan did not see is reported, also one made before this call.
    /// The scan's count of tables it did not keep becomes [`Self::unopened`].
    pub fn adopt(tables: OpenTables) -> Self {
        Self {
            tables: tables.tables.into_iter().map(|kept| kept.table).collect(),
            unopened: tables.not_kept,
        }
    }

    /// How many mount tables are watched.
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    /// Whether no mount table is watched ([`Self::wait`] then ends only for `wake`).
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Namespaces whose table is not watched: those the scan did not keep ([`Self::adopt`]).
    pub fn unopened(&self) -> usize {
        self.unopened
    }

    /// Blocks until a watched mount table has changed since it was opened (before the scan
    /// read it) or since the last wait that reported it, or until `wake` is readable or hung up; says which (both, when
    /// both happened). Changes that came together, in one table or several, end one wait.
    /// Never reads a table.
    ///
    /// # Errors
    ///
    /// The `poll(2)` error other than `EINTR` (which waits again), or `POLLNVAL` on `wake`
    /// (a closed descriptor).
    pub fn wait(&self, wake: BorrowedFd<'_>) -> io::Result<Woken> {
        let mut fds: Vec<PollFd<'_>> = std::iter::once(PollFd::new(wake, PollFlags::POLLIN))
            .chain(
                self.tables
                    .iter()
                    .map(|t| PollFd::new(t.as_fd(), PollFlags::POLLPRI)),
            )
            .collect();
        loop {
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let revents = |fd: &PollFd<'_>| fd.revents().unwrap_or(PollFlags::empty());
        let wake_events = revents(&fds[0]);
        if wake_events.contains(PollFlags::POLLNVAL) {
            return Err(io::Error::from_raw_os_error(nix::libc::EBADF));
        }
        Ok(Woken {
            changed: fds[1..]
                .iter()
                .any(|t| revents(t).contains(PollFlags::POLLPRI)),
            woken: wake_events.intersects(PollFlags::POLLIN | PollFlags::POLLHUP),
        })
    }
}
