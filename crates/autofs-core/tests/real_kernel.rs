//! Real-kernel tests: real autofs mounts in private mount and pid namespaces (built by
//! autofs-testkit), scanned through the host's real `/proc`. They need root and autofs and
//! fail, never skip, without them. Every scenario is torn down on drop, even on failure.

use std::time::Duration;

use autofs_core::{MountReport, MountState, Reason, Scanner};
use autofs_testkit::HANG_GUARD;
use autofs_testkit::child::Reaped;
use autofs_testkit::host_aside::HostAside;
use autofs_testkit::{AutomountSpec, Daemon, MountSpec, RequesterOutcome, Scenario};

/// Scans the host's /proc and returns the reports of the scenario's mount namespace.
fn scan_scenario(sc: &Scenario) -> Vec<MountReport> {
    let scan = Scanner::new("/proc", "test-node").unwrap().scan().unwrap();
    in_namespace(&scan, sc.mnt_ns())
        .into_iter()
        .cloned()
        .collect()
}

/// The reports of one mount namespace.
fn in_namespace(scan: &autofs_core::Scan, mnt_ns: u64) -> Vec<&MountReport> {
    scan.reports.iter().filter(|r| r.mnt_ns == mnt_ns).collect()
}

fn report_of(sc: &Scenario, mount_id: u32) -> MountReport {
    let reports = scan_scenario(sc);
    reports
        .iter()
        .find(|r| r.mount_id == mount_id)
        .cloned()
        .unwrap_or_else(|| panic!("mount {mount_id} not reported; got {reports:#?}"))
}

/// A scenario with one mount of `spec` whose live daemon closed its read end (nobody reads
/// the pipe), the daemon, and the core's report of that mount.
fn without_reader(spec: MountSpec) -> (Scenario, Daemon, MountReport) {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(spec).unwrap();
    sc.close_read(&d).unwrap();
    let r = report_of(&sc, d.mount_id);
    (sc, d, r)
}

fn assert_active_master(r: &MountReport, sc: &Scenario, d: &Daemon) {
    assert_eq!(r.state, MountState::Active, "{r:#?}");
    assert_eq!(r.reason, Reason::MasterHoldsPipe);
    assert!(r.dumpable);
    assert_eq!(r.mount_point, d.mount_point.to_str().unwrap());
    assert_eq!(r.pipe_ino, d.pipe_ino);
    assert_eq!(r.host_pgrp, d.host_pgrp);
    assert_eq!(r.read_end_pid, d.host_pid);
    assert_eq!(r.read_end_fd, d.read_fd);
    assert_eq!(
        r.owner_pid,
        sc.init_host_pid(),
        "the scenario's pid 1 owns its mount namespace"
    );
    assert_eq!(r.pending_bytes, 0);
    let entry = r.entry.unwrap();
    assert_eq!(entry.fd, d.write_fd);
    // CRIU stores the pgrp as seen from the dumped container's pid namespace.
    assert_eq!(entry.pgrp, d.vpgrp);
    assert_ne!(
        d.vpgrp, d.host_pgrp,
        "the scenario pid namespace must make them differ"
    );
    assert_eq!((entry.minproto, entry.maxproto), (5, 5));
}

#[test]
fn active_indirect_direct_and_offset_mounts_get_criu_mode_numbers() {
    let mut sc = Scenario::start_or_panic();
    let indirect = sc.mount(MountSpec::indirect()).unwrap();
    let direct = sc.mount(MountSpec::direct()).unwrap();
    let offset = sc.mount(MountSpec::offset()).unwrap();
    for (d, mode) in [(&indirect, 1), (&direct, 0), (&offset, 2)] {
        let r = report_of(&sc, d.mount_id);
        assert_active_master(&r, &sc, d);
        let entry = r.entry.unwrap();
        assert_eq!(entry.mode, mode);
        assert!(r.write_end_held);
        assert_eq!(entry.read_fd, None, "write end still held: no read_fd");
        assert_eq!((entry.uid, entry.gid, entry.timeout), (None, None, 0));
        assert!(r.message.contains("the pipe is empty"), "{}", r.message);
    }
}

#[test]
fn uid_gid_timeout_and_strictexpire_are_reported() {
    let mut sc = Scenario::start_or_panic();
    let d = sc
        .mount(
            MountSpec::indirect()
                .uid(1234)
                .gid(4321)
                .timeout(77)
                .strictexpire(),
        )
        .unwrap();
    let r = report_of(&sc, d.mount_id);
    assert_active_master(&r, &sc, &d);
    let entry = r.entry.unwrap();
    assert_eq!((entry.uid, entry.gid), (Some(1234), Some(4321)));
    assert_eq!(entry.timeout, 77);
    assert_eq!(r.timeout, 77);
    assert!(r.strictexpire);
    assert!(!r.ignore);
}

#[test]
fn daemon_that_closed_its_write_end_gets_read_fd_recorded() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::direct().close_write()).unwrap();
    let r = report_of(&sc, d.mount_id);
    assert_active_master(&r, &sc, &d);
    assert!(!r.write_end_held);
    assert_eq!(r.entry.unwrap().read_fd, Some(d.read_fd));
    assert!(r.message.contains("read_fd"), "{}", r.message);
}

/// A lookup of `key` that finds no reader fails, and the kernel makes the mount catatonic.
fn lookup_turns_catatonic(sc: &mut Scenario, d: &Daemon, key: &str) {
    let req = sc.trigger(&d.name, key).unwrap();
    let outcome = sc.wait_requester(&req, HANG_GUARD).unwrap();
    assert!(
        matches!(outcome, RequesterOutcome::Failed(_)),
        "{outcome:?}"
    );
    assert!(sc.wait_until(HANG_GUARD, |s| {
        s.mount_line(d.mount_id)
            .is_some_and(|l| l.option("fd") == Some("-1"))
    }));
}

#[test]
fn mount_becomes_catatonic_after_daemon_exit_and_a_lookup() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::direct()).unwrap();
    sc.exit_daemon(&d).unwrap();
    lookup_turns_catatonic(&mut sc, &d, "");

    let r = report_of(&sc, d.mount_id);
    assert_eq!(r.state, MountState::Catatonic, "{r:#?}");
    assert_eq!(r.reason, Reason::Catatonic);
    assert!(r.dumpable);
    let entry = r.entry.unwrap();
    assert_eq!(entry.fd, -1);
    // Catatonic mounts keep the raw pgrp (not virtualised).
    assert_eq!(entry.pgrp, d.host_pgrp);
    assert_eq!(r.pipe_ino, 0);
}

#[test]
fn a_daemon_that_keeps_the_write_end_of_its_catatonic_mount_blocks_criu_pipe_dump() {
    let mut sc = Scenario::start_or_panic();
    // The daemon closes only its read end; a lookup then finds no reader and the kernel lets
    // the pipe go (catatonic), while the daemon's write end keeps the O_DIRECT it was given.
    let d = sc.mount(MountSpec::indirect()).unwrap();
    sc.close_read(&d).unwrap();
    lookup_turns_catatonic(&mut sc, &d, "missing");
    let fdinfo =
        std::fs::read_to_string(format!("/proc/{}/fdinfo/{}", d.host_pid, d.write_fd)).unwrap();
    let flags = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .unwrap_or_else(|| panic!("{fdinfo}"));
    let o_direct = u32::try_from(nix::libc::O_DIRECT).unwrap();
    assert_ne!(flags & o_direct, 0, "{fdinfo}");

    let r = report_of(&sc, d.mount_id);
    assert_eq!(
        (r.state, r.reason, r.dumpable),
        (MountState::Catatonic, Reason::Catatonic, false),
        "{r:#?}"
    );
    let note = format!(
        "pid {} (autofs-scenario), which CRIU dumps, holds fd {} of pipe {}, in packet mode",
        d.host_pid, d.write_fd, d.pipe_ino
    );
    assert!(
        r.criu_notes.iter().any(|n| n.starts_with(&note)
            && n.ends_with("The packetized mode for pipes is not supported yet")),
        "{r:#?}"
    );
}

