//! Notices what a verdict rests on changing between scans, so that watchers, waiters and
//! metrics see it within about a second instead of at the next full scan:
//!
//! - a queue appearing or draining on a known read end: one `FIONREAD` per read end every
//!   `interval`, on a thread of its own that sleeps in between (nothing else is read, nothing
//!   is consumed, and no runtime thread wakes for it);
//! - a master exiting, or a process between a leader and the root of the tree CRIU dumps
//!   (its exit re-parents the leader out of the tree): one pidfd each, which the runtime polls
//!   for free;
//! - a process that a mount table kept for the mount-table watch was read through exiting
//!   (a pidfd each too, within the same budget, after the others): the open table holds its
//!   namespace and mounts alive, so the scan that follows lets go of a namespace that died;
//! - a catatonic mount, or an orphaned one whose read end nobody holds, changing its super
//!   options (a lookup turning it catatonic, a restarted daemon reconnecting it): the kernel
//!   raises no mount-table event for these, so on the same thread as the `FIONREAD`s, the
//!   `mountinfo` of each namespace holding such mounts is re-read and compared (and only
//!   those namespaces', only while they hold such mounts);
//! - a process taking the pid of a leader the scan found gone (pids are reused; CRIU takes
//!   `pgrp=` as a pid, whatever process has it): one `stat` read per such pid, on the same
//!   thread;
//! - a mount namespace made since the last pass, which no kept mount table hears of when its
//!   maker mounts only inside it (its autofs mounts, copies of the host's or its own, would
//!   wait for the next full scan): a walk of the kernel's list of mount namespaces (an
//!   `ioctl`, an `fstat` and a `close` per namespace), on the same thread, spaced to hold it
//!   to 0.1 % of a core (Linux ≥ 6.12 and `CAP_SYS_ADMIN`;
//!   [`autofs_core::mount_namespaces`]).
//!
//! Either wakes the background scanner, which then runs a scan (cheap: leader first).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use autofs_core::Fionread;
use autofs_core::changes::{GoneLeaders, KnownQueues, QuietMounts, Readings, masters, pidfd_open};
use autofs_core::mount_namespaces::{NamespaceWalk, NewNamespaces};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::runtime::Handle;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::snapshot::{Inventory, Snapshot};

/// Runs until `shutdown` turns true, notifying `changed` whenever a master of the latest scan
/// exits, or a process on the way from a leader up to its namespace's owner. Holds at most
/// `max_pidfds` pidfds (its share of the descriptor budget).
pub async fn run(
    inventory: Arc<Inventory>,
    max_pidfds: usize,
    changed: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(root) = inventory.proc_root() else {
        return; // no live proc root (benchmarks): no masters
    };
    if !root.is_own_pid_namespace() {
        tracing::info!(
            "the proc root is not this agent's pid namespace: master exits are seen at the next scan"
        );
        return;
    }
    let mut snapshots = inventory.subscribe();
    let mut exits: JoinSet<i32> = JoinSet::new();
    let mut gone = BTreeSet::new();
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        exits.shutdown().await;
        // At most the descriptors budgeted for it; others are seen at the next scan.
        // Masters first: past the budget, the processes above them go unwatched first, then
        // the readers of the kept mount tables.
        let masters = masters(&snapshot.scan);
        let above = snapshot.scan.tree_paths.iter().copied();
        let mut watched: Vec<i32> = masters
            .iter()
            .copied()
            .chain(above.filter(|pid| !masters.contains(pid)))
            .collect();
        let mut seen: BTreeSet<i32> = watched.iter().copied().collect();
        watched.extend(
            snapshot
                .table_readers
                .iter()
                .copied()
                .filter(|&pid| seen.insert(pid)),
        );
        let now_gone = arm(&mut exits, watched, max_pidfds);
        if exit_news(&now_gone, &gone) {
            changed.notify_one();
        }
        gone = now_gone;
        loop {
            tokio::select! {
                Some(exited) = exits.join_next() => if let Ok(pid) = exited {
                    // The scan this asks for may still name it (a dead leader stays the
                    // `pgrp=` of its mounts): found gone then, it is not news again.
                    gone.insert(pid);
                    changed.notify_one();
                },
                next = snapshots.changed() => {
                    if next.is_err() {
                        return;
                    }
                    break;
                }
                () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => return,
            }
        }
    }
}

