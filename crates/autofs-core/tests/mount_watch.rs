//! Real kernel: the mount-table watcher wakes when a mount appears in the watched mount
//! namespace (a real private one, built by autofs-testkit, so the host's table is untouched),
//! also when it appeared between a scan and the watch adopting the tables the scan read, and
//! not when nothing changed. Needs root; fails, never skips, without it. The scenario is torn
//! down on drop.

use std::os::fd::{AsFd, OwnedFd};

use autofs_core::mount_watch::{MountTableWatch, Woken};
use autofs_core::{OpenTables, Scanner};
use autofs_testkit::HANG_GUARD;
use autofs_testkit::{MountSpec, Scenario};

const CHANGED: Woken = Woken {
    changed: true,
    woken: false,
};

/// A wake pipe: its read end, and its write end kept open.
fn wake_pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe().unwrap()
}

/// Waits on `watch`; a thread writes a wake-up after [`HANG_GUARD`], so a change that never
/// comes ends the wait as `woken` rather than hanging the test.
fn wait_guarded(watch: &MountTableWatch) -> Woken {
    let (rx, tx) = wake_pipe();
    std::thread::spawn(move || {
        std::thread::sleep(HANG_GUARD);
        let _ = nix::unistd::write(&tx, &[1]);
    });
    watch.wait(rx.as_fd()).unwrap()
}

/// The scenario's table as `scanner` kept it open, alone (the host's may change under other
/// tests and wake a watch too).
fn scenario_table(scanner: &Scanner, sc: &Scenario) -> OpenTables {
    let (scan, kept) = scanner.scan_keeping_tables(usize::MAX).unwrap();
    assert!(scan.namespaces.iter().any(|n| n.mnt_ns == sc.mnt_ns()));
    assert_eq!(
        kept.tables.len() + kept.not_kept,
        scan.stats.mount_namespaces
    );
    let tables: Vec<_> = kept
        .tables
        .into_iter()
        .filter(|kept| kept.mnt_ns == sc.mnt_ns())
        .collect();
    assert_eq!(tables.len(), 1, "the scenario's table was not kept");
    OpenTables {
        tables,
        not_kept: 0,
    }
}

#[test]
fn a_mount_appearing_in_a_private_namespace_wakes_its_watcher_each_time() {
    let mut sc = Scenario::start_or_panic();
    let scanner = Scanner::new("/proc", "test").unwrap();
    let watch = MountTableWatch::adopt(scenario_table(&scanner, &sc));
    assert_eq!((watch.len(), watch.unopened()), (1, 0));

    for dir in [&b"first"[..], b"second"] {
        sc.tmpfs(dir).unwrap();
        assert_eq!(wait_guarded(&watch), CHANGED, "after mounting {dir:?}");
    }
    sc.shutdown().unwrap();
}

/// The tables a scan kept open report a mount made after the scan read them and before the
/// watch adopted them: no change falls between a scan and the watch that follows it (a table
/// opened only now, or registered with epoll, would report nothing of it). The watch goes
/// on reporting later mounts.
#[test]
fn a_mount_made_between_the_scan_and_the_watch_wakes_the_watch() {
    let mut sc = Scenario::start_or_panic();
    let scanner = Scanner::new("/proc", "test").unwrap();
    let tables = scenario_table(&scanner, &sc);

    sc.tmpfs(b"between").unwrap();
    let watch = MountTableWatch::adopt(tables);
    assert_eq!((watch.len(), watch.unopened()), (1, 0));
    assert_eq!(wait_guarded(&watch), CHANGED, "the mount before the watch");
    sc.tmpfs(b"after").unwrap();
    assert_eq!(wait_guarded(&watch), CHANGED, "a mount after it");
    sc.shutdown().unwrap();
}

/// Adopted tables of a namespace where nothing changed since the scan report no change: a
/// wait ends only for its wake-up (an idle agent does not rescan).
#[test]
fn an_unchanged_table_does_not_wake_the_watch() {
    let sc = Scenario::start_or_panic();
    let scanner = Scanner::new("/proc", "test").unwrap();
    let watch = MountTableWatch::adopt(scenario_table(&scanner, &sc));
    let (rx, tx) = wake_pipe();
    nix::unistd::write(&tx, &[1]).unwrap();
    let only_woken = Woken {
        changed: false,
        woken: true,
    };
    assert_eq!(watch.wait(rx.as_fd()).unwrap(), only_woken);
    // A closed write end wakes it too (the agent's shutdown).
    drop(tx);
    let mut byte = [0u8; 1];
    assert_eq!(nix::unistd::read(&rx, &mut byte), Ok(1));
    assert_eq!(watch.wait(rx.as_fd()).unwrap(), only_woken);
    sc.shutdown().unwrap();
}

/// A scan keeps open no more tables than its budget, those of namespaces with autofs mounts
/// first; the rest are counted.
#[test]
fn a_scan_keeps_at_most_its_budget_of_tables_open() {
    // At least two mount namespaces: the machine's, and the scenario's with an autofs mount.
    let mut sc = Scenario::start_or_panic();
    sc.mount(MountSpec::indirect()).unwrap();
    let scanner = Scanner::new("/proc", "test").unwrap();
    let (scan, kept) = scanner.scan_keeping_tables(1).unwrap();
    assert_eq!(kept.tables.len(), 1);
    assert_eq!(kept.not_kept, scan.stats.mount_namespaces - 1);
    let ns = kept.tables[0].mnt_ns;
    let info = scan.namespaces.iter().find(|n| n.mnt_ns == ns).unwrap();
    assert!(info.autofs_mounts > 0, "kept {info:?}");
    let (_, none) = scanner.scan_keeping_tables(0).unwrap();
    assert!(none.tables.is_empty());
}