#[test]
fn interim_mount_reports_queued_packet_without_consuming_it() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let req = sc.make_interim(&d, "wanted-key", HANG_GUARD).unwrap();

    for _ in 0..3 {
        let r = report_of(&sc, d.mount_id);
        assert_eq!(r.state, MountState::Interim, "{r:#?}");
        assert_eq!(r.reason, Reason::PipeNotEmpty);
        assert!(!r.dumpable);
        assert_eq!((r.pending_bytes, r.pending_packets), (304, 1));
        assert_eq!(r.read_end_pid, d.host_pid);
        let expected = format!(
            "Process {} autofs pipe fd {} is not empty. Try again later.",
            d.host_pgrp, d.read_fd
        );
        assert!(r.message.starts_with(&expected), "{}", r.message);
    }

    // The daemon still gets the exact request the kernel wrote.
    let packet = sc.read_packet(&d).unwrap();
    assert_eq!(packet.raw.len(), 304);
    assert_eq!(packet.name, b"wanted-key");
    assert_eq!(packet.proto_version, 5);
    assert_eq!(
        sc.wait_requester(&req, HANG_GUARD).unwrap(),
        RequesterOutcome::Failed(libc_enoent())
    );
    assert_eq!(report_of(&sc, d.mount_id).state, MountState::Active);
}

#[test]
fn read_end_delegated_to_another_process_group_is_orphaned() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let delegate = sc.delegate(&d).unwrap();
    assert_ne!(delegate.host_pgrp, d.host_pgrp);

    let r = report_of(&sc, d.mount_id);
    assert_eq!(r.state, MountState::Orphaned, "{r:#?}");
    assert_eq!(r.reason, Reason::ReadEndDelegated);
    assert!(!r.dumpable);
    assert_eq!(r.read_end_pid, delegate.host_pid);
    assert_eq!(r.read_end_fd, delegate.read_fd);
    assert!(
        r.message.starts_with(&format!(
            "Failed to find read pipe fd (ino {}) in process {}",
            d.pipe_ino, d.host_pgrp
        )),
        "{}",
        r.message
    );
    assert!(
        r.message.contains(&format!("pid {}", delegate.host_pid)),
        "{}",
        r.message
    );
}

#[test]
fn daemon_gone_without_a_lookup_leaves_a_hidden_catatonic_mount() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    sc.exit_daemon(&d).unwrap();
    let line = sc.mount_line(d.mount_id).unwrap();
    assert_eq!(
        line.option("fd"),
        Some(d.write_fd.to_string().as_str()),
        "not catatonic yet"
    );

    let r = report_of(&sc, d.mount_id);
    assert_eq!(r.state, MountState::Orphaned, "{r:#?}");
    assert_eq!(r.reason, Reason::HiddenCatatonic);
    assert_eq!(r.read_end_pid, 0);
    assert!(r.message.contains("hidden catatonic"), "{}", r.message);
    // The daemon is gone: CRIU fails on opendir of its fd dir before any probe.
    assert!(r.criu_notes.is_empty(), "{r:#?}");
}

#[test]
fn live_leader_without_any_reader_of_a_direct_mount_is_saved_by_criu_probe() {
    // CRIU's probe (reference §3.6): the root of an uncovered direct mount is opened from the
    // owner's pid namespace; nobody reads the pipe, the kernel's write fails, the mount turns
    // catatonic and is dumped so. Predicted from /proc alone: the mount stays untouched.
    let (sc, d, r) = without_reader(MountSpec::direct());
    let criu_says = format!(
        "Master {} doesn't have a read end of the pipe with inode {} opened. Abandoned mount or control was delegated to child?",
        d.host_pgrp, d.pipe_ino
    );
    assert!(r.message.starts_with(&criu_says), "{}", r.message);
    if r.minor < 256 {
        assert_probe_made_it_catatonic(&r, &d);
        assert!(
            r.criu_notes
                .iter()
                .any(|n| n.contains("leaves this mount catatonic"))
        );
    } else {
        // CRIU's MKKDEV devid defect: OPENMOUNT finds no mount with a minor ≥ 256.
        assert_eq!(
            (r.state, r.reason),
            (MountState::Orphaned, Reason::HiddenCatatonic)
        );
        assert!(
            r.message.contains("is alive, but unreachable."),
            "{}",
            r.message
        );
    }
    // Nothing touched the mount: it is still not catatonic.
    let line = sc.mount_line(d.mount_id).unwrap();
    assert_eq!(line.option("fd"), Some(d.write_fd.to_string().as_str()));
}

#[test]
fn a_request_queued_for_a_direct_mount_nobody_reads_hangs_criu_probe() {
    // The daemon stops reading with a request queued (it died mid-request, or closed its read
    // end): the kernel keeps the request's wait until an answer or catatonic mode. CRIU's
    // probe opens the direct root from the owner's pid namespace, its lookup names the same
    // root and joins that wait instead of writing (no EPIPE, no catatonic), and CRIU's
    // waitpid on its probe child never returns: the dump hangs. Seen by hand on kernel 6.18
    // with the real automount SIGKILLed mid-request: an open of the root from the owner's pid
    // namespace blocked in autofs_wait, even after the first requester was killed.
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::direct()).unwrap();
    let req = sc.make_interim(&d, "", HANG_GUARD).unwrap();
    sc.close_read(&d).unwrap();
    let r = report_of(&sc, d.mount_id);
    let criu_says = format!(
        "Master {} doesn't have a read end of the pipe with inode {} opened. Abandoned mount or control was delegated to child?",
        d.host_pgrp, d.pipe_ino
    );
    assert!(r.message.starts_with(&criu_says), "{}", r.message);
    if r.minor < 256 {
        assert_eq!(
            (r.state, r.reason, r.dumpable),
            (MountState::Orphaned, Reason::HiddenCatatonic, false),
            "{r:#?}"
        );
        assert!(
            r.message.contains("CRIU's probe joins the pending request"),
            "{}",
            r.message
        );
        assert!(r.message.contains("the dump hangs"), "{}", r.message);
        assert_eq!((r.pending_bytes, r.pending_packets), (304, 1), "{r:#?}");
    } else {
        // CRIU's MKKDEV devid defect: its probe never reaches this mount, and fails.
        assert_eq!(
            (r.state, r.reason),
            (MountState::Orphaned, Reason::HiddenCatatonic)
        );
        assert!(
            r.message.ends_with("is alive, but unreachable."),
            "{}",
            r.message
        );
    }
    // Measured without a reader: the mount is not catatonic and the requester still waits.
    let line = sc.mount_line(d.mount_id).unwrap();
    assert_eq!(line.option("fd"), Some(d.write_fd.to_string().as_str()));
    assert_eq!(
        sc.wait_requester(&req, Duration::ZERO).unwrap(),
        RequesterOutcome::Running
    );
}

/// CRIU's probe turned the mount catatonic and it is dumped so: `fd=-1`, the raw pgrp, no
/// `read_fd` (reference §3.6).
fn assert_probe_made_it_catatonic(r: &MountReport, d: &Daemon) {
    assert_eq!(
        (r.state, r.reason, r.dumpable),
        (MountState::Catatonic, Reason::ProbeMakesCatatonic, true),
        "{r:#?}"
    );
    let entry = r.entry.as_ref().unwrap();
    assert_eq!(
        (entry.fd, entry.pgrp, entry.read_fd),
        (-1, d.host_pgrp, None)
    );
}

/// Runs `sh -c script sh args…` in the scenario's mount namespace (its propagation is
/// private: nothing reaches the host, and it all goes with the scenario).
fn in_scenario_namespace(sc: &Scenario, script: &str, args: &[&std::ffi::OsStr]) {
    let status = std::process::Command::new("nsenter")
        .args(["-t", &sc.init_host_pid().to_string(), "-m", "--"])
        .args(["sh", "-c", script, "sh"])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "nsenter sh -c {script:?}: {status}");
}