/// Starts the thread that measures the latest scan's read ends every `interval` and notifies
/// `changed` when a queue differs from what the scan measured (or can no longer be measured),
/// when the super options of a quiet mount ([`QuietMounts`]) differ from the scan's, when a
/// process has taken the pid of a leader the scan found gone ([`GoneLeaders`]), or when a
/// mount namespace was made since the last pass ([`NewNamespaces`]).
/// It sleeps between passes, waits for a scan while nothing is to be measured (always
/// something on a kernel that lets it walk the mount namespaces), and ends at
/// `shutdown`; like the scan thread, nobody joins it, so a `/proc` read stuck in the kernel
/// cannot hold up shutdown. `runtime` is the runtime whose channels it waits on.
///
/// # Errors
///
/// The error of spawning the thread.
pub fn spawn_queue_poll(
    inventory: Arc<Inventory>,
    interval: Duration,
    changed: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
    runtime: Handle,
) -> std::io::Result<()> {
    if inventory.proc_root().is_none() {
        return Ok(()); // no live proc root (benchmarks): no queues
    }
    std::thread::Builder::new()
        .name("queue-poll".into())
        .spawn(move || poll_queues(&inventory, interval, &changed, shutdown, &runtime))?;
    Ok(())
}

fn poll_queues(
    inventory: &Inventory,
    interval: Duration,
    changed: &Notify,
    mut shutdown: watch::Receiver<bool>,
    runtime: &Handle,
) {
    let mut snapshots = inventory.subscribe();
    let mut baseline = Baseline::default();
    let mut readings = Readings::default();
    let mut quiet_pass = Spacing::new(QUIET_SPACING);
    let walk = NamespaceWalk::open()
        .inspect_err(|e| {
            tracing::info!(error = %e, "new mount namespaces are seen at the next scan");
        })
        .ok();
    let mut new_namespaces = NewNamespaces::default();
    let mut walk_pass = Spacing::new(WALK_SPACING);
    let mut walk_retry = WalkRetry::default();
    loop {
        baseline.refresh(&mut snapshots, &mut readings);
        let scan = baseline.generation.unwrap_or_default();
        // The walk is compared with a scan: none before the first.
        let walking = walk.is_some() && scan > 0 && walk_retry.may_walk(scan);
        if !walking
            && baseline.queues.is_empty()
            && baseline.quiet.is_empty()
            && baseline.gone.is_empty()
        {
            let ended = runtime.block_on(async {
                tokio::select! {
                    changed = snapshots.changed() => changed.is_err(),
                    _ = shutdown.wait_for(|stop| *stop) => true,
                }
            });
            if ended {
                return;
            }
            continue;
        }
        // Measured right after taking the latest scan: a queue that drained just after a scan
        // showed it INTERIM is noticed at this pass, not one pass later.
        if inventory
            .proc_root()
            .is_some_and(|root| baseline.queues.changed(root, &Fionread, &mut readings))
        {
            changed.notify_one();
        }
        // Once per scan: the scan this asks for takes the new options, or the new leader, as
        // its own (or, if it fails, its retry does), so the same difference is not news at
        // every pass.
        if !baseline.quiet_reported
            && inventory.proc_root().is_some_and(|root| {
                baseline.gone.reused(root)
                    || quiet_pass.run(Instant::now(), || baseline.quiet.changed(root))
            })
        {
            baseline.quiet_reported = true;
            changed.notify_one();
        }
        if walking && let Some(namespaces) = &walk {
            // The walk's outcome, when it was due.
            let mut outcome = None;
            if walk_pass.run(Instant::now(), || {
                let walked = namespaces.walk();
                let news = walked.as_ref().is_ok_and(|walked| {
                    new_namespaces.news(walked, scan, |ino| baseline.namespaces.contains(&ino))
                });
                outcome = Some(walked.map(drop));
                news
            }) {
                changed.notify_one();
            }
            match outcome {
                // Meanwhile as an agent that cannot walk: the scans still find them.
                Some(Err(e)) => {
                    // The next walk is a first one again: the scan it waits for lists the
                    // namespaces made meanwhile, which are then no news.
                    new_namespaces = NewNamespaces::default();
                    if walk_retry.failed(scan) {
                        tracing::warn!(error = %e, "walking the mount namespaces failed: new mount namespaces are seen at the next scan, after which the walk is tried again");
                    } else {
                        tracing::debug!(error = %e, "walking the mount namespaces failed again");
                    }
                }
                Some(Ok(())) if walk_retry.worked() => {
                    tracing::info!("walking the mount namespaces works again");
                }
                Some(Ok(())) | None => {}
            }
        }
        std::thread::sleep(interval);
        // Shutdown said, or the agent gone without saying it (its sender dropped).
        if *shutdown.borrow() || shutdown.has_changed().is_err() {
            return;
        }
    }
}

