//! Real kernel: the mount-table watcher wakes when a mount appears in the watched mount
//! namespace — a real private one, built by autofs-testkit, so the host's table is untouched.
//! Needs root; fails, never skips, without it. The scenario is torn down on drop.

use std::time::Duration;

use autofs_core::ProcRoot;
use autofs_core::mount_watch::MountTableWatch;
use autofs_testkit::Scenario;

/// Only a guard against a hang: a wake is awaited, never timed.
const HANG_GUARD: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "current_thread")]
async fn a_mount_appearing_in_a_private_namespace_wakes_its_watcher_each_time() {
    let mut sc = Scenario::start_or_panic();
    let root = ProcRoot::open("/proc").unwrap();
    let watch = MountTableWatch::open(&root, [sc.init_host_pid()]).unwrap();
    assert_eq!((watch.len(), watch.unopened()), (1, 0));

    for dir in [&b"first"[..], b"second"] {
        sc.tmpfs(dir).unwrap();
        tokio::time::timeout(HANG_GUARD, watch.changed())
            .await
            .unwrap_or_else(|_| panic!("no wake within {HANG_GUARD:?} of mounting {dir:?}"))
            .unwrap();
    }
    sc.shutdown().unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_member_that_does_not_exist_is_counted_not_watched() {
    let root = ProcRoot::open("/proc").unwrap();
    // Above any pid_max the kernel allows (2^22).
    let watch = MountTableWatch::open(&root, [i32::MAX]).unwrap();
    assert_eq!((watch.len(), watch.unopened()), (0, 1));
    assert!(watch.is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn a_table_that_would_block_in_open_is_opened_without_waiting() {
    // A FIFO without a writer blocks a plain open(); the watcher's open must not (a proc
    // root whose reads hang must not hang the watcher too).
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("42")).unwrap();
    nix::unistd::mkfifo(
        &dir.path().join("42/mountinfo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let root = ProcRoot::open(dir.path()).unwrap();
    let watch = MountTableWatch::open(&root, [42]).unwrap();
    assert_eq!((watch.len(), watch.unopened()), (1, 0));
}