/// A report of CRIU's probe failing to make `d` catatonic: ORPHANED, not dumpable, its
/// message containing `why` (or, when the mount's minor is 256 or more, that reason, which
/// the report names before a missing `/dev/autofs` and after a covered or hidden path) and
/// ending in CRIU's `last` line; the mount left untouched.
fn assert_probe_fails(sc: &Scenario, d: &Daemon, r: &MountReport, why: &str, last: &str) {
    assert_eq!(
        (r.state, r.reason, r.dumpable),
        (MountState::Orphaned, Reason::HiddenCatatonic, false),
        "{r:#?}"
    );
    assert!(
        r.message.contains(why) || (r.minor >= 256 && r.message.contains("≥ 256")),
        "{}",
        r.message
    );
    assert!(r.message.ends_with(last), "{}", r.message);
    let line = sc.mount_line(d.mount_id).unwrap();
    assert_eq!(line.option("fd"), Some(d.write_fd.to_string().as_str()));
}

/// CRIU's last line when its probe cannot reach mount `id`.
fn unreachable(id: u32) -> String {
    format!("Autofs {id} is alive, but unreachable.")
}

#[test]
fn a_dev_autofs_that_is_not_the_autofs_device_leaves_criu_probe_unable_to_reach_the_mount() {
    let mut sc = Scenario::start_or_panic();
    // A regular file bound over /dev/autofs: CRIU opens it, and AUTOFS_DEV_IOCTL_OPENMOUNT
    // on it fails.
    let file = sc.work_dir().join("not-the-autofs-device");
    in_scenario_namespace(
        &sc,
        "touch \"$1\" && mount --bind \"$1\" /dev/autofs",
        &[file.as_os_str()],
    );
    let d = sc.mount(MountSpec::direct()).unwrap();
    sc.close_read(&d).unwrap();
    let r = report_of(&sc, d.mount_id);
    assert_probe_fails(
        &sc,
        &d,
        &r,
        "/dev/autofs is not a device",
        &unreachable(d.mount_id),
    );
}

#[test]
fn the_autofs_device_on_a_nodev_mount_leaves_criu_probe_unable_to_open_it() {
    let mut sc = Scenario::start_or_panic();
    // The real device, bound onto itself `nodev`: opening it fails (EACCES).
    in_scenario_namespace(
        &sc,
        "mount --bind /dev/autofs /dev/autofs && mount -o remount,bind,nodev /dev/autofs",
        &[],
    );
    let d = sc.mount(MountSpec::direct()).unwrap();
    sc.close_read(&d).unwrap();
    let r = report_of(&sc, d.mount_id);
    assert_probe_fails(&sc, &d, &r, "mounted nodev", &unreachable(d.mount_id));
}

#[test]
fn a_mount_on_an_ancestor_directory_leaves_criu_probe_unable_to_find_the_mount() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::direct().dir(b"above/below/m")).unwrap();
    sc.close_read(&d).unwrap();
    // A tmpfs on `above`: looking up `above/below/m` now ends in the tmpfs, where
    // AUTOFS_DEV_IOCTL_OPENMOUNT finds no autofs mount.
    let above = sc.tmpfs(b"above").unwrap();
    let r = report_of(&sc, d.mount_id);
    let why = format!("on {} hides the path to it", above.to_str().unwrap());
    assert_probe_fails(&sc, &d, &r, &why, &unreachable(d.mount_id));
}

#[test]
fn a_mount_table_line_longer_than_criu_s_buffer_fails_criu_probe_after_it_turned_the_mount_catatonic()
 {
    let mut sc = Scenario::start_or_panic();
    // A tmpfs on a path of over 1,100 bytes: its mountinfo line, before the autofs mount's,
    // is longer than the 1024-byte buffer CRIU reads the table again with (as an overlayfs
    // root with many layers is in a container).
    let deep: Vec<u8> = std::iter::repeat_n([b'x'; 200].as_slice(), 6)
        .flat_map(|component| component.iter().copied().chain([b'/']))
        .collect();
    let long = sc.tmpfs(&deep[..deep.len() - 1]).unwrap();
    assert!(long.as_os_str().len() > 1100);
    let d = sc.mount(MountSpec::direct()).unwrap();
    sc.close_read(&d).unwrap();
    // The replay of CRIU's re-read, on the table as the kernel prints it, whatever the minor.
    let table = std::fs::read(format!("/proc/{}/mountinfo", sc.init_host_pid())).unwrap();
    let err = autofs_core::revisit::revisit(&table, d.mount_id).unwrap_err();
    assert!(err.contains("1023-byte buffer"), "{err}");
    let r = report_of(&sc, d.mount_id);
    let last = if r.minor < 256 {
        format!("failed to access autofs {}", r.mount_point)
    } else {
        unreachable(d.mount_id)
    };
    assert_probe_fails(
        &sc,
        &d,
        &r,
        "reading the mount table again fails (a line",
        &last,
    );
}

#[test]
fn a_failed_reread_after_the_probe_names_the_mount_probed_even_for_the_other_mount_of_the_root() {
    // As above, and the root bound elsewhere: CRIU probes the superblock through the bind
    // (the last mount of the root in the table), so its "failed to access autofs" names the
    // bind's mount point in the verdict of both mounts.
    let mut sc = Scenario::start_or_panic();
    let deep: Vec<u8> = std::iter::repeat_n([b'y'; 200].as_slice(), 6)
        .flat_map(|component| component.iter().copied().chain([b'/']))
        .collect();
    sc.tmpfs(&deep[..deep.len() - 1]).unwrap();
    let d = sc.mount(MountSpec::direct()).unwrap();
    let bind_point = sc.work_dir().join("bind");
    let bind = sc.bind_root(&d, &bind_point).unwrap();
    sc.close_read(&d).unwrap();
    let reports = scan_scenario(&sc);
    for id in [d.mount_id, bind] {
        let r = reports
            .iter()
            .find(|r| r.mount_id == id)
            .unwrap_or_else(|| panic!("mount {id} not reported; got {reports:#?}"));
        let last = if r.minor < 256 {
            format!("failed to access autofs {}", bind_point.to_str().unwrap())
        } else {
            unreachable(bind)
        };
        assert_probe_fails(
            &sc,
            &d,
            r,
            "reading the mount table again fails (a line",
            &last,
        );
    }
}

#[test]
fn a_read_end_in_a_threads_own_fd_table_is_found_where_proc_pid_fd_does_not_show_it() {
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::mpsc;

    let mut sc = Scenario::start_or_panic();
    // The leader keeps no end at all: the write end closed after mount, the read end below.
    let d = sc.mount(MountSpec::direct().close_write()).unwrap();
    // A thread of this test with an fd table of its own (unshare(CLONE_FILES)) reopens the
    // read end: a reader that no `/proc/<pid>/fd` lists, and the only one once the leader
    // closes its own. (Opening a pipe read-only and non-blocking never waits.)
    let path = format!("/proc/{}/fd/{}", d.host_pid, d.read_fd);
    let (held, tid) = mpsc::channel();
    let (release, done) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_FILES).unwrap();
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        held.send(nix::unistd::gettid().as_raw()).unwrap();
        let _ = done.recv();
        drop(reader);
    });
    let tid = tid.recv().expect("the holder thread reopened the read end");
    sc.close_read(&d).unwrap();

    let r = report_of(&sc, d.mount_id);
    release.send(()).unwrap();
    holder.join().unwrap();
    // CRIU's probe would send its request to that reader: not the catatonic it predicts when
    // nobody reads.
    assert_eq!(
        (r.state, r.reason, r.dumpable),
        (MountState::Orphaned, Reason::ReadEndDelegated, false),
        "{r:#?}"
    );
    assert_eq!(r.read_end_pid, tid, "{r:#?}");
    let process = std::process::id();
    assert!(
        r.message.contains(&format!(
            "thread {tid} of pid {process} (in an fd table of its own)"
        )),
        "{}",
        r.message
    );
    let line = sc.mount_line(d.mount_id).unwrap();
    assert_eq!(line.option("fd"), Some(d.write_fd.to_string().as_str()));
}

