//! Notices a mount table changing without reading it. The kernel marks an open
//! `/proc/<pid>/mountinfo` with `POLLPRI | POLLERR` once a mount is added, removed or changed
//! in that process's mount namespace (proc(5), `/proc/<pid>/mounts`). One open table per
//! namespace, registered with tokio's reactor for priority readiness: waiting costs no timer,
//! no thread and no read.
//!
//! Linux only, behind the `watch` feature (the rest of the core needs no async runtime).

use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::task::Poll;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::proc_root::ProcRoot;

/// The open mount tables of some mount namespaces, waiting for any of them to change.
#[derive(Debug)]
pub struct MountTableWatch {
    tables: Vec<AsyncFd<OwnedFd>>,
    unopened: usize,
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
        };
        for pid in members {
            let Ok(table) = root.open_pid_file(pid, "mountinfo") else {
                watch.unopened += 1;
                continue;
            };
            // SAFETY: the `OwnedFd` keeps its descriptor open and unchanged until it is
            // dropped, which happens only when the `AsyncFd` holding it is dropped.
            #[allow(unsafe_code)]
            let table = unsafe { AsyncFd::register_with_interest(table, Interest::PRIORITY) }?;
            watch.tables.push(table);
        }
        Ok(watch)
    }

    /// How many mount tables are watched.
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    /// Whether no mount table is watched ([`Self::changed`] then never resolves).
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Members whose table could not be opened (gone, or refused).
    pub fn unopened(&self) -> usize {
        self.unopened
    }

    /// Resolves once a watched mount table has changed since it was opened or since the
    /// last call that resolved; changes that came together resolve one call. Never resolves
    /// when nothing is watched. Cancel-safe: dropping the future loses no change.
    ///
    /// # Errors
    ///
    /// The reactor's error (the runtime is shutting down).
    pub async fn changed(&self) -> io::Result<()> {
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