/// When the walk of the mount namespaces runs again after it failed (`EMFILE`, `ENOMEM`, or a
/// kernel that stopped allowing it): not before the next scan is published, which finds the
/// namespaces made meanwhile. A passing failure ends at that scan; a lasting one costs a walk
/// per scan.
#[derive(Debug, Default)]
struct WalkRetry {
    /// The scan generation the last walk failed at; `None` while walks work.
    failed_at: Option<u64>,
}

impl WalkRetry {
    /// Whether a walk may run while scan `generation` is the latest.
    fn may_walk(&self, generation: u64) -> bool {
        self.failed_at != Some(generation)
    }

    /// Records a walk that failed at scan `generation`; true for the first failure after
    /// walks that worked (the one to log).
    fn failed(&mut self, generation: u64) -> bool {
        self.failed_at.replace(generation).is_none()
    }

    /// Records a walk that worked; true when it follows a failure (the recovery to log).
    fn worked(&mut self) -> bool {
        self.failed_at.take().is_some()
    }
}

/// How much longer than a pass of the quiet mounts took the next one waits: whole mount
/// tables are read, and a namespace of thousands of mounts (tens of thousands stacked on one
/// path render in seconds) must not keep a core busy. 500 holds the passes to 0.2 % of a core
/// (a 10 ms table: every 5 s; a table small enough to read in 1 ms: every pass).
const QUIET_SPACING: u32 = 500;

/// How much longer than a walk of the mount namespaces took the next one waits: a walk costs
/// about 2 µs per namespace (the scan bench's `namespaces` mode), so a node of 1,000 would
/// keep 0.4 % of a core busy at a walk every 500 ms. 1000 holds the walks to 0.1 % of a core
/// (1,000 namespaces: every 2 s; a few hundred: every pass).
const WALK_SPACING: u32 = 1000;

/// Runs a costly pass no sooner than `factor` times the CPU time its last run took (the
/// thread's user and system time, `CLOCK_THREAD_CPUTIME_ID`) after that run began: the share
/// of a core it may take is what is held. Wall time would also count the time the thread
/// waited for a CPU, so a loaded machine would space the passes further the busier it is.
#[derive(Debug)]
struct Spacing {
    factor: u32,
    due: Option<Instant>,
}

impl Spacing {
    fn new(factor: u32) -> Self {
        Self { factor, due: None }
    }

    /// Runs `pass` if it is due at `now` (timing it), and returns its answer; false when not
    /// due.
    fn run(&mut self, now: Instant, pass: impl FnOnce() -> bool) -> bool {
        if self.due.is_some_and(|due| now < due) {
            return false;
        }
        let cpu_began = thread_cpu_time();
        let answer = pass();
        let spent = match (cpu_began, thread_cpu_time()) {
            (Some(before), Some(after)) => after.saturating_sub(before),
            _ => now.elapsed(),
        };
        self.due = Some(now + spent * self.factor);
        answer
    }
}