#[test]
fn a_bind_of_a_directory_inside_a_mount_whose_own_mount_is_gone_is_not_dumpable() {
    let mut sc = Scenario::start_or_panic();
    // Two live daemons, each binding a directory of its mount's root elsewhere; one then
    // detaches its own mount. CRIU dumps a superblock only from a mount of its root.
    let gone = sc.mount(MountSpec::indirect()).unwrap();
    let kept = sc.mount(MountSpec::indirect()).unwrap();
    let alone = sc.work_dir().join("alone");
    let beside = sc.work_dir().join("beside");
    sc.bind_subdir(&gone, "sub", &alone, true).unwrap();
    sc.bind_subdir(&kept, "sub", &beside, false).unwrap();

    let reports = scan_scenario(&sc);
    let at = |path: &std::path::Path| {
        reports
            .iter()
            .find(|r| r.mount_point == path.to_str().unwrap())
            .unwrap_or_else(|| panic!("no report at {}: {reports:#?}", path.display()))
    };
    assert!(
        reports
            .iter()
            .all(|r| r.mount_point != gone.mount_point.to_str().unwrap()),
        "{reports:#?}"
    );
    let lone = at(&alone);
    // The daemon holds both ends of an empty pipe: the mount itself is fine.
    assert_eq!(
        (lone.state, lone.reason, lone.dumpable),
        (MountState::Active, Reason::MasterHoldsPipe, false),
        "{lone:#?}"
    );
    let note = lone
        .criu_notes
        .iter()
        .find(|n| n.contains("dump_one_fs()"))
        .unwrap_or_else(|| panic!("{lone:#?}"));
    assert!(
        note.contains("(this one shows /sub)")
            && note.ends_with(&format!(
                "Unable to dump a file system for {}:{}",
                lone.mount_id,
                alone.display()
            )),
        "{note}"
    );
    // The other superblock is still mounted from its root: dumped from there, its bind too.
    for r in [at(&beside), at(&kept.mount_point)] {
        assert_eq!((r.state, r.dumpable), (MountState::Active, true), "{r:#?}");
        assert!(r.criu_notes.is_empty(), "{r:#?}");
    }
}

/// A direct mount whose live daemon holds no read end (so CRIU probes it), its root bound onto
/// `<work dir>/bind` and a tmpfs on the root of the original (`cover_bind` false) or of the
/// bind, both made by the daemon in its process group so that nothing triggers. Returns the
/// scenario, the daemon, the bind's mount id and the reports of the original and the bind,
/// from one scan.
fn a_bound_direct_root_with_one_mount_covered(
    cover_bind: bool,
) -> (Scenario, Daemon, u32, MountReport, MountReport) {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::direct()).unwrap();
    let bind_point = sc.work_dir().join("bind");
    let bind = sc.bind_root(&d, &bind_point).unwrap();
    let covered = if cover_bind {
        &bind_point
    } else {
        &d.mount_point
    };
    sc.cover(&d, covered).unwrap();
    // Nothing triggered: no request reached the pipe while the daemon still read it.
    assert_eq!(sc.queued_bytes(&d).unwrap(), 0);
    sc.close_read(&d).unwrap();
    // CRIU's list is the mount table reversed: the bind, listed after the original, is the
    // mount of the root its dump_one_fs() reaches first.
    let table = sc.mountinfo().unwrap();
    let index = |id: u32| table.iter().position(|l| l.mount_id == id);
    assert!(
        matches!((index(d.mount_id), index(bind)), (Some(o), Some(b)) if o < b),
        "{table:#?}"
    );
    let reports = scan_scenario(&sc);
    let of = |id: u32| {
        reports
            .iter()
            .find(|r| r.mount_id == id)
            .cloned()
            .unwrap_or_else(|| panic!("mount {id} not reported; got {reports:#?}"))
    };
    let (original, bound) = (of(d.mount_id), of(bind));
    assert_eq!(bound.mount_point, bind_point.to_str().unwrap());
    (sc, d, bind, original, bound)
}

/// What both reports of [`a_bound_direct_root_with_one_mount_covered`] share whichever mount is
/// covered: CRIU's search fails first, the original names the bind as the mount CRIU dumps the
/// superblock from (the bind, probed through itself, names none), the two verdicts agree, and
/// the mount was left untouched.
fn assert_one_outcome_for_both(
    sc: &Scenario,
    d: &Daemon,
    bind: u32,
    original: &MountReport,
    bound: &MountReport,
) {
    let criu_says = format!(
        "Master {} doesn't have a read end of the pipe with inode {} opened. Abandoned mount or control was delegated to child?",
        d.host_pgrp, d.pipe_ino
    );
    for r in [original, bound] {
        assert!(r.message.starts_with(&criu_says), "{}", r.message);
    }
    let dumped_from = format!("CRIU dumps this superblock from mount {bind}, ");
    assert!(
        original
            .criu_notes
            .iter()
            .any(|n| n.starts_with(&dumped_from)),
        "{original:#?}"
    );
    assert!(
        !bound
            .criu_notes
            .iter()
            .any(|n| n.starts_with("CRIU dumps this superblock from mount")),
        "{bound:#?}"
    );
    assert_eq!(
        (
            original.state,
            original.reason,
            original.dumpable,
            original.entry
        ),
        (bound.state, bound.reason, bound.dumpable, bound.entry),
        "{original:#?}\n{bound:#?}"
    );
    for id in [d.mount_id, bind] {
        let line = sc.mount_line(id).unwrap();
        assert_eq!(line.option("fd"), Some(d.write_fd.to_string().as_str()));
    }
}

#[test]
fn a_direct_root_whose_first_mount_is_covered_is_probed_through_its_bind_for_both_mounts() {
    let (sc, d, bind, original, bound) = a_bound_direct_root_with_one_mount_covered(false);
    for r in [&original, &bound] {
        if r.minor < 256 {
            // The probe opens the bind's uncovered root: the mount turns catatonic and CRIU
            // dumps the superblock once, for both mounts.
            assert_probe_made_it_catatonic(r, &d);
        } else {
            // CRIU's MKKDEV devid defect: OPENMOUNT finds no mount with a minor ≥ 256.
            assert_probe_fails(&sc, &d, r, "≥ 256", &unreachable(bind));
        }
    }
    assert_one_outcome_for_both(&sc, &d, bind, &original, &bound);
}

#[test]
fn a_direct_root_whose_bind_is_covered_is_unreachable_for_both_mounts() {
    let (sc, d, bind, original, bound) = a_bound_direct_root_with_one_mount_covered(true);
    // CRIU probes through the bind, its open lands in the tmpfs, and the dump fails for the
    // superblock, the uncovered original included.
    for r in [&original, &bound] {
        assert_probe_fails(
            &sc,
            &d,
            r,
            "another mount covers its root, so CRIU's open lands in that mount): ",
            &unreachable(bind),
        );
    }
    assert_one_outcome_for_both(&sc, &d, bind, &original, &bound);
}

#[test]
fn live_leader_without_a_reader_of_an_indirect_mount_is_orphaned() {
    let (_sc, d, r) = without_reader(MountSpec::indirect());
    assert_eq!(
        (r.state, r.reason, r.dumpable),
        (MountState::Orphaned, Reason::HiddenCatatonic, false),
        "{r:#?}"
    );
    assert!(
        r.criu_notes
            .iter()
            .any(|n| n.contains(&format!("Autofs {} is alive, but unreachable.", d.mount_id))),
        "{r:#?}"
    );
}

#[test]
fn probe_cannot_reach_a_daemon_in_a_nested_pid_namespace() {
    // The kernel writes a request only for a requester visible in the daemon's pid
    // namespace; CRIU's child lives in the owner's, one level up.
    let (_sc, _d, r) = without_reader(MountSpec::direct().nested_pidns());
    assert_eq!(
        (r.state, r.reason, r.dumpable),
        (MountState::Orphaned, Reason::HiddenCatatonic, false),
        "{r:#?}"
    );
    assert!(
        r.message.contains("is alive, but unreachable."),
        "{}",
        r.message
    );
    if r.minor < 256 {
        assert!(r.message.contains("nested below"), "{}", r.message);
    }
}

#[test]
fn mount_points_that_are_not_utf8_keep_their_bytes_and_hide_nothing() {
    let mut sc = Scenario::start_or_panic();
    // An ordinary mount with a Latin-1 name next to the autofs mounts, and autofs mounts
    // named in Latin-1 and with a UTF-8 character cut in half.
    sc.tmpfs(b"caf\xe9").unwrap();
    let latin1 = sc
        .mount(MountSpec::indirect().dir(b"auto-caf\xe9"))
        .unwrap();
    let cut = sc.mount(MountSpec::direct().dir(b"d\xc3")).unwrap();
    let plain = sc.mount(MountSpec::indirect()).unwrap();
    let reports = scan_scenario(&sc);
    assert_eq!(reports.len(), 3, "{reports:#?}");
    for d in [&latin1, &cut, &plain] {
        let r = report_of(&sc, d.mount_id);
        assert_eq!(
            (r.state, r.reason, r.dumpable),
            (MountState::Active, Reason::MasterHoldsPipe, true),
            "{r:#?}"
        );
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(d.mount_point.as_os_str());
        assert_eq!(r.mount_point_bytes, bytes);
        assert_eq!(r.mount_point, autofs_core::escape::escape(bytes));
        assert_eq!(
            autofs_core::escape::unescape(&r.mount_point).unwrap(),
            bytes
        );
    }
    assert!(
        report_of(&sc, latin1.mount_id)
            .mount_point
            .ends_with("/auto-caf\\xe9")
    );
    assert!(
        report_of(&sc, cut.mount_id)
            .mount_point
            .ends_with("/d\\xc3")
    );
}

#[test]
fn copy_of_a_mount_in_a_host_pid_container_is_orphaned_master_outside_the_tree() {
    // A `--pid=host` container (own mount namespace, shared pid namespace) that carries a
    // copy of a mount served by a daemon that is none of its processes: CRIU dumping the
    // container finds no pstree item for the master.
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::direct().close_write()).unwrap();
    // The container's process: of the host's pid namespace (this test's), in a copy of the
    // scenario's mount namespace.
    let c = host_pid_member(&sc);
    let scan = Scanner::new("/proc", "test-node").unwrap().scan().unwrap();
    let own = scan
        .reports
        .iter()
        .find(|r| r.mnt_ns == sc.mnt_ns() && r.mount_id == d.mount_id)
        .expect("the daemon's own mount is reported");
    assert_eq!(own.state, MountState::Active, "{own:#?}");
    let copies: Vec<_> = in_namespace(&scan, c.mnt_ns);
    assert_eq!(copies.len(), 1, "{copies:#?}");
    let copy = copies[0];
    assert_eq!(copy.mount_point_bytes, own.mount_point_bytes);
    assert_eq!(copy.owner_pid, c.pid);
    assert_eq!(
        (copy.state, copy.reason, copy.dumpable),
        (MountState::Orphaned, Reason::MasterOutsideTree, false),
        "{copy:#?}"
    );
    assert!(
        copy.message.starts_with(&format!(
            "failed to find pstree item with pid {}. Non-catatonic mount without master?",
            d.host_pgrp
        )),
        "{}",
        copy.message
    );
    assert!(
        copy.message
            .contains(&format!("CRIU dumps the tree rooted at pid {}", c.pid)),
        "{}",
        copy.message
    );
    // The entry keeps the raw pgrp: it is not translated into a tree it is not part of.
    assert_eq!(copy.entry.unwrap().pgrp, d.host_pgrp);
}

#[test]
fn a_master_re_parented_out_of_its_owners_tree_is_outside_the_tree_for_a_kept_scanner_too() {
    // owner → middle → daemon of the host's pid namespace in a mount namespace of the owner's
    // (a `--pid=host` container). The middle process exits: the kernel re-parents the daemon
    // outside the owner's tree, the one CRIU dumps for that namespace.
    let sc = Scenario::start_or_panic();
    let mut aside = HostAside::start(&sc, "aside").unwrap();
    let mnt_ns = aside.mnt_ns;
    let report = |scan: &autofs_core::Scan| -> MountReport {
        let mine = in_namespace(scan, mnt_ns);
        assert_eq!(mine.len(), 1, "{mine:#?}");
        mine[0].clone()
    };
    let kept = Scanner::new("/proc", "test-node").unwrap();
    let before = kept.scan().unwrap();
    let r = report(&before);
    assert_eq!(
        (
            r.state,
            r.reason,
            r.dumpable,
            r.owner_pid,
            r.read_end_pid,
            r.mount_id
        ),
        (
            MountState::Active,
            Reason::MasterHoldsPipe,
            true,
            aside.owner,
            aside.daemon,
            aside.mount_id
        ),
        "{r:#?}"
    );
    // The processes a re-parenting would start from: the chain above the leader.
    for pid in [aside.middle, aside.owner] {
        assert!(
            before.tree_paths.contains(&pid),
            "{pid} not in {:?}",
            before.tree_paths
        );
    }

    aside.kill_middle().unwrap();
    for (who, scan) in [
        ("a kept scanner", kept.scan().unwrap()),
        (
            "a fresh scanner",
            Scanner::new("/proc", "test-node").unwrap().scan().unwrap(),
        ),
    ] {
        let r = report(&scan);
        assert_eq!(
            (r.state, r.reason, r.dumpable, r.owner_pid),
            (
                MountState::Orphaned,
                Reason::MasterOutsideTree,
                false,
                aside.owner
            ),
            "{who}: {r:#?}"
        );
        assert!(
            r.message.contains(&format!(
                "CRIU dumps the tree rooted at pid {}",
                aside.owner
            )),
            "{who}: {}",
            r.message
        );
    }
}

#[test]
fn a_namespace_made_inside_a_container_is_dumped_with_its_init() {
    // The scenario plays a container with a pid namespace of its own. Mount namespaces made
    // below its init (a copy of the init's, with the copy of a mount its daemon serves; and
    // owner → middle → daemon, the daemon's mount only there) are dumped with the init's tree:
    // the init owns them, both masters are in the tree, and the workload of the init's pid
    // includes them.
    let mut sc = Scenario::start_or_panic();
    let served = sc.mount(MountSpec::indirect()).unwrap();
    let copy = sc.ns_member(None, false).unwrap();
    let d = sc.mount(MountSpec::indirect().aside()).unwrap();
    let aside = d.aside.unwrap();
    let root = autofs_core::ProcRoot::open("/proc").unwrap();
    let workload = autofs_core::selector::Workload::of_pid(&root, sc.init_host_pid()).unwrap();
    let kept = Scanner::new("/proc", "test-node").unwrap();
    for moment in ["before", "after the middle process died"] {
        if moment != "before" {
            // In a container the daemon is re-parented to the init: still in the tree.
            sc.kill(&format!("{}.middle", d.name), 9, true).unwrap();
        }
        let scan = kept.scan().unwrap();
        // (A copy has a mount id of its own namespace's.)
        for (mnt_ns, point) in [
            (copy.mnt_ns, &served.mount_point),
            (aside.mnt_ns, &d.mount_point),
        ] {
            let mine = in_namespace(&scan, mnt_ns);
            let r = mine
                .iter()
                .find(|r| r.mount_point_bytes == point.as_os_str().as_encoded_bytes())
                .unwrap_or_else(|| panic!("{moment}: {} not in {mine:#?}", point.display()));
            assert_eq!(
                (r.state, r.reason, r.dumpable, r.owner_pid),
                (
                    MountState::Active,
                    Reason::MasterHoldsPipe,
                    true,
                    sc.init_host_pid()
                ),
                "{moment}: {r:#?}"
            );
        }
        let check = workload.check(&scan).unwrap();
        assert_eq!(
            (check.mounts_checked, check.dumpable()),
            (4, true),
            "{moment}: the init's mount, its copies in both namespaces made below the init, and the aside mount"
        );
    }
    // The aside daemon stops reading: its mount blocks the whole workload of the init's pid,
    // although the init's own namespace has nothing blocking.
    sc.close_read(&d).unwrap();
    let scan = kept.scan().unwrap();
    let check = workload.check(&scan).unwrap();
    let blocking: Vec<(u64, u32)> = check
        .blocking
        .iter()
        .map(|&i| (scan.reports[i].mnt_ns, scan.reports[i].mount_id))
        .collect();
    assert_eq!(blocking, [(aside.mnt_ns, d.mount_id)], "{check:#?}");
    assert!(!check.dumpable());
}