/// The CPU time the calling thread has used, user and system (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_time() -> Option<Duration> {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .ok()
        .map(Duration::from)
}

/// The read ends of the latest scan and what it measured on them, and its quiet mounts.
#[derive(Default)]
struct Baseline {
    generation: Option<u64>,
    queues: KnownQueues,
    quiet: QuietMounts,
    gone: GoneLeaders,
    /// The mount namespaces it listed (inodes).
    namespaces: HashSet<u64>,
    /// A quiet mount's options were found changed, or a gone leader's pid taken, since this
    /// scan (reported once).
    quiet_reported: bool,
}

impl Baseline {
    /// Takes the latest snapshot's read ends if a scan was published since the last call
    /// (its measurements are then the baseline of `readings`).
    fn refresh(&mut self, snapshots: &mut watch::Receiver<Arc<Snapshot>>, readings: &mut Readings) {
        let snapshot = snapshots.borrow_and_update().clone();
        if self.generation != Some(snapshot.generation) {
            self.generation = Some(snapshot.generation);
            self.queues = KnownQueues::from_scan(&snapshot.scan);
            self.quiet = QuietMounts::from_scan(&snapshot.scan);
            self.gone = GoneLeaders::from_scan(&snapshot.scan);
            self.namespaces = snapshot
                .scan
                .namespaces
                .iter()
                .map(|ns| ns.mnt_ns)
                .collect();
            self.quiet_reported = false;
            readings.new_scan();
        }
    }
}

/// Whether masters found gone when their pidfds were armed (`now_gone`) call for a scan: a
/// master that exited between the scan and the arming does, once. The scan that follows may
/// still name it (the leader of a mount whose daemon died stays its `pgrp=`): found gone
/// again (`gone_before`), it is not news, and asking again would rescan without end.
fn exit_news(now_gone: &BTreeSet<i32>, gone_before: &BTreeSet<i32>) -> bool {
    !now_gone.is_subset(gone_before)
}

/// Arms a pidfd watch for each of the first `max_pidfds` of `pids` (see [`watch_exit`]);
/// returns the pids that had already exited.
fn arm(exits: &mut JoinSet<i32>, pids: Vec<i32>, max_pidfds: usize) -> BTreeSet<i32> {
    pids.into_iter()
        .take(max_pidfds)
        .filter(|&pid| !watch_exit(exits, pid))
        .collect()
}

/// Adds to `exits` a task that ends with `pid` once `pid` exits. Returns false when `pid` has
/// exited already: no such process (`ESRCH`), or a zombie, whose pidfd is readable at once;
/// other failures leave its exit to the next scan.
fn watch_exit(exits: &mut JoinSet<i32>, pid: i32) -> bool {
    let armed = pidfd_open(pid).and_then(|fd| {
        if exited(&fd)? {
            return Ok(None);
        }
        // SAFETY: an `OwnedFd` keeps its descriptor open and unchanged until it is dropped,
        // which happens only when the `AsyncFd` holding it is dropped.
        #[allow(unsafe_code)]
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map(Some)
            .map_err(Into::into)
    });
    match armed {
        Ok(Some(pidfd)) => {
            exits.spawn(async move {
                // An error here means the reactor is going away: the agent is shutting down.
                let _ = pidfd.readable().await;
                pid
            });
            true
        }
        Ok(None) => false, // a zombie
        Err(e) => {
            tracing::debug!(pid, error = %e, "no pidfd; the master's exit is seen at the next scan");
            e.raw_os_error() != Some(nix::libc::ESRCH)
        }
    }
}