/// A process of the host's pid namespace (this test's) in a copy of the scenario's mount
/// namespace: a `--pid=host` container's process.
struct HostPidMember {
    pid: i32,
    mnt_ns: u64,
    _process: Reaped,
}

fn host_pid_member(sc: &Scenario) -> HostPidMember {
    let mut cmd = std::process::Command::new("nsenter");
    cmd.args(["-t", &sc.init_host_pid().to_string(), "-m", "--"])
        .args([
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sleep",
            "600",
        ]);
    let process = Reaped(autofs_testkit::child::spawn_detached(cmd).unwrap());
    let pid = i32::try_from(process.0.id()).unwrap();
    // Once it runs `sleep`, `unshare` has made the namespace.
    assert!(
        autofs_testkit::wait_until(HANG_GUARD, || std::fs::read_link(format!(
            "/proc/{pid}/exe"
        ))
        .is_ok_and(|exe| exe.ends_with("sleep"))),
        "pid {pid} did not reach a mount namespace of its own"
    );
    let mnt_ns = autofs_testkit::procfs::ns_inode(pid, "mnt").unwrap();
    assert_ne!(mnt_ns, sc.mnt_ns());
    HostPidMember {
        pid,
        mnt_ns,
        _process: process,
    }
}

#[test]
fn a_host_process_joining_a_namespace_later_does_not_take_it_over() {
    // The scenario's processes live in a pid namespace of their own (a container's), and the
    // namespace was made below its init. An operator's `nsenter --mount` from the host is a
    // root of the namespace's process forest too, in a shallower pid namespace, and came later:
    // it must not become the owner (the namespace's container and pod, and the tree CRIU
    // dumps, come from the owner), the container's init stays it.
    let mut sc = Scenario::start_or_panic();
    sc.mount(MountSpec::indirect()).unwrap();
    let c = sc.ns_member(None, false).unwrap();
    // Start times count clock ticks (10 ms): let one pass, so that the newcomer is newer.
    std::thread::sleep(Duration::from_millis(30));
    let mut nsenter = std::process::Command::new("nsenter");
    nsenter.args(["-t", &c.owner_host_pid.to_string(), "-m", "sleep", "600"]);
    let joined = Reaped(autofs_testkit::child::spawn_detached(nsenter).unwrap());
    let pid = i32::try_from(joined.0.id()).unwrap();
    assert!(
        autofs_testkit::wait_until(HANG_GUARD, || {
            autofs_testkit::procfs::ns_inode(pid, "mnt").ok() == Some(c.mnt_ns)
        }),
        "nsenter did not join mount namespace {}",
        c.mnt_ns
    );
    let scan = Scanner::new("/proc", "test-node").unwrap().scan().unwrap();
    let copies = in_namespace(&scan, c.mnt_ns);
    assert_eq!(copies.len(), 1, "{copies:#?}");
    assert_eq!(
        copies[0].owner_pid,
        sc.init_host_pid(),
        "the host process {pid} took the namespace over from the container's init: {:#?}",
        copies[0]
    );
}

#[test]
fn a_chrooted_owner_does_not_hide_the_mounts_outside_its_root() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    // The owner (lowest pid) chroots into an empty directory; its mountinfo shows only what
    // is below it. Its child is not chrooted and sees the whole table.
    let c = sc.ns_member(Some(b"jail"), false).unwrap();
    let scan = Scanner::new("/proc", "test-node").unwrap().scan().unwrap();
    let copies: Vec<_> = in_namespace(&scan, c.mnt_ns);
    assert_eq!(copies.len(), 1, "{copies:#?}");
    assert_eq!(
        copies[0].mount_point_bytes,
        d.mount_point.as_os_str().as_encoded_bytes()
    );
    assert_ne!(copies[0].reason, Reason::MountTableUnreadable);
}

#[test]
fn a_namespace_without_a_complete_view_is_an_error_never_an_empty_table() {
    let mut sc = Scenario::start_or_panic();
    sc.mount(MountSpec::indirect()).unwrap();
    let c = sc.ns_member(Some(b"jail"), true).unwrap();
    let scan = Scanner::new("/proc", "test-node").unwrap().scan().unwrap();
    let reports: Vec<_> = in_namespace(&scan, c.mnt_ns);
    assert_eq!(reports.len(), 1, "{reports:#?}");
    let r = reports[0];
    assert_eq!(
        (r.state, r.reason, r.mount_id, r.dumpable),
        (MountState::Error, Reason::MountTableUnreadable, 0, false),
        "{r:#?}"
    );
    assert!(r.message.contains("chrooted"), "{}", r.message);
    let ns = scan
        .namespaces
        .iter()
        .find(|n| n.mnt_ns == c.mnt_ns)
        .unwrap();
    assert!(ns.mount_table_error.is_some());
}

#[test]
fn daemon_in_a_nested_pid_namespace_gets_its_pgrp_in_the_owners_namespace_and_fails_criu_s_namespace_dump()
 {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect().nested_pidns()).unwrap();
    assert_eq!(d.nspid.len(), 3, "{d:#?}");
    let r = report_of(&sc, d.mount_id);
    // The mount is healthy, but CRIU dumps the root task's pid namespace only (a real CRIU
    // fails so: crates/autofs-agent/tests/real_criu.rs).
    assert!(!r.dumpable, "{r:#?}");
    assert!(
        r.criu_notes
            .iter()
            .any(|n| n.contains("Can't dump nested pid namespace for")),
        "{r:#?}"
    );
    assert_active_master(
        &MountReport {
            dumpable: true,
            ..r.clone()
        },
        &sc,
        &d,
    );
    let entry = r.entry.unwrap();
    // The scenario's init owns the mount namespace: its pid namespace is the middle level.
    assert_eq!(entry.pgrp, d.nspid[1]);
    assert_ne!(entry.pgrp, d.ns_pgrp);
}

#[test]
fn real_automount_daemon_is_active_then_orphaned_after_kill_9() {
    let mut sc = Scenario::start_or_panic();
    let a = sc.start_automount(AutomountSpec::default()).unwrap();
    let r = report_of(&sc, a.mount_id);
    assert_eq!(
        r.state,
        MountState::Active,
        "{r:#?}\nlog: {:?}",
        sc.read_file(&a.log)
    );
    assert_eq!(r.host_pgrp, a.host_pgrp);
    assert_eq!(r.read_end_pid, a.host_pid);
    assert_eq!(r.entry.unwrap().pgrp, a.vpgrp);
    assert_eq!(r.entry.unwrap().mode, 1);
    assert_eq!(r.timeout, 60);

    sc.kill(&a.name, 9, true).unwrap();
    let r = report_of(&sc, a.mount_id);
    assert_eq!(r.state, MountState::Orphaned, "{r:#?}");
    assert_eq!(r.reason, Reason::HiddenCatatonic);
    assert!(!r.dumpable);
}

#[test]
fn real_automount_restarted_after_kill_9_takes_its_mount_back() {
    // `systemctl restart autofs` after a crash: the new daemon finds its mount, makes it
    // catatonic and gives it a pipe of its own (AUTOFS_DEV_IOCTL_SETPIPEFD): same mount, new
    // pipe, new pgrp; CRIU can dump it again.
    let mut sc = Scenario::start_or_panic();
    let a = sc.start_automount(AutomountSpec::default()).unwrap();
    let first = report_of(&sc, a.mount_id);
    assert_eq!(first.state, MountState::Active, "{first:#?}");
    sc.kill(&a.name, 9, true).unwrap();
    let dead = report_of(&sc, a.mount_id);
    assert_eq!(
        (dead.state, dead.reason),
        (MountState::Orphaned, Reason::HiddenCatatonic),
        "{dead:#?}"
    );

    let b = sc.restart_automount(&a).unwrap();
    assert_eq!(b.mount_id, a.mount_id, "the same mount, taken over");
    assert_ne!(b.host_pid, a.host_pid);
    let r = report_of(&sc, a.mount_id);
    assert_eq!(
        (r.state, r.reason, r.dumpable),
        (MountState::Active, Reason::MasterHoldsPipe, true),
        "{r:#?}\nlog: {:?}",
        sc.read_file(&b.log)
    );
    assert_ne!(
        r.pipe_ino, first.pipe_ino,
        "SETPIPEFD gives it the new daemon's pipe"
    );
    assert_eq!(r.host_pgrp, b.host_pgrp);
    assert_eq!(r.read_end_pid, b.host_pid);
    let entry = r.entry.unwrap();
    assert_eq!(entry.pgrp, b.vpgrp);
    assert_eq!(entry.timeout, 60);
    // fd= is the new daemon's fd number, which it holds as its write end.
    assert!(r.write_end_held, "{r:#?}");
    assert!(r.options.contains(&format!("fd={},", entry.fd)), "{r:#?}");
}

fn libc_enoent() -> i32 {
    nix::errno::Errno::ENOENT as i32
}

#[test]
fn repeated_scans_find_orphan_holders_without_listing_every_fd_again() {
    let mut sc = Scenario::start_or_panic();
    let delegated = sc.mount(MountSpec::indirect()).unwrap();
    let holder = sc.delegate(&delegated).unwrap();
    let hidden = sc.mount(MountSpec::indirect()).unwrap();
    sc.close_read(&hidden).unwrap();
    let scanner = Scanner::new("/proc", "test-node").unwrap();
    let first = scanner.scan().unwrap();
    let second = scanner.scan().unwrap();
    let mine = |scan: &autofs_core::Scan, id: u32| {
        scan.reports
            .iter()
            .find(|r| r.mnt_ns == sc.mnt_ns() && r.mount_id == id)
            .cloned()
            .unwrap()
    };
    for scan in [&first, &second] {
        let d = mine(scan, delegated.mount_id);
        assert_eq!(d.reason, Reason::ReadEndDelegated, "{d:#?}");
        assert_eq!(d.read_end_pid, holder.host_pid);
        // The kernel's reader count proves nobody reads the other pipe: no search needed.
        let h = mine(scan, hidden.mount_id);
        assert_eq!(h.reason, Reason::HiddenCatatonic, "{h:#?}");
    }
    // Only the first scan looked for the delegate among all processes (other tests' pipes
    // may need a census of their own, so the count is of this scenario's pipe).
    assert!(first.stats.census_pipes >= 1, "{:?}", first.stats);
    assert_eq!(
        mine(&first, delegated.mount_id),
        mine(&second, delegated.mount_id)
    );
}

#[test]
fn a_leaders_whole_table_is_listed_with_its_write_end_beyond_the_read_end() {
    use std::collections::{BTreeMap, HashSet};

    use autofs_core::ProcRoot;
    use autofs_core::pipes::PipeIndex;

    let mut sc = Scenario::start_or_panic();
    // The write end renumbered far above the read end, as CRIU's search meets them.
    let d = sc.mount(MountSpec::indirect().write_fd(200)).unwrap();
    assert!(d.read_fd < d.write_fd, "{d:#?}");
    let root = ProcRoot::open("/proc").unwrap();
    assert!(root.is_procfs());
    let leaders = BTreeMap::from([(d.host_pgrp, vec![(d.pipe_ino, d.write_fd)])]);
    let mut index = PipeIndex::default();
    index.scan_leaders(&root, &leaders, &HashSet::from([d.pipe_ino]));
    let ends: Vec<_> = index
        .ends(d.pipe_ino)
        .iter()
        .map(|e| (e.pid, e.fd))
        .collect();
    assert_eq!(ends, [(d.host_pid, d.read_fd), (d.host_pid, d.write_fd)]);
    assert!(index.ends(d.pipe_ino)[0].is_read_end());
    assert!(index.ends(d.pipe_ino)[1].is_write_end());
    let listed = std::fs::read_dir(format!("/proc/{}/fd", d.host_pid))
        .unwrap()
        .count();
    assert_eq!(index.fds_seen(), listed, "the whole table is listed");
    // Its write end is in packet mode, but the mount shows the pipe: no leftover.
    assert_eq!(index.leader_packet_mode_ends(d.host_pid), Some(&Ok(vec![])));

    // The scan's verdict is the one a complete listing gives.
    let r = report_of(&sc, d.mount_id);
    assert_active_master(&r, &sc, &d);
    assert!(r.write_end_held, "{r:#?}");
    assert_eq!(r.entry.unwrap().read_fd, None);
}

/// The scenario's namespace in one scan: its reports and its entry of `namespaces`.
fn scenario_view(
    scan: &autofs_core::Scan,
    mnt_ns: u64,
) -> (Vec<MountReport>, autofs_core::NamespaceInfo) {
    let reports = in_namespace(scan, mnt_ns).into_iter().cloned().collect();
    let ns = scan
        .namespaces
        .iter()
        .find(|n| n.mnt_ns == mnt_ns)
        .cloned()
        .expect("the scenario's namespace is listed");
    (reports, ns)
}

#[test]
fn a_scanner_kept_across_scans_answers_as_a_fresh_one_while_processes_come_and_go() {
    use std::process::{Command, Stdio};

    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::direct()).unwrap();
    let kept = Scanner::new("/proc", "test-node").unwrap();
    let mut joined = Vec::new();
    let check = |kept: &Scanner, step: &str| {
        let remembered = scenario_view(&kept.scan().unwrap(), sc.mnt_ns());
        let fresh = scenario_view(
            &Scanner::new("/proc", "test-node").unwrap().scan().unwrap(),
            sc.mnt_ns(),
        );
        assert_eq!(remembered, fresh, "{step}");
        assert_eq!(remembered.1.owner_pid, sc.init_host_pid(), "{step}");
        assert_eq!(remembered.0.len(), 1, "{step}");
        assert_eq!(remembered.0[0].mount_id, d.mount_id);
    };
    let root = autofs_core::ProcRoot::open("/proc").unwrap();
    let members = || -> Vec<i32> {
        root.pids()
            .unwrap()
            .into_iter()
            .filter(|&p| root.mount_namespace(p).ok() == Some(sc.mnt_ns()))
            .collect()
    };
    let before = members();
    check(&kept, "first scan");
    check(&kept, "unchanged");
    // Processes join the namespace from outside (`docker exec`): roots of their own, younger
    // than the scenario's init, and one with a pid-namespace init below it.
    let target = sc.init_host_pid().to_string();
    for args in [
        &["sleep", "infinity"][..],
        &[
            "unshare",
            "--pid",
            "--fork",
            "--kill-child",
            "sleep",
            "infinity",
        ][..],
    ] {
        let child = Command::new("nsenter")
            .args(["--target", &target, "--mount", "--"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        joined.push(child);
    }
    // Both have joined, and so has the init `unshare --fork` forks below the second: three new
    // members. Until then the kept and the fresh scan could list different members.
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while !(joined
        .iter()
        .all(|c| root.mount_namespace(i32::try_from(c.id()).unwrap()).ok() == Some(sc.mnt_ns()))
        && members().len() == before.len() + 3)
    {
        assert!(std::time::Instant::now() < deadline, "nsenter never joined");
        std::thread::sleep(Duration::from_millis(10));
    }
    check(&kept, "two roots joined");
    check(&kept, "two roots joined, unchanged");
    for mut child in joined {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    // `--kill-child` kills the init below; wait until it has left the namespace too.
    while members() != before {
        assert!(
            std::time::Instant::now() < deadline,
            "the joined processes never left"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    check(&kept, "the joined roots exited");
}

#[test]
fn a_thread_in_a_mount_namespace_of_its_own_is_named_not_taken_for_gone() {
    use std::sync::mpsc;

    use autofs_core::ProcRoot;
    use autofs_core::selector::{SelectError, SelectErrorKind, mount_namespace_of};

    // A thread of this test in a mount namespace of its own (it mounts nothing; the
    // namespace goes with the thread), and one that shares the process's.
    let (tids, tid) = mpsc::channel();
    let (release, done) = mpsc::channel::<()>();
    let done = std::sync::Arc::new(std::sync::Mutex::new(done));
    let spawn = |unshare: bool| {
        let tids = tids.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            if unshare {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
            }
            tids.send(nix::unistd::gettid().as_raw()).unwrap();
            let _ = done.lock().unwrap().recv();
        })
    };
    let own = spawn(true);
    let own_tid = tid.recv().expect("the thread unshared its mount namespace");
    let shared = spawn(false);
    let shared_tid = tid.recv().unwrap();

    let root = ProcRoot::open("/proc").unwrap();
    let pid = i32::try_from(std::process::id()).unwrap();
    let of_own = mount_namespace_of(&root, own_tid);
    let of_shared = mount_namespace_of(&root, shared_tid);
    let of_process = mount_namespace_of(&root, pid).unwrap();
    for _ in 0..2 {
        release.send(()).unwrap();
    }
    own.join().unwrap();
    shared.join().unwrap();

    let err = of_own.unwrap_err();
    assert!(
        matches!(err, SelectError::ThreadNamespace { pid: p, tgid, mnt_ns }
            if p == own_tid && tgid == pid && mnt_ns != of_process),
        "{err:?}"
    );
    assert_eq!(
        err.kind(),
        SelectErrorKind::Unreadable,
        "could not see, not gone"
    );
    assert_eq!(of_shared.unwrap(), of_process);
}

#[test]
fn a_minproto_the_kernel_shows_as_int_min_is_an_option_criu_does_not_find() {
    // The kernel keeps minproto in an int: minproto=2147483648 shows as -2147483648, which
    // is INT_MIN, CRIU's marker for an option its parse_options() has not seen.
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::direct().minproto(1 << 31)).unwrap();
    let line = sc.mount_line(d.mount_id).unwrap();
    assert_eq!(line.option("minproto"), Some("-2147483648"), "{line:?}");
    let r = report_of(&sc, d.mount_id);
    assert_eq!(
        (r.state, r.reason, r.dumpable),
        (MountState::Unsupported, Reason::OptionOutOfIntRange, false),
        "{r:#?}"
    );
    assert!(
        r.message.starts_with("Failed to find minproto option"),
        "{}",
        r.message
    );
    assert_eq!(r.entry, None, "CRIU writes no entry");
}

#[test]
fn a_raw_uid_beyond_int_fails_criu_s_parse_after_its_probe_not_its_probe() {
    // CRIU's probe turns the mount catatonic and finds its line again; then its parse of the
    // raw options (no sscanf("%d") rewrite this time) refuses uid=2147483648 with xatoi's
    // message. The probe itself did not fail: no "failed to access autofs".
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::direct().uid(1 << 31)).unwrap();
    sc.close_read(&d).unwrap();
    let r = report_of(&sc, d.mount_id);
    let last = if r.minor < 256 {
        "uid=2147483648: value 0x80000000 (2147483648) is out of int range".to_owned()
    } else {
        unreachable(d.mount_id)
    };
    assert_probe_fails(&sc, &d, &r, "CRIU's probe", &last);
    assert!(
        !r.message.contains("failed to access autofs"),
        "{}",
        r.message
    );
}