/// Whether the process behind `pidfd` has exited (its pidfd polls readable; a zombie's does).
fn exited(pidfd: &std::os::fd::OwnedFd) -> std::io::Result<bool> {
    use std::os::fd::AsFd;
    let mut fds = [nix::poll::PollFd::new(
        pidfd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    Ok(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO)? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_walk_waits_for_the_next_scan_and_is_logged_once_per_run_of_failures() {
        let mut retry = WalkRetry::default();
        assert!(retry.may_walk(3));
        assert!(!retry.worked(), "no failure to recover from");
        assert!(retry.failed(3), "the first failure is logged");
        assert!(!retry.may_walk(3), "not again before the next scan");
        assert!(retry.may_walk(4));
        assert!(
            !retry.failed(4),
            "a failure after a failure is not logged again"
        );
        assert!(!retry.may_walk(4));
        assert!(retry.may_walk(5));
        assert!(retry.worked(), "the recovery is logged");
        assert!(retry.may_walk(5));
        assert!(!retry.worked());
        assert!(retry.failed(5), "a new run of failures is logged");
    }

    #[test]
    fn a_costly_pass_waits_its_spacing_times_what_it_took() {
        let mut spacing = Spacing::new(500);
        let start = Instant::now();
        let mut runs = 0;
        // The first pass runs at once, and takes at least 2 ms of CPU: the next is due 1 s
        // later.
        assert!(spacing.run(start, || {
            runs += 1;
            let began = thread_cpu_time().expect("CLOCK_THREAD_CPUTIME_ID");
            while thread_cpu_time().expect("CLOCK_THREAD_CPUTIME_ID") - began
                < Duration::from_millis(2)
            {
                std::hint::spin_loop();
            }
            true
        }));
        let due = spacing.due.unwrap();
        assert!(due >= start + Duration::from_secs(1), "{:?}", due - start);
        assert!(!spacing.run(start + Duration::from_millis(10), || unreachable!()));
        assert!(!spacing.run(due - Duration::from_nanos(1), || unreachable!()));
        assert!(!spacing.run(due, || {
            runs += 1;
            false
        }));
        assert_eq!(runs, 2);
    }

    /// A pass that waited (for a CPU on a loaded machine, or in a sleep here) is spaced by
    /// what it cost, not by how long it took: 20 ms of waiting would space it 10 s.
    #[test]
    fn a_pass_that_waited_is_spaced_by_its_cpu_time_not_its_wall_time() {
        let mut spacing = Spacing::new(500);
        let start = Instant::now();
        assert!(spacing.run(start, || {
            std::thread::sleep(Duration::from_millis(20));
            true
        }));
        let due = spacing.due.expect("due");
        assert!(due < start + Duration::from_secs(5), "{:?}", due - start);
    }

    #[test]
    fn a_master_found_gone_asks_for_one_scan_not_one_per_scan() {
        let set = |pids: &[i32]| pids.iter().copied().collect::<BTreeSet<i32>>();
        assert!(!exit_news(&set(&[]), &set(&[])));
        assert!(exit_news(&set(&[7]), &set(&[])), "exited after the scan");
        assert!(
            !exit_news(&set(&[7]), &set(&[7])),
            "the next scan still names it"
        );
        assert!(exit_news(&set(&[7, 9]), &set(&[7])), "another one exited");
        assert!(!exit_news(&set(&[]), &set(&[7])));
    }

    #[tokio::test]
    async fn arming_tells_exited_masters_and_watches_live_ones() {
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("spawn sleep");
        let live = i32::try_from(child.id()).expect("pid");
        // Above the kernel's largest pid_max: no such process.
        let gone = 4_194_305;
        // A zombie: exited, not reaped yet.
        let mut zombie = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let zombie_pid = i32::try_from(zombie.id()).expect("pid");
        while autofs_testkit::procfs::process_state(zombie_pid) != Some('Z') {
            tokio::task::yield_now().await;
        }
        let mut exits = JoinSet::new();
        let found_gone = arm(&mut exits, [live, gone, zombie_pid].into(), 16);
        assert_eq!(found_gone, [gone, zombie_pid].into());
        zombie.wait().expect("reap the zombie");
        // The live master's exit ends its watch.
        child.kill().expect("kill");
        child.wait().expect("reap");
        let exited = tokio::time::timeout(Duration::from_secs(60), exits.join_next())
            .await
            .expect("the exit of a watched master is noticed (hang guard)");
        assert_eq!(exited.map(|joined| joined.expect("watch task")), Some(live));
    }
}