#[test]
fn a_uid_or_gid_criu_reads_as_int_min_is_left_out_of_the_entry() {
    // uid=2147483648 (host id 2^31): CRIU's sscanf("%d") makes it INT_MIN, its marker for an
    // option not seen, so has_uid stays false; gid=2147483649 is recorded wrapped.
    let mut sc = Scenario::start_or_panic();
    let d = sc
        .mount(MountSpec::indirect().uid(1 << 31).gid((1 << 31) + 1))
        .unwrap();
    let line = sc.mount_line(d.mount_id).unwrap();
    assert_eq!(line.option("uid"), Some("2147483648"), "{line:?}");
    let r = report_of(&sc, d.mount_id);
    assert_active_master(&r, &sc, &d);
    let entry = r.entry.unwrap();
    assert_eq!((entry.uid, entry.gid), (None, Some(-2_147_483_647)));
    assert!(
        r.criu_notes
            .iter()
            .any(|n| n.starts_with("uid=2147483648: ") && n.contains("records no uid")),
        "{:?}",
        r.criu_notes
    );
}

#[test]
fn an_external_bind_of_a_mount_served_from_outside_the_container_does_not_block() {
    // The host (the scenario) serves an autofs mount and binds a directory inside it
    // elsewhere; a container (new mount and pid namespaces) gets copies of both, as a pod gets
    // a hostPath volume. The master is outside the container: both copies are ORPHANED for a
    // bare `criu dump`, but CRIU skips the mounts runc names external (--external mnt[PATH]).
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let sub = sc.work_dir().join("sub-bind");
    sc.bind_subdir(&d, "sub", &sub, false).unwrap();
    let c = autofs_testkit::container::Container::start(&sc).unwrap();
    let root = autofs_core::ProcRoot::open("/proc").unwrap();
    let workload = autofs_core::selector::Workload::of_pid(&root, c.pid).unwrap();
    let scan = Scanner::new("/proc", "test-node").unwrap().scan().unwrap();
    let point = |i: &usize| scan.reports[*i].mount_point.clone();
    let (whole, part) = (
        d.mount_point.to_str().unwrap().to_owned(),
        sub.to_str().unwrap().to_owned(),
    );
    let copies = in_namespace(&scan, c.mnt_ns);
    assert_eq!(copies.len(), 2, "{copies:#?}");
    for r in &copies {
        assert_eq!(
            (r.state, r.dumpable, r.blocks_when_external),
            (MountState::Orphaned, false, false),
            "{r:#?}"
        );
        let root = if r.mount_point == whole { "/" } else { "/sub" };
        assert_eq!(r.root, root, "{r:#?}");
    }

    // A bare dump, and external paths naming no mount of the container: blocked.
    for paths in [&[][..], &["/no/such/mount"][..]] {
        let check = workload
            .clone()
            .with_external_mounts(paths)
            .unwrap()
            .check(&scan)
            .unwrap();
        let mut blocking: Vec<String> = check.blocking.iter().map(point).collect();
        blocking.sort();
        assert_eq!(blocking, [whole.clone(), part.clone()], "{paths:?}");
        assert!(check.external.is_empty());
        assert_eq!(
            check.outcome(),
            autofs_core::selector::Outcome::WillNotClear
        );
    }
    // The whole mount external: the bind of a directory inside it is an external bind too.
    let check = workload
        .clone()
        .with_external_mounts([whole.as_str()])
        .unwrap()
        .check(&scan)
        .unwrap();
    assert!(check.dumpable(), "{check:?}");
    let mut skipped: Vec<String> = check.external.iter().map(point).collect();
    skipped.sort();
    assert_eq!(skipped, [whole.clone(), part.clone()]);
    assert_eq!(check.mounts_checked, 2);
    // Only the bind of the directory external: the mount of the root is no bind of it (its
    // root "/" is not under "/sub") and still blocks.
    let check = workload
        .clone()
        .with_external_mounts([part.as_str()])
        .unwrap()
        .check(&scan)
        .unwrap();
    assert_eq!(
        check.blocking.iter().map(point).collect::<Vec<_>>(),
        [whole.as_str()]
    );
    assert_eq!(
        check.external.iter().map(point).collect::<Vec<_>>(),
        [part.as_str()]
    );
    assert!(!check.dumpable());
    // The host's own mounts, where the master lives, are dumpable with or without externals.
    let host = in_namespace(&scan, sc.mnt_ns());
    assert!(host.iter().all(|r| r.dumpable), "{host:#?}");

    // A request queued in the daemon's pipe: its requester may wait inside the container (here
    // it does not, but /proc cannot tell without reading the pipe), and CRIU's freeze fails on
    // such a one before it skips any mount. External or not, the mount blocks until it drains.
    let _requester = sc.make_interim(&d, "k", HANG_GUARD).unwrap();
    let scan = Scanner::new("/proc", "test-node").unwrap().scan().unwrap();
    let point = |i: &usize| scan.reports[*i].mount_point.clone();
    let check = workload
        .clone()
        .with_external_mounts([whole.as_str()])
        .unwrap()
        .check(&scan)
        .unwrap();
    let mut blocking: Vec<String> = check.blocking.iter().map(point).collect();
    blocking.sort();
    assert_eq!(blocking, [whole.clone(), part.clone()], "{check:?}");
    assert!(check.external.is_empty(), "{check:?}");
    assert_eq!(check.outcome(), autofs_core::selector::Outcome::Waiting);
    drop(c);
}
