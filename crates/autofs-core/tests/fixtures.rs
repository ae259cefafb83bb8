//! Scans of fake proc trees (tests/fixtures/proc/<case>/, built by
//! tests/fixtures/make_proc_trees.py and committed) checked two ways: against a golden
//! `expected.jsonl` (one `serde_json::to_string(&report)` per line, as the CLI prints them), and
//! with explicit assertions of the facts the spec (reference/criu-autofs-spec.md §3, §7.2)
//! demands — a golden alone could bless a wrong answer.
//!
//! `UPDATE_GOLDEN=1 cargo nextest run -p autofs-core --test fixtures` rewrites the goldens (the
//! explicit assertions still run). In goldens the fixture's absolute path is written as `/proc`,
//! so they read like real output and do not depend on the checkout location.
//!
//! Queued bytes come from the case's `queues.json` (`{"<ino>": bytes}`, or a string to make the
//! probe fail with that message). Like the real probe, the table probe insists that the fd link
//! it is given still points to `pipe:[ino]`.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use autofs_core::mountinfo::{MountInfo, MountLine, looks_like_autofs, unescape};
use autofs_core::options::AutofsOptions;
use autofs_core::process::ProcessInfo;
use autofs_core::{AutofsEntry, Error, MountReport, MountState, Reason, Scan, Scanner};

const NODE: &str = "fixture-node";
const HOST_MNT: u64 = 4026531841;
const CONTAINER_MNT: u64 = 4026532400;
const DOCKER_ID: &str = "9d2c7a1f4e8b3c6d5a0f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e5f4a3";
const CONTAINERD_ID: &str = "4f1c2a9be0d3c7f8a6b5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3";
const POD_UID: &str = "7c0a1e2f-3b4d-4c5e-8f9a-0b1c2d3e4f5a";

/// Every case directory; `every_fixture_directory_has_a_test` keeps this list honest.
const CASES: &[&str] = &[
    "active_direct_write_end_closed",
    "active_indirect",
    "catatonic_daemon_keeps_its_write_end",
    "catatonic_group_member_keeps_the_write_end",
    "catatonic_keeps_raw_pgrp",
    "chrooted_members",
    "criu_probe_of_direct_mounts",
    "escaped_mount_point",
    "hidden_catatonic_daemon_gone",
    "hidden_catatonic_leader_alive",
    "host_pid_container_master_outside_tree",
    "interim_v4",
    "interim_v5",
    "malformed_mountinfo_line",
    "malformed_options",
    "master_outside_pid_ns",
    "names_that_are_not_utf8",
    "nested_pid_ns_daemon",
    "no_autofs_mounts",
    "numbers_criu_parses_differently",
    "offset_mount_options",
    "orphaned_leader_gone",
    "orphaned_read_end_delegated",
    "pgrp_names_a_thread",
    "pgrp_translated_into_container",
    "pgrp_zero_not_visible",
    "pid1_hidden_daemon_missing",
    "pipe_ino_above_int_max",
    "pipe_ino_above_uint32_max",
    "processes_vanishing",
    "queue_probe_failure",
    "shared_pod_pid_namespace",
    "superblock_without_a_root_mount",
    "two_mount_namespaces",
    "unreachable_probe_in_a_restricted_view",
    "unreachable_probes_with_unreadable_fds",
    "unreadable_facts_are_errors",
    "unreadable_fds_of_leader",
    "unreadable_fds_of_non_leader",
    "unsupported_no_pipe_ino",
    "userns_container_ids",
];

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proc")
}

fn case_root(case: &str) -> PathBuf {
    fixtures_dir().join(case)
}

/// `queues.json`: pipe inode → queued bytes, or the message of a probe failure.
fn queue_table(root: &Path) -> HashMap<u64, Result<u64, String>> {
    let text = std::fs::read_to_string(root.join("queues.json")).unwrap_or_else(|_| "{}".into());
    let value: serde_json::Value = serde_json::from_str(&text).expect("queues.json is JSON");
    value
        .as_object()
        .expect("queues.json is an object")
        .iter()
        .map(|(ino, v)| {
            let ino = ino.parse().expect("queues.json keys are pipe inodes");
            let entry = match v {
                serde_json::Value::String(s) => Err(s.clone()),
                other => Ok(other.as_u64().expect("queues.json values are byte counts")),
            };
            (ino, entry)
        })
        .collect()
}

/// A probe answering from the table, refusing (like the real one) a link that is not the pipe.
fn table_probe(table: HashMap<u64, Result<u64, String>>) -> impl Fn(&Path, u64) -> io::Result<u64> {
    move |fd_path: &Path, ino: u64| {
        let target = std::fs::read_link(fd_path)?;
        assert_eq!(
            target.as_os_str().as_encoded_bytes(),
            format!("pipe:[{ino}]").as_bytes(),
            "the core measured pipe {ino} through {}, which is not that pipe",
            fd_path.display()
        );
        match table.get(&ino) {
            Some(Ok(bytes)) => Ok(*bytes),
            Some(Err(message)) => Err(io::Error::other(message.clone())),
            None => panic!("pipe {ino} was measured but queues.json has no entry for it"),
        }
    }
}

fn scan_tree(root: &Path) -> Scan {
    Scanner::new(root, NODE)
        .expect("fixture proc root opens")
        .with_probe(table_probe(queue_table(root)))
        .scan()
        .expect("a fixture scan never fails as a whole")
}

/// The JSON lines of a scan as the CLI prints them, with the fixture path shown as `/proc`.
fn json_lines(scan: &Scan, root: &Path) -> String {
    let root = root.to_str().expect("fixture path is UTF-8");
    scan.reports
        .iter()
        .map(|r| serde_json::to_string(r).expect("reports serialize") + "\n")
        .map(|line| line.replace(root, "/proc"))
        .collect()
}

/// Scans a case and compares it with its golden (rewritten first under `UPDATE_GOLDEN=1`).
fn scan_case(case: &str) -> Scan {
    let root = case_root(case);
    let scan = scan_tree(&root);
    let actual = json_lines(&scan, &root);
    let golden = root.join("expected.jsonl");
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        // Write-then-rename: two tests may share a case and run in parallel processes.
        let tmp = golden.with_extension(format!("jsonl.{}", std::process::id()));
        std::fs::write(&tmp, &actual).expect("golden is writable");
        std::fs::rename(&tmp, &golden).expect("golden is writable");
    }
    let expected = std::fs::read_to_string(&golden)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", golden.display()));
    let (actual_lines, expected_lines): (Vec<_>, Vec<_>) =
        (actual.lines().collect(), expected.lines().collect());
    for (i, (a, e)) in actual_lines.iter().zip(&expected_lines).enumerate() {
        assert_eq!(
            a,
            e,
            "{case}: line {} differs from {}",
            i + 1,
            golden.display()
        );
    }
    assert_eq!(
        actual_lines.len(),
        expected_lines.len(),
        "{case}: number of reports differs from {}",
        golden.display()
    );
    assert_eq!(actual, expected, "{case}: {}", golden.display());
    scan
}

fn mount(scan: &Scan, mnt_ns: u64, mount_id: u32) -> &MountReport {
    let found: Vec<_> = scan
        .reports
        .iter()
        .filter(|r| r.mnt_ns == mnt_ns && r.mount_id == mount_id)
        .collect();
    assert_eq!(found.len(), 1, "mount {mount_id} in {mnt_ns}: {found:#?}");
    found[0]
}

fn only(scan: &Scan) -> &MountReport {
    assert_eq!(scan.reports.len(), 1, "{:#?}", scan.reports);
    &scan.reports[0]
}

fn verdict(r: &MountReport) -> (MountState, Reason) {
    (r.state, r.reason)
}

fn entry(fd: i32, pgrp: i32, timeout: i32, minproto: i32, maxproto: i32, mode: i32) -> AutofsEntry {
    AutofsEntry {
        fd,
        pgrp,
        timeout,
        minproto,
        maxproto,
        mode,
        uid: None,
        gid: None,
        read_fd: None,
    }
}

/// CRIU's mode numbering (autofs_entry.mode).
const DIRECT: i32 = 0;
const INDIRECT: i32 = 1;
const OFFSET: i32 = 2;

fn assert_no_pipe_facts(r: &MountReport) {
    assert_eq!((r.read_end_pid, r.read_end_fd), (0, -1), "{r:#?}");
    assert!(!r.write_end_held, "{r:#?}");
    assert_eq!((r.pending_bytes, r.pending_packets), (0, 0), "{r:#?}");
}

// ---------------------------------------------------------------------------------------------
// Live mounts CRIU can dump
// ---------------------------------------------------------------------------------------------

#[test]
fn active_indirect_mount_whose_leader_holds_both_ends_is_dumpable() {
    let scan = scan_case("active_indirect");
    let r = only(&scan);
    assert_eq!(verdict(r), (MountState::Active, Reason::MasterHoldsPipe));
    assert_eq!(
        r.message,
        "Master 1234 holds the read end fd 4 of pipe 39876 and its write end fd 5; the pipe is empty"
    );
    assert!(r.dumpable && !r.blocks_dump());
    assert_eq!(r.entry, Some(entry(5, 1234, 300, 5, 5, INDIRECT)));
    assert_eq!((r.read_end_pid, r.read_end_fd), (1234, 4));
    assert!(r.write_end_held);
    assert_eq!((r.pending_bytes, r.pending_packets), (0, 0));
    assert_eq!((r.pipe_ino, r.host_pgrp), (39876, 1234));
    assert_eq!((r.mount_id, r.parent_id), (40, 22));
    assert_eq!(
        (r.mount_point.as_str(), r.source.as_str()),
        ("/home", "/etc/auto.home")
    );
    assert_eq!((r.major, r.minor, r.criu_s_dev), (0, 52, 52));
    assert_eq!((r.mnt_ns, r.owner_pid), (HOST_MNT, 1));
    assert_eq!((r.proto_version, r.timeout), (5, 300));
    assert_eq!(r.node, NODE);
    assert!(r.container_id.is_empty() && r.pod_uid.is_empty());
    assert!(r.criu_notes.is_empty(), "{:?}", r.criu_notes);
    assert!(!r.strictexpire && !r.ignore);
    assert_eq!(
        r.options,
        "rw,fd=5,pgrp=1234,timeout=300,minproto=5,maxproto=5,indirect,pipe_ino=39876"
    );
    // pids 1, 1234, 1500 ("self" and "uptime" are not processes); only the leader's 8 fds
    // are listed, as CRIU does: its read end answers everything.
    assert_eq!(scan.stats.processes, 3);
    assert_eq!(scan.stats.mount_namespaces, 1);
    assert_eq!(scan.stats.fds, 8);
    assert_eq!(scan.stats.census_pipes, 0);
    assert_eq!(
        (
            scan.stats.vanished,
            scan.stats.unreadable,
            scan.stats.ignored_lines
        ),
        (0, 0, 0)
    );
}

#[test]
fn systemd_direct_mount_without_its_write_end_records_read_fd() {
    // §3.7: fd=31 is closed (the number now names a socket), so CRIU sets read_fd.
    let scan = scan_case("active_direct_write_end_closed");
    let r = only(&scan);
    assert_eq!(verdict(r), (MountState::Active, Reason::MasterHoldsPipe));
    assert!(r.dumpable);
    assert_eq!(
        r.entry,
        Some(AutofsEntry {
            read_fd: Some(30),
            ..entry(31, 1, 0, 5, 5, DIRECT)
        })
    );
    assert!(!r.write_end_held);
    assert_eq!((r.read_end_pid, r.read_end_fd), (1, 30));
    assert_eq!(
        r.message,
        "Master 1 holds the read end fd 30 of pipe 87983 but not its write end fd 31: read_fd 30 is recorded; the pipe is empty"
    );
    assert_eq!(
        (r.mount_point.as_str(), r.source.as_str()),
        ("/proc/sys/fs/binfmt_misc", "systemd-1")
    );
    assert_eq!((r.criu_s_dev, r.timeout), (45, 0));
    assert!(r.criu_notes.is_empty(), "{:?}", r.criu_notes);
}

#[test]
fn offset_mount_keeps_uid_gid_strictexpire_ignore_and_timeout() {
    let scan = scan_case("offset_mount_options");
    let parent = mount(&scan, HOST_MNT, 40);
    assert_eq!(
        verdict(parent),
        (MountState::Active, Reason::MasterHoldsPipe)
    );
    assert_eq!(parent.source, "-hosts");
    assert_eq!(parent.entry, Some(entry(5, 1234, 120, 5, 5, INDIRECT)));

    let r = mount(&scan, HOST_MNT, 41);
    assert_eq!(verdict(r), (MountState::Active, Reason::MasterHoldsPipe));
    assert_eq!(
        r.entry,
        Some(AutofsEntry {
            uid: Some(1000),
            gid: Some(1001),
            ..entry(8, 1234, 120, 5, 5, OFFSET)
        })
    );
    assert!(r.strictexpire && r.ignore);
    assert_eq!((r.timeout, r.proto_version), (120, 5));
    assert_eq!((r.read_end_pid, r.read_end_fd), (1234, 7));
    assert!(r.write_end_held && r.dumpable);
    assert_eq!(
        (r.parent_id, r.mount_point.as_str()),
        (40, "/net/fileserver")
    );
    assert_eq!(r.criu_s_dev, 53);
}

#[test]
fn catatonic_mount_is_dumped_with_the_raw_host_pgrp() {
    // §3.3: fd=-1 stops CRIU before any process check; pgrp is not virtualised even though the
    // old daemon (host 5000) is pid 7 in the container.
    let scan = scan_case("catatonic_keeps_raw_pgrp");
    let r = only(&scan);
    assert_eq!(verdict(r), (MountState::Catatonic, Reason::Catatonic));
    assert!(r.dumpable);
    assert_eq!(r.entry, Some(entry(-1, 5000, 300, 5, 5, INDIRECT)));
    assert!(r.message.contains("fd=-1"), "{}", r.message);
    assert!(r.message.contains("raw pgrp 5000"), "{}", r.message);
    assert_eq!((r.pipe_ino, r.host_pgrp), (0, 5000));
    assert_no_pipe_facts(r);
    assert_eq!((r.mnt_ns, r.owner_pid), (CONTAINER_MNT, 4990));
    assert_eq!(
        (r.container_id.as_str(), r.pod_uid.as_str()),
        (DOCKER_ID, "")
    );
    assert_eq!(scan.stats.mount_namespaces, 2);
}

// ---------------------------------------------------------------------------------------------
// Interim
// ---------------------------------------------------------------------------------------------

#[test]
fn interim_mount_reports_two_queued_v5_packets() {
    let scan = scan_case("interim_v5");
    let r = only(&scan);
    assert_eq!(verdict(r), (MountState::Interim, Reason::PipeNotEmpty));
    assert!(!r.dumpable && r.blocks_dump());
    // §3.5: CRIU's words, then what it cannot say: 608 bytes = 2 × 304-byte v5 packets.
    assert!(
        r.message
            .starts_with("Process 1234 autofs pipe fd 4 is not empty. Try again later."),
        "{}",
        r.message
    );
    assert!(r.message.contains("608 bytes"), "{}", r.message);
    assert_eq!((r.pending_bytes, r.pending_packets), (608, 2));
    assert_eq!(r.proto_version, 5);
    assert_eq!((r.read_end_pid, r.read_end_fd), (1234, 4));
    assert!(r.write_end_held);
    assert_eq!(r.entry, Some(entry(5, 1234, 300, 5, 5, INDIRECT)));
}

#[test]
fn interim_v4_mount_counts_272_byte_packets() {
    let scan = scan_case("interim_v4");
    let r = only(&scan);
    assert_eq!(verdict(r), (MountState::Interim, Reason::PipeNotEmpty));
    assert_eq!(r.proto_version, 4);
    // 816 bytes are three 272-byte v4 packets (304-byte arithmetic would say 2).
    assert_eq!((r.pending_bytes, r.pending_packets), (816, 3));
    assert!(
        r.message.contains("is not empty. Try again later."),
        "{}",
        r.message
    );
    assert_eq!(r.entry, Some(entry(5, 1234, 300, 3, 4, INDIRECT)));
    assert!(!r.dumpable);
}

// ---------------------------------------------------------------------------------------------
// Orphaned
// ---------------------------------------------------------------------------------------------

#[test]
fn read_end_delegated_to_another_process_group_is_orphaned_and_names_the_holder() {
    let scan = scan_case("orphaned_read_end_delegated");
    let r = only(&scan);
    assert_eq!(verdict(r), (MountState::Orphaned, Reason::ReadEndDelegated));
    assert!(!r.dumpable);
    // §3.4: the leader is alive but holds no read end.
    assert!(
        r.message.starts_with(
            "Master 1234 doesn't have a read end of the pipe with inode 42424 opened. Abandoned mount or control was delegated to child?"
        ),
        "{}",
        r.message
    );
    assert!(
        r.message
            .contains("pid 1300 (autofs-helper, pgrp 1300) fd 3"),
        "{}",
        r.message
    );
    assert_eq!((r.read_end_pid, r.read_end_fd), (1300, 3));
    // Nothing is translated or recorded for a mount CRIU refuses.
    assert_eq!(r.entry, Some(entry(5, 1234, 300, 5, 5, INDIRECT)));
    assert!(
        r.criu_notes.iter().any(|n| n.contains("probe")),
        "{:?}",
        r.criu_notes
    );
}

#[test]
fn group_member_holding_the_read_end_after_the_leader_exited_is_leader_gone() {
    let scan = scan_case("orphaned_leader_gone");
    let r = only(&scan);
    assert_eq!(verdict(r), (MountState::Orphaned, Reason::LeaderGone));
    assert!(!r.dumpable);
    // §3.4: opendir(/proc/1234/fd) fails: CRIU's first message.
    assert!(
        r.message
            .starts_with("Failed to find read pipe fd (ino 43210) in process 1234"),
        "{}",
        r.message
    );
    assert!(
        r.message.contains("pid 1240 (automount, pgrp 1234) fd 4"),
        "{}",
        r.message
    );
    assert_eq!((r.read_end_pid, r.read_end_fd), (1240, 4));
    // §3.10 #7: the leader-only search is CRIU's defect.
    assert!(
        r.criu_notes
            .iter()
            .any(|n| n.contains("only the process-group leader")),
        "{:?}",
        r.criu_notes
    );
}

#[test]
fn leader_alive_without_any_reader_is_hidden_catatonic() {
    let scan = scan_case("hidden_catatonic_leader_alive");
    let r = only(&scan);
    assert_eq!(verdict(r), (MountState::Orphaned, Reason::HiddenCatatonic));
    assert!(!r.dumpable);
    assert!(
        r.message.starts_with(
            "Master 1234 doesn't have a read end of the pipe with inode 44444 opened. Abandoned mount or control was delegated to child?"
        ),
        "{}",
        r.message
    );
    assert!(r.message.contains("hidden catatonic"), "{}", r.message);
    assert_eq!((r.read_end_pid, r.read_end_fd), (0, -1), "{r:#?}");
    assert_eq!((r.pending_bytes, r.pending_packets), (0, 0), "{r:#?}");
    // The live leader still holds the write end fd=5 the kernel writes to.
    assert!(r.write_end_held, "{r:#?}");
    // §3.10 #3: CRIU's probe cannot trigger an indirect root.
    assert!(
        r.criu_notes
            .iter()
            .any(|n| n.contains("Autofs 40 is alive, but unreachable.")),
        "{:?}",
        r.criu_notes
    );
}

#[test]
fn daemon_gone_and_only_a_write_end_left_is_hidden_catatonic() {
    let scan = scan_case("hidden_catatonic_daemon_gone");
    let r = only(&scan);
    assert_eq!(verdict(r), (MountState::Orphaned, Reason::HiddenCatatonic));
    assert!(
        r.message
            .starts_with("Failed to find read pipe fd (ino 45555) in process 1234"),
        "{}",
        r.message
    );
    assert!(r.message.contains("daemon is gone"), "{}", r.message);
    // The leftover write end (pid 1250, O_WRONLY) is not a reader.
    assert_no_pipe_facts(r);
    assert_eq!(r.entry, Some(entry(5, 1234, 600, 5, 5, DIRECT)));
    // With the leader gone CRIU never reaches its probe: opendir of /proc/1234/fd fails first
    // and the dump fails, so no note claims the probe would turn the mount catatonic.
    assert!(r.criu_notes.is_empty(), "{:?}", r.criu_notes);
    assert!(!r.dumpable);
}

#[test]
fn master_in_the_host_pid_namespace_of_a_container_mount_is_orphaned() {
    // §3.8: CRIU dumping the container finds no pstree item for host pid 3000.
    let scan = scan_case("master_outside_pid_ns");
    let r = only(&scan);
    assert_eq!(
        verdict(r),
        (MountState::Orphaned, Reason::MasterOutsidePidNs)
    );
    assert!(!r.dumpable);
    assert!(
        r.message.starts_with(
            "failed to find pstree item with pid 3000. Non-catatonic mount without master?"
        ),
        "{}",
        r.message
    );
    assert!(r.message.contains("pid 4990"), "{}", r.message);
    assert_eq!(r.entry, Some(entry(5, 3000, 300, 5, 5, INDIRECT)));
    assert_eq!((r.read_end_pid, r.read_end_fd), (3000, 4));
    assert!(r.write_end_held);
    assert_eq!((r.mnt_ns, r.owner_pid), (CONTAINER_MNT, 4990));
    assert_eq!(r.container_id, DOCKER_ID);
}

#[test]
fn without_nspid_lines_the_ns_pid_links_still_tell_a_master_outside_the_pid_namespace() {
    // A status without `NSpid:` (kernels before 4.1, or a stripped fixture) makes every depth
    // 1 by assumption: membership must then come from the `ns/pid` links, not the assumption.
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&case_root("master_outside_pid_ns"), dir.path());
    for pid in ["1", "3000", "4950", "4990"] {
        let status = dir.path().join(pid).join("status");
        let text = std::fs::read_to_string(&status).unwrap();
        assert!(
            text.contains("NSpid:"),
            "{pid}/status has an NSpid line to remove"
        );
        let kept: String = text
            .lines()
            .filter(|l| !l.starts_with("NSpid:"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&status, kept).unwrap();
    }
    // Without `NSpid:` no member is known to be a pid namespace's init: the container's init
    // stays the owner by starting first.
    let stat = dir.path().join("4990/stat");
    let text = std::fs::read_to_string(&stat).unwrap();
    assert_eq!(text.matches(" 2817 ").count(), 1, "starttime is field 22");
    std::fs::write(&stat, text.replace(" 2817 ", " 1000 ")).unwrap();
    let scan = scan_tree(dir.path());
    let r = only(&scan);
    assert_eq!(r.owner_pid, 4990);
    assert_eq!(
        verdict(r),
        (MountState::Orphaned, Reason::MasterOutsidePidNs)
    );
    assert!(!r.dumpable);
}

#[test]
fn a_pipe_nobody_held_is_listed_for_again_after_the_recheck_bound() {
    use std::collections::HashSet;
    use std::time::Instant;

    use autofs_core::ProcRoot;
    use autofs_core::holders::{Candidates, HolderMemo, NOBODY_RECHECK};
    use autofs_core::pipes::PipeIndex;

    // The leader (1234) holds no end at all: a census finds nobody.
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&case_root("hidden_catatonic_leader_alive"), dir.path());
    std::fs::remove_file(dir.path().join("1234/fd/5")).unwrap();
    std::fs::remove_file(dir.path().join("1234/fdinfo/5")).unwrap();
    std::fs::write(dir.path().join("queues.json"), r#"{"44444": 0}"#).unwrap();
    let kept = Scanner::new(dir.path(), NODE)
        .unwrap()
        .with_probe(table_probe(queue_table(dir.path())));
    let first = kept.scan().unwrap();
    assert_eq!(
        verdict(only(&first)),
        (MountState::Orphaned, Reason::HiddenCatatonic)
    );
    assert_eq!(first.stats.census_pipes, 1, "{:?}", first.stats);

    // The read end arrives in pid 1 (another process group), as an end received from a unix
    // socket does: it was in no fd table while in flight.
    std::os::unix::fs::symlink("pipe:[44444]", dir.path().join("1/fd/5")).unwrap();
    std::fs::write(
        dir.path().join("1/fdinfo/5"),
        "pos:\t0\nflags:\t02000000\nmnt_id:\t15\nino:\t44444\n",
    )
    .unwrap();
    // A fresh scan finds it at once.
    let fresh = scan_tree(dir.path());
    let r = only(&fresh);
    assert_eq!(verdict(r), (MountState::Orphaned, Reason::ReadEndDelegated));
    assert_eq!((r.read_end_pid, r.read_end_fd), (1, 5), "{r:#?}");
    // The kept scanner believes its census...
    let second = kept.scan().unwrap();
    assert_eq!(second.stats.census_pipes, 0, "{:?}", second.stats);
    assert_eq!(only(&second).reason, Reason::HiddenCatatonic);

    // (Indirect: not on CRIU's probe path, where the answer would be dumpable, so the kept
    // scanner keeps its census.) On the probe path the memo lists for the pipe again once the
    // bound has passed (the memo asked directly, with the time it is given).
    let root = ProcRoot::open(dir.path()).unwrap();
    let pids = root.pids().unwrap();
    let candidates = HashSet::from([44444]);
    let probe = table_probe(queue_table(dir.path()));
    let both = Candidates {
        pipes: &candidates,
        probe_path: &candidates,
    };
    let mut memo = HolderMemo::default();
    let t0 = Instant::now();
    std::fs::rename(dir.path().join("1/fd/5"), dir.path().join("1/fd.5")).unwrap();
    let mut index = PipeIndex::default();
    assert_eq!(memo.locate(&root, &probe, &pids, &mut index, both, t0), 1);
    assert!(index.ends(44444).is_empty(), "nobody holds it yet");
    std::fs::rename(dir.path().join("1/fd.5"), dir.path().join("1/fd/5")).unwrap();
    let mut index = PipeIndex::default();
    let soon = t0 + NOBODY_RECHECK / 2;
    assert_eq!(memo.locate(&root, &probe, &pids, &mut index, both, soon), 0);
    assert!(index.ends(44444).is_empty(), "believed within the bound");
    let mut index = PipeIndex::default();
    let later = t0 + NOBODY_RECHECK;
    assert_eq!(
        memo.locate(&root, &probe, &pids, &mut index, both, later),
        1
    );
    let ends: Vec<(i32, i32)> = index.ends(44444).iter().map(|e| (e.pid, e.fd)).collect();
    assert_eq!(ends, [(1, 5)]);
    assert!(index.ends(44444)[0].is_read_end());
}

#[test]
fn the_processes_between_a_leader_and_its_namespace_owner_are_watched_for_exits() {
    // 5200 (automount) ← 5100 (tini) ← 5050 (unshare) ← 4990 (owner): any of the three above
    // the leader exiting re-parents it outside the tree.
    assert_eq!(
        scan_case("nested_pid_ns_daemon").tree_paths,
        [4990, 5050, 5100]
    );
    // A leader that is its namespace's owner: the owner alone.
    assert_eq!(scan_case("active_indirect").tree_paths, [1]);
    // A leader outside its tree already (pid 1 for a --pid=host container owned by 2345):
    // nothing to watch for it; the host namespace's own mount is owned by its leader.
    assert_eq!(
        scan_case("host_pid_container_master_outside_tree").tree_paths,
        [1]
    );
}

#[test]
fn a_proc_root_path_that_names_another_directory_fails_the_scan_instead_of_mixing_two() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proc");
    std::fs::create_dir(&path).unwrap();
    copy_tree(&case_root("active_indirect"), &path);
    let scanner = Scanner::new(&path, NODE)
        .unwrap()
        .with_probe(table_probe(queue_table(&path)));
    assert_eq!(only(&scanner.scan().unwrap()).mount_id, 40);

    // Another tree mounted (here: put) over the path: listing it while reading `<pid>/…`
    // through the old one would mix two machines.
    let old = dir.path().join("old");
    std::fs::rename(&path, &old).unwrap();
    std::fs::create_dir(&path).unwrap();
    copy_tree(&case_root("active_indirect"), &path);
    let err = scanner.scan().unwrap_err();
    assert!(
        matches!(&err, Error::ProcRoot { path: p, .. } if p == &path),
        "{err:?}"
    );
    let why = |err: &Error| std::error::Error::source(err).map(ToString::to_string);
    assert!(
        why(&err).is_some_and(|w| w.contains("no longer names")),
        "{err:?}"
    );
    // An empty directory left where it was (a lazy unmount): an error, not "no processes".
    std::fs::remove_dir_all(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let err = scanner.scan().unwrap_err();
    assert!(
        why(&err).is_some_and(|w| w.contains("no longer names")),
        "{err:?}"
    );
    // The directory it opened is back: scans go on.
    std::fs::remove_dir(&path).unwrap();
    std::fs::rename(&old, &path).unwrap();
    assert_eq!(only(&scanner.scan().unwrap()).mount_id, 40);
}

/// Copies a fixture tree (directories, files and symlinks as they are) into `to`.
fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else if kind.is_dir() {
            std::fs::create_dir(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// pid namespaces and attribution
// ---------------------------------------------------------------------------------------------

#[test]
fn pgrp_is_translated_into_the_container_pid_namespace_with_pod_attribution() {
    let scan = scan_case("pgrp_translated_into_container");
    let r = only(&scan);
    assert_eq!(verdict(r), (MountState::Active, Reason::MasterHoldsPipe));
    assert!(r.dumpable);
    assert_eq!(r.entry, Some(entry(5, 7, 300, 5, 5, INDIRECT)));
    assert_eq!(r.host_pgrp, 5000);
    assert_eq!((r.read_end_pid, r.read_end_fd), (5000, 4));
    assert_eq!((r.mnt_ns, r.owner_pid), (CONTAINER_MNT, 4990));
    assert_eq!(r.container_id, CONTAINERD_ID);
    assert_eq!(r.pod_uid, POD_UID);
}

#[test]
fn daemon_in_a_nested_pid_namespace_gets_its_pid_at_the_owner_level() {
    // NSpid 5200 25 3: the owner (NSpid 4990 1) is at level 2, so CRIU would store 25. The
    // ancestor walk 5200 → 5100 (nested init) → 5050 (owner's pid ns) proves membership.
    let scan = scan_case("nested_pid_ns_daemon");
    let r = only(&scan);
    assert_eq!(verdict(r), (MountState::Active, Reason::MasterHoldsPipe));
    assert_eq!(r.entry, Some(entry(5, 25, 300, 5, 5, INDIRECT)));
    assert_eq!((r.host_pgrp, r.owner_pid), (5200, 4990));
    // CRIU dumps the owner's pid namespace only: the nested one stops it.
    assert!(!r.dumpable);
    assert!(
        r.criu_notes[0].contains("nested below the one of pid 4990"),
        "{:?}",
        r.criu_notes
    );
    assert_eq!(
        (r.container_id.as_str(), r.pod_uid.as_str()),
        (CONTAINERD_ID, POD_UID)
    );
}

#[test]
fn same_superblock_in_two_mount_namespaces_is_reported_in_each() {
    let scan = scan_case("two_mount_namespaces");
    assert_eq!(scan.reports.len(), 3);
    assert_eq!(scan.stats.mount_namespaces, 2);
    let host = mount(&scan, HOST_MNT, 40);
    let copy = mount(&scan, 4026532700, 306);
    // The host's automount is in the host tree, not in the `unshare -m` session's tree.
    assert_eq!(verdict(host), (MountState::Active, Reason::MasterHoldsPipe));
    assert_eq!(
        verdict(copy),
        (MountState::Orphaned, Reason::MasterOutsideTree)
    );
    assert!(
        copy.message
            .contains("CRIU dumps the tree rooted at pid 700 (unshare)"),
        "{}",
        copy.message
    );
    for r in [host, copy] {
        assert_eq!(
            (r.major, r.minor, r.criu_s_dev, r.pipe_ino),
            (0, 52, 52, 58001)
        );
        assert_eq!(r.entry, Some(entry(5, 1234, 300, 5, 5, INDIRECT)));
        assert_eq!((r.read_end_pid, r.read_end_fd), (1234, 4));
    }
    assert_eq!((host.owner_pid, copy.owner_pid), (1, 700));
    let private = mount(&scan, 4026532700, 307);
    assert_eq!(verdict(private), (MountState::Catatonic, Reason::Catatonic));
    assert_eq!(private.entry, Some(entry(-1, 701, 60, 5, 5, DIRECT)));
    // Reports come by namespace, then in mountinfo order.
    let order: Vec<_> = scan
        .reports
        .iter()
        .map(|r| (r.mnt_ns, r.mount_id))
        .collect();
    assert_eq!(
        order,
        [(HOST_MNT, 40), (4026532700, 306), (4026532700, 307)]
    );
}

// ---------------------------------------------------------------------------------------------
// Unsupported and malformed input
// ---------------------------------------------------------------------------------------------

#[test]
fn mount_without_pipe_ino_is_unsupported() {
    let scan = scan_case("unsupported_no_pipe_ino");
    let r = only(&scan);
    assert_eq!(verdict(r), (MountState::Unsupported, Reason::NoPipeIno));
    assert_eq!(r.message, "Failed to find pipe_ino option (old kernel?)");
    assert!(!r.dumpable);
    assert_eq!(r.pipe_ino, 0);
    assert_eq!(r.entry, Some(entry(5, 1234, 300, 5, 5, INDIRECT)));
    assert_no_pipe_facts(r);
}

#[test]
fn each_malformed_option_string_is_its_own_error_and_hides_no_other_mount() {
    let scan = scan_case("malformed_options");
    let expected = [
        (40, Reason::MissingOption, "Failed to find fd option"),
        (41, Reason::MissingOption, "Failed to find pgrp option"),
        (42, Reason::MissingOption, "Failed to find timeout option"),
        (43, Reason::MissingOption, "Failed to find minproto option"),
        (44, Reason::MissingOption, "Failed to find maxproto option"),
        (
            45,
            Reason::MissingOption,
            "Failed to find mode (direct,indirect,offset) option",
        ),
        (
            46,
            Reason::InvalidOption,
            "invalid autofs option 'fd=abc': not a number",
        ),
        (
            48,
            Reason::InvalidOption,
            "pipe_ino (xyz) mount option parse failed",
        ),
    ];
    // timeout is an unsigned long the kernel may print: not an inspection error, but CRIU's
    // xatoi refuses it and the dump fails.
    let big = mount(&scan, HOST_MNT, 47);
    assert_eq!(
        verdict(big),
        (MountState::Unsupported, Reason::OptionOutOfIntRange)
    );
    assert!(
        big.message
            .starts_with("value 0x174876e7ff (99999999999) is out of int range"),
        "{}",
        big.message
    );
    assert_eq!(big.timeout, 99_999_999_999);
    assert!(!big.dumpable);
    for (id, reason, message) in expected {
        let r = mount(&scan, HOST_MNT, id);
        assert_eq!(verdict(r), (MountState::Error, reason), "mount {id}");
        assert_eq!(r.message, message, "mount {id}");
        assert_eq!(r.entry, None, "mount {id}");
        assert!(!r.dumpable);
        assert_eq!(r.mount_point, format!("/mnt/bad{}", id - 40));
    }
    // fd=5 with pipe_ino=-1 cannot happen on a sane kernel: an error, not CATATONIC.
    let r = mount(&scan, HOST_MNT, 49);
    assert_eq!(verdict(r), (MountState::Error, Reason::InvalidOption));
    assert!(r.message.contains("pipe_ino=-1"), "{}", r.message);
    assert!(!r.dumpable);

    let good = mount(&scan, HOST_MNT, 60);
    assert_eq!(verdict(good), (MountState::Active, Reason::MasterHoldsPipe));
    assert_eq!(scan.reports.len(), 11);
}

#[test]
fn malformed_autofs_mountinfo_lines_are_errors_naming_the_token_and_later_lines_survive() {
    let scan = scan_case("malformed_mountinfo_line");
    assert_eq!(scan.reports.len(), 3, "{:#?}", scan.reports);

    let no_separator = &scan.reports[0];
    assert_eq!(
        verdict(no_separator),
        (MountState::Error, Reason::MalformedMountinfo)
    );
    assert_eq!(no_separator.mount_id, 40);
    assert!(
        no_separator.message.contains("' - ' separator"),
        "{}",
        no_separator.message
    );
    assert!(no_separator.options.starts_with("40 22 0:52 / /mnt/a "));

    let bad_device = &scan.reports[1];
    assert_eq!(
        verdict(bad_device),
        (MountState::Error, Reason::MalformedMountinfo)
    );
    assert_eq!(bad_device.mount_id, 41);
    assert!(
        bad_device.message.contains("'0x35'"),
        "{}",
        bad_device.message
    );
    for r in &scan.reports[..2] {
        assert!(!r.dumpable && r.entry.is_none());
    }

    let good = &scan.reports[2];
    assert_eq!(good.mount_id, 43);
    assert_eq!(verdict(good), (MountState::Active, Reason::MasterHoldsPipe));
    // The truncated tmpfs line is not autofs: ignored, but counted.
    assert_eq!(scan.stats.ignored_lines, 1);
}

#[test]
fn octal_escapes_in_mount_point_and_source_are_decoded() {
    let scan = scan_case("escaped_mount_point");
    let space = mount(&scan, HOST_MNT, 40);
    assert_eq!(space.mount_point, "/mnt/with space");
    assert_eq!(space.source, "/etc/auto maps/auto.space");
    assert_eq!(
        verdict(space),
        (MountState::Active, Reason::MasterHoldsPipe)
    );
    let tab = mount(&scan, HOST_MNT, 41);
    // Lossless string form: a backslash is written `\\`; the bytes are exact.
    assert_eq!(tab.mount_point, "/mnt/tab\tand\\\\backslash");
    assert_eq!(tab.mount_point_bytes, b"/mnt/tab\tand\\backslash");
    assert_eq!(space.mount_point_bytes, b"/mnt/with space");
    assert_eq!(space.source_bytes, b"/etc/auto maps/auto.space");
    assert_eq!((tab.read_end_pid, tab.read_end_fd), (1234, 6));
    assert_eq!(verdict(tab), (MountState::Active, Reason::MasterHoldsPipe));
}

// ---------------------------------------------------------------------------------------------
// Churn and unreadable /proc
// ---------------------------------------------------------------------------------------------

#[test]
fn processes_vanishing_mid_scan_are_counted_not_fatal() {
    let scan = scan_case("processes_vanishing");
    // pids 1, 800, 801, 1234, 2000, 3100, 3200, 3300, 3400; 3100 and 3200 lost ns/mnt, 800
    // its mountinfo; 3300's ns/mnt could not be read and its cgroup is gone: reaped, not
    // hidden. 3400's ns/mnt could not be read either but its cgroup is there: unknown.
    assert_eq!(scan.stats.processes, 9);
    assert_eq!(scan.stats.vanished, 4);
    assert_eq!(scan.stats.unreadable, 1);
    let unknown: Vec<_> = scan.unknown_processes.iter().map(|p| p.pid).collect();
    assert_eq!(unknown, [3400]);
    let hidden = &scan.unknown_processes[0];
    assert!(!hidden.denied, "{hidden:?}");
    assert!(hidden.why.contains("3400/ns/mnt"), "{hidden:?}");
    assert!(hidden.attribution.is_some(), "{hidden:?}");
    assert_eq!(scan.stats.mount_namespaces, 2);

    let home = mount(&scan, HOST_MNT, 40);
    assert_eq!(verdict(home), (MountState::Active, Reason::MasterHoldsPipe));

    // 800 vanished before its mountinfo was read: the namespace is read through 801. Its
    // copy of /home is served by the host's automount, which CRIU dumping 800's tree (the
    // `unshare -m` session) does not dump.
    let copy = mount(&scan, 4026532600, 140);
    assert_eq!(
        verdict(copy),
        (MountState::Orphaned, Reason::MasterOutsideTree)
    );
    assert_eq!(copy.owner_pid, 800);
}

#[test]
fn leader_exiting_after_the_fd_census_is_gone_not_a_delegate_of_itself() {
    // Pid 2000's fds were listed, then it exited before its stat could be read. Its stale
    // ends must not be reported as a delegated read end held by the (dead) leader itself:
    // the daemon is gone and nobody else holds a read end.
    let scan = scan_case("processes_vanishing");
    let r = mount(&scan, HOST_MNT, 41);
    assert_eq!(
        verdict(r),
        (MountState::Orphaned, Reason::HiddenCatatonic),
        "{r:#?}"
    );
    assert!(
        r.message
            .starts_with("Failed to find read pipe fd (ino 53002) in process 2000"),
        "{}",
        r.message
    );
    assert!(r.message.contains("daemon is gone"), "{}", r.message);
    assert_no_pipe_facts(r);
}

#[test]
fn unreadable_fds_of_a_bystander_qualify_only_hidden_catatonic_claims() {
    let case = "unreadable_fds_of_non_leader";
    let scan = scan_case(case);
    assert_eq!(scan.stats.unreadable, 1);

    let active = mount(&scan, HOST_MNT, 40);
    assert_eq!(
        verdict(active),
        (MountState::Active, Reason::MasterHoldsPipe)
    );

    // Pid 3000 might hold the read end of 54002. The state is certain (the leader holds no
    // read end, so CRIU fails); the reason is best effort and the message says why.
    let r = mount(&scan, HOST_MNT, 41);
    assert_eq!(verdict(r), (MountState::Orphaned, Reason::HiddenCatatonic));
    assert!(
        r.message.starts_with(
            "Master 2000 doesn't have a read end of the pipe with inode 54002 opened."
        ),
        "{}",
        r.message
    );
    let fd_dir = case_root(case).join("3000/fd");
    assert!(
        r.message.contains(&format!(
            "the fds of 1 process(es) could not be read, e.g. cannot read {}: Not a directory",
            fd_dir.display()
        )),
        "{}",
        r.message
    );
    assert!(!r.dumpable);

    let catatonic = mount(&scan, HOST_MNT, 42);
    assert_eq!(
        verdict(catatonic),
        (MountState::Catatonic, Reason::Catatonic)
    );

    let delegated = mount(&scan, HOST_MNT, 43);
    assert_eq!(
        verdict(delegated),
        (MountState::Orphaned, Reason::ReadEndDelegated)
    );
    assert_eq!((delegated.read_end_pid, delegated.read_end_fd), (2150, 3));
}

#[test]
fn unreadable_fds_of_the_leader_are_an_error_for_its_mount_only() {
    let case = "unreadable_fds_of_leader";
    let scan = scan_case(case);
    let r = mount(&scan, HOST_MNT, 40);
    assert_eq!(verdict(r), (MountState::Error, Reason::ProcUnreadable));
    assert!(
        r.message.starts_with(&format!(
            "cannot read {}: Not a directory",
            case_root(case).join("1234/fd").display()
        )),
        "{}",
        r.message
    );
    assert!(!r.dumpable);
    assert_no_pipe_facts(r);
    let other = mount(&scan, HOST_MNT, 41);
    assert_eq!(
        verdict(other),
        (MountState::Active, Reason::MasterHoldsPipe)
    );
    assert_eq!(scan.stats.unreadable, 1);
}

#[test]
fn failing_queue_probe_is_an_error_naming_the_fd_link() {
    let case = "queue_probe_failure";
    let scan = scan_case(case);
    let r = only(&scan);
    assert_eq!(verdict(r), (MountState::Error, Reason::ProcUnreadable));
    assert_eq!(
        r.message,
        format!(
            "cannot measure the queue of pipe 56001 through {}: Permission denied (os error 13)",
            case_root(case).join("1234/fd/4").display()
        )
    );
    assert!(!r.dumpable);
}

#[test]
fn pgrp_zero_means_the_master_is_not_visible() {
    let scan = scan_case("pgrp_zero_not_visible");
    let r = only(&scan);
    assert_eq!(verdict(r), (MountState::Error, Reason::PgrpNotVisible));
    assert!(r.message.starts_with("pgrp=0:"), "{}", r.message);
    assert!(r.message.contains("pid namespace"), "{}", r.message);
    assert_eq!((r.host_pgrp, r.pipe_ino), (0, 57001));
    assert!(!r.dumpable);
}

// ---------------------------------------------------------------------------------------------
// CRIU's inode defects (§3.1, §3.10 #1)
// ---------------------------------------------------------------------------------------------

#[test]
fn pipe_ino_above_uint32_max_is_not_dumpable_and_says_why() {
    let scan = scan_case("pipe_ino_above_uint32_max");
    let r = only(&scan);
    assert_eq!(r.pipe_ino, 4_294_979_641);
    assert!(!r.dumpable, "CRIU's parse stage rejects the inode");
    assert!(
        r.criu_notes
            .iter()
            .any(|n| n.starts_with("overflow: pipe_ino > UINT32_MAX")),
        "{:?}",
        r.criu_notes
    );
    // The daemon itself is healthy.
    assert_eq!((r.read_end_pid, r.read_end_fd), (1234, 4));
    assert!(r.write_end_held);
}

#[test]
fn pipe_ino_above_int_max_with_the_write_end_held_still_records_read_fd() {
    // §3.10 #1: CRIU's int-typed inode never matches, so it records read_fd anyway.
    let scan = scan_case("pipe_ino_above_int_max");
    let r = only(&scan);
    assert_eq!(verdict(r), (MountState::Active, Reason::MasterHoldsPipe));
    assert!(r.dumpable);
    assert!(r.write_end_held);
    assert_eq!(
        r.entry,
        Some(AutofsEntry {
            read_fd: Some(4),
            ..entry(5, 95929, 300, 5, 5, INDIRECT)
        })
    );
    assert_eq!(r.pipe_ino, 3_480_845_226);
    assert_eq!(r.criu_notes.len(), 1, "{:?}", r.criu_notes);
    assert!(r.criu_notes[0].contains("INT_MAX"), "{:?}", r.criu_notes);
    // The message must not claim the write end is gone while write_end_held says it is held.
    assert!(
        r.message.contains("and its write end fd 5"),
        "{}",
        r.message
    );
}

// ---------------------------------------------------------------------------------------------
// Whole-scan behaviour
// ---------------------------------------------------------------------------------------------

#[test]
fn proc_root_without_autofs_mounts_yields_no_reports_and_no_fd_census() {
    let scan = scan_case("no_autofs_mounts");
    assert!(scan.reports.is_empty());
    assert_eq!(scan.stats.processes, 3);
    assert_eq!(scan.stats.mount_namespaces, 1);
    // No pipe is of interest, so no fd directory is listed.
    assert_eq!(scan.stats.fds, 0);
}

#[test]
fn missing_proc_root_is_a_fatal_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-proc");
    let err = Scanner::new(&missing, NODE).unwrap_err();
    assert!(
        matches!(&err, Error::ProcRoot { path, .. } if path == &missing),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let err = Scanner::new(&file, NODE).unwrap_err();
    assert!(err.to_string().contains("a-file"), "{err}");
}

#[test]
fn every_fixture_directory_has_a_test() {
    let mut dirs: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    dirs.sort();
    assert_eq!(dirs, CASES);
    for case in CASES {
        let golden = case_root(case).join("expected.jsonl");
        assert!(golden.is_file(), "{}", golden.display());
    }
}

#[test]
fn golden_lines_are_valid_reports_of_the_api_shape() {
    for case in CASES {
        let golden = std::fs::read_to_string(case_root(case).join("expected.jsonl")).unwrap();
        for line in golden.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let state = v["state"].as_str().unwrap();
            assert!(
                MountState::ALL.iter().any(|s| s.as_str() == state),
                "{case}: {state}"
            );
            assert_eq!(v["node"], NODE);
            assert!(
                v["reason"].is_string() && v["message"].as_str().is_some_and(|m| !m.is_empty())
            );
            // ERROR, ORPHANED, INTERIM and UNSUPPORTED never say "dumpable".
            if !matches!(state, "ACTIVE" | "CATATONIC") {
                assert_eq!(v["dumpable"], false, "{case}: {line}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Robustness: deterministic garbage never panics
// ---------------------------------------------------------------------------------------------

/// A 64-bit LCG (Knuth's MMIX constants): deterministic, no crates.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// One random edit of `s`, on chars so the result stays valid UTF-8.
    fn mutate(&mut self, s: &str) -> String {
        const PIECES: &[&str] = &[
            " ",
            ",",
            "=",
            "-",
            " - ",
            ":",
            "\\",
            "\\040",
            "\\4",
            "\t",
            "0",
            "-1",
            "9",
            "x",
            "é",
            "pipe_ino=",
            "fd=",
            "pgrp=",
            "99999999999",
            "18446744073709551616",
            "2147483648",
            "autofs",
            "indirect",
            "(",
            ")",
            "]",
            "[",
            "",
        ];
        let mut chars: Vec<char> = s.chars().collect();
        let len = chars.len();
        match self.below(7) {
            0 if len > 0 => {
                let at = self.below(len);
                let n = 1 + self.below(8.min(len - at));
                chars.drain(at..at + n);
            }
            1 => {
                let at = self.below(len + 1);
                let piece = self.pick(PIECES);
                chars.splice(at..at, piece.chars());
            }
            2 if len > 0 => {
                let at = self.below(len);
                chars[at] = self.pick(PIECES).chars().next().unwrap_or('?');
            }
            3 => chars.truncate(self.below(len + 1)),
            4 if len > 1 => {
                let (a, b) = (self.below(len), self.below(len));
                chars.swap(a, b);
            }
            5 if len > 0 => {
                let at = self.below(len);
                let end = (at + 1 + self.below(12)).min(len);
                let copy: Vec<char> = chars[at..end].to_vec();
                chars.splice(at..at, copy);
            }
            _ => {
                let piece = self.pick(PIECES);
                chars.extend(piece.chars());
            }
        }
        chars.into_iter().collect()
    }

    fn mutate_n(&mut self, s: &str) -> String {
        let rounds = 1 + self.below(4);
        (0..rounds).fold(s.to_owned(), |acc, _| self.mutate(&acc))
    }

    /// Like `mutate_n`, and then sometimes bytes that are not UTF-8 (Latin-1, a cut UTF-8
    /// sequence, 0xff) at random places: /proc text is bytes.
    fn mutate_bytes(&mut self, s: &str) -> Vec<u8> {
        let mut bytes = self.mutate_n(s).into_bytes();
        for _ in 0..self.below(3) {
            let at = self.below(bytes.len() + 1);
            let bad: &[u8] = [&b"\xe9"[..], b"\xc3", b"\xff\xfe"][self.below(3)];
            bytes.splice(at..at, bad.iter().copied());
        }
        bytes
    }
}

const SEED_LINES: &[&str] = &[
    "40 22 0:52 / /home rw,relatime shared:25 - autofs /etc/auto.home rw,fd=5,pgrp=1234,timeout=300,minproto=5,maxproto=5,indirect,pipe_ino=39876",
    "41 40 0:53 / /net/fs rw,relatime shared:26 master:3 - autofs -hosts rw,fd=8,uid=1000,gid=1001,pgrp=1234,timeout=120,minproto=5,maxproto=5,offset,strictexpire,ignore,pipe_ino=40012",
    "42 22 0:54 / /mnt/with\\040space rw,relatime - autofs systemd-1 rw,fd=-1,pgrp=1,timeout=0,minproto=5,maxproto=5,direct,pipe_ino=-1",
    "43 22 0:55 / /old rw,relatime - autofs /etc/auto.old rw,fd=5,pgrp=0,timeout=300,minproto=3,maxproto=4,indirect",
    "44 22 0:56 / /big rw,relatime - autofs /etc/auto.big rw,fd=5,pgrp=1234,timeout=300,minproto=5,maxproto=5,indirect,pipe_ino=4294979641",
    "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro",
];

#[test]
fn garbage_mountinfo_options_stat_and_status_never_panic() {
    let mut rng = Lcg(0x5eed_a070);
    let stat = "1234 (auto mount) S 1 1234 1234 0 -1 4194560 1523 0 12 0 45 30 0 0 20 0 1 0 2817 1189277696";
    let status = "Name:\tautomount\nPPid:\t1\nNSpid:\t1234\t7\nNSpgid:\t1234\t7\n";
    let mut parsed = 0;
    for i in 0..4000 {
        let line = rng.mutate_bytes(SEED_LINES[i % SEED_LINES.len()]);
        if let Ok(m) = MountInfo::parse(&line) {
            parsed += 1;
            let _ = m.criu_s_dev();
            let _ = AutofsOptions::parse(&m.super_options).map(|o| o.proto_version());
        }
        let _ = looks_like_autofs(&line);
        let _ = unescape(&line);
        let options = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
        let _ = AutofsOptions::parse(options);
        let _ = AutofsOptions::parse(rng.mutate_bytes(&String::from_utf8_lossy(options)));
        let _ = ProcessInfo::parse(1234, &rng.mutate_bytes(stat), &rng.mutate_bytes(status));
    }
    // The mutations must not be so wild that nothing parses any more.
    assert!(parsed > 400, "only {parsed} mutated lines parsed");
}

#[test]
fn scans_of_garbage_proc_trees_never_panic_and_report_every_autofs_line() {
    use std::os::unix::fs::symlink;

    let mut rng = Lcg(0xdead_beef);
    for round in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut lines = Vec::new();
        for i in 0..100 {
            let seed = SEED_LINES[(i + round) % SEED_LINES.len()];
            let mut line = if rng.below(3) == 0 {
                seed.as_bytes().to_vec()
            } else {
                rng.mutate_bytes(seed)
            };
            for b in &mut line {
                if *b == b'\n' {
                    *b = b' ';
                }
            }
            lines.push(line);
        }
        let mountinfo: Vec<u8> = lines
            .iter()
            .flat_map(|l| l.iter().chain(b"\n"))
            .copied()
            .collect();
        let pids = [1, 1234, 1240, 5000];
        for (k, pid) in pids.into_iter().enumerate() {
            let p = root.join(pid.to_string());
            std::fs::create_dir_all(p.join("ns")).unwrap();
            std::fs::create_dir_all(p.join("fd")).unwrap();
            std::fs::create_dir_all(p.join("fdinfo")).unwrap();
            let stat = format!(
                "{pid} (d{k}) S 1 1234 1234 0 -1 4194560 1523 0 12 0 45 30 0 0 20 0 1 0 2817 1189277696"
            );
            let status = format!("PPid:\t1\nNSpid:\t{pid}\t{}\n", k + 1);
            let mnt = format!("mnt:[{}]", 4026531841 + (k as u64 % 2));
            let pidns = format!("pid:[{}]", 4026531836 + rng.below(2));
            let files = [
                ("stat", stat.into_bytes()),
                ("status", status.into_bytes()),
                ("mountinfo", mountinfo.clone()),
            ];
            for (name, text) in files {
                // Pid 1 keeps clean files, so its mountinfo is the host namespace's.
                let text = if pid != 1 && rng.below(4) == 0 {
                    rng.mutate_bytes(&String::from_utf8_lossy(&text))
                } else {
                    text
                };
                std::fs::write(p.join(name), text).unwrap();
            }
            symlink("/", p.join("root")).unwrap();
            let cgroup = rng.mutate_bytes(&format!("0::/system.slice/docker-{DOCKER_ID}.scope"));
            std::fs::write(p.join("cgroup"), cgroup).unwrap();
            let nonempty = |t: String| if t.is_empty() { "x".to_owned() } else { t };
            let mnt = if pid == 1 {
                mnt
            } else {
                nonempty(rng.mutate_n(&mnt))
            };
            symlink(mnt, p.join("ns/mnt")).unwrap();
            symlink(nonempty(rng.mutate_n(&pidns)), p.join("ns/pid")).unwrap();
            for fd in 3..8 {
                let ino: u64 = [39876, 40012, 4_294_979_641, 1][rng.below(4)];
                let target = rng.mutate_n(&format!("pipe:[{ino}]"));
                // Symlink targets cannot be empty.
                let target = if target.is_empty() {
                    "x".into()
                } else {
                    target
                };
                symlink(target, p.join(format!("fd/{fd}"))).unwrap();
                let flags = ["02000000", "02040001", "00", "01", "02"][rng.below(5)];
                let info = format!("pos:\t0\nflags:\t{flags}\nmnt_id:\t15\nino:\t{ino}\n");
                std::fs::write(p.join(format!("fdinfo/{fd}")), rng.mutate_n(&info)).unwrap();
            }
        }
        let probe = |_: &Path, ino: u64| -> io::Result<u64> {
            match ino % 3 {
                0 => Ok(ino % 1000),
                1 => Ok(0),
                _ => Err(io::Error::other("probe failed")),
            }
        };
        let scan = Scanner::new(root, NODE)
            .unwrap()
            .with_probe(probe)
            .scan()
            .unwrap();
        // One bad line never hides another: every autofs line of the host namespace (read
        // through pid 1) is reported, parsed or not.
        let autofs_lines = lines
            .iter()
            .filter(|l| !l.is_empty())
            .filter(|l| MountLine::parse(l).is_ok_and(|m| m.is_autofs()) || looks_like_autofs(l))
            .count();
        let host_reports = scan.reports.iter().filter(|r| r.mnt_ns == HOST_MNT).count();
        assert_eq!(host_reports, autofs_lines, "round {round}");
        for r in &scan.reports {
            assert!(!r.message.is_empty(), "{r:#?}");
            if !matches!(r.state, MountState::Active | MountState::Catatonic) {
                assert!(!r.dumpable, "{r:#?}");
            }
            serde_json::to_string(r).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CRIU's dumped tree, bytes, complete views, restricted views, CRIU's probe and numbers
// ---------------------------------------------------------------------------------------------

#[test]
fn host_pid_container_copy_is_orphaned_because_systemd_is_not_in_its_tree() {
    let scan = scan_case("host_pid_container_master_outside_tree");
    let host = mount(&scan, HOST_MNT, 41);
    assert_eq!(verdict(host), (MountState::Active, Reason::MasterHoldsPipe));
    assert_eq!(host.entry.unwrap().read_fd, Some(30));
    let copy = mount(&scan, 4026532500, 612);
    assert_eq!(
        verdict(copy),
        (MountState::Orphaned, Reason::MasterOutsideTree)
    );
    assert!(!copy.dumpable);
    assert_eq!(copy.owner_pid, 2345);
    assert_eq!(copy.container_id, DOCKER_ID);
    assert_eq!(
        copy.message,
        "failed to find pstree item with pid 1. Non-catatonic mount without master? (the master is not in the process tree CRIU dumps for this mount namespace: the master is pid 1 (systemd) of the host; CRIU dumps the tree rooted at pid 2345 (node_exporter) of container 9d2c7a1f4e8b)"
    );
    // Not translated into a tree it is no part of.
    assert_eq!(copy.entry.unwrap().pgrp, 1);
}

#[test]
fn application_container_of_a_shared_pid_pod_does_not_dump_the_sidecar_master() {
    let scan = scan_case("shared_pod_pid_namespace");
    let side = mount(&scan, 4026532810, 700);
    assert_eq!(verdict(side), (MountState::Active, Reason::MasterHoldsPipe));
    // The sidecar's own tree: pgrp 6000 is pid 7 of the pod's pid namespace.
    assert_eq!(side.entry.unwrap().pgrp, 7);
    let app = mount(&scan, 4026532820, 801);
    assert_eq!(
        verdict(app),
        (MountState::Orphaned, Reason::MasterOutsideTree)
    );
    assert_eq!(app.owner_pid, 6100);
    assert_eq!(app.container_id, "a".repeat(64));
    assert_eq!(app.pod_uid, POD_UID);
    assert!(
        app.message.contains(&format!(
            "the master is pid 6000 (automount) of container {}",
            "b".repeat(12)
        )),
        "{}",
        app.message
    );
    assert_eq!(app.entry.unwrap().pgrp, 6000);
}

#[test]
fn names_that_are_not_utf8_keep_their_bytes_and_change_no_verdict() {
    let scan = scan_case("names_that_are_not_utf8");
    let cafe = mount(&scan, HOST_MNT, 40);
    assert_eq!(verdict(cafe), (MountState::Active, Reason::MasterHoldsPipe));
    assert_eq!(cafe.mount_point_bytes, b"/mnt/caf\xe9");
    assert_eq!(cafe.mount_point, "/mnt/caf\\xe9");
    assert_eq!(cafe.source_bytes, b"auto.\xff");
    assert_eq!(cafe.source, "auto.\\xff");
    let delegated = mount(&scan, HOST_MNT, 41);
    assert_eq!(
        verdict(delegated),
        (MountState::Orphaned, Reason::ReadEndDelegated)
    );
    assert!(
        delegated
            .message
            .ends_with("The read end is held by pid 1310 (help\\xe9r, pgrp 1310) fd 3"),
        "{}",
        delegated.message
    );
    // The container: owner named in Latin-1, a Latin-1 segment in its cgroup path.
    let c = mount(&scan, 4026532400, 612);
    assert_eq!(verdict(c), (MountState::Active, Reason::MasterHoldsPipe));
    assert_eq!(c.mount_point_bytes, b"/mnt/\xc3");
    assert_eq!((c.owner_pid, c.entry.unwrap().pgrp), (4990, 7));
    assert_eq!(
        (c.container_id.as_str(), c.pod_uid.as_str()),
        (CONTAINERD_ID, POD_UID)
    );
    // The non-autofs Latin-1 mount hides nothing: three reports, nothing else.
    assert_eq!(scan.reports.len(), 3);
}

#[test]
fn criu_probe_saves_only_uncovered_direct_mounts_with_a_small_minor_and_dev_autofs() {
    let scan = scan_case("criu_probe_of_direct_mounts");
    let saved = mount(&scan, HOST_MNT, 40);
    assert_eq!(
        verdict(saved),
        (MountState::Catatonic, Reason::ProbeMakesCatatonic)
    );
    assert!(saved.dumpable);
    assert_eq!(saved.entry, Some(entry(-1, 1234, 300, 5, 5, DIRECT)));
    assert!(saved.criu_notes[0].contains("leaves this mount catatonic"));
    // A request the daemon read and never answered would make CRIU's probe hang; /proc cannot
    // show one, and the message says so.
    assert!(
        saved
            .message
            .ends_with("CRIU's probe joins it and the dump hangs; /proc shows no such request"),
        "{}",
        saved.message
    );
    let unreachable = |r: &MountReport, why: &str| {
        assert_eq!(
            verdict(r),
            (MountState::Orphaned, Reason::HiddenCatatonic),
            "{r:#?}"
        );
        assert!(!r.dumpable);
        assert!(
            r.message
                .ends_with(&format!("Autofs {} is alive, but unreachable.", r.mount_id)),
            "{}",
            r.message
        );
        assert!(r.message.contains(why), "{}", r.message);
    };
    unreachable(mount(&scan, HOST_MNT, 41), "another mount covers its root");
    unreachable(mount(&scan, HOST_MNT, 42), "minor 300 ≥ 256");
    unreachable(mount(&scan, 4026532400, 612), "has no /dev/autofs");
    // Indirect roots are never probed.
    let indirect = mount(&scan, HOST_MNT, 43);
    assert_eq!(
        verdict(indirect),
        (MountState::Orphaned, Reason::HiddenCatatonic)
    );
}

#[test]
fn a_probe_that_cannot_reach_the_kernel_fails_whoever_the_unreadable_fds_hold() {
    // The real automount SIGKILLed and left unreaped: its pipes have no holder the agent can
    // see, and one bystander's fds could not be read. A covered root or a minor ≥ 256 keeps
    // CRIU's probe from the kernel whatever that bystander holds: CRIU fails, certainly.
    let case = "unreachable_probes_with_unreadable_fds";
    let scan = scan_case(case);
    assert_eq!(scan.stats.unreadable, 1);
    let bystander = format!(
        "the fds of 1 process(es) could not be read, e.g. cannot read {}: Not a directory",
        case_root(case).join("3000/fd").display()
    );
    for (id, why) in [
        (40, "another mount covers its root"),
        (42, "minor 300 ≥ 256"),
    ] {
        let r = mount(&scan, HOST_MNT, id);
        assert_eq!(
            (r.state, r.reason, r.dumpable),
            (MountState::Orphaned, Reason::HiddenCatatonic, false),
            "{r:#?}"
        );
        assert!(r.message.starts_with(&format!(
            "Master 2000 doesn't have a read end of the pipe with inode {} opened.",
            r.pipe_ino
        )));
        assert!(r.message.contains(why), "{}", r.message);
        assert!(r.message.contains(&bystander), "{}", r.message);
        assert!(
            r.message.contains("one of them might hold it"),
            "{}",
            r.message
        );
        assert!(
            r.message
                .ends_with(&format!("Autofs {id} is alive, but unreachable.")),
            "{}",
            r.message
        );
    }
    // Uncovered, small minor, /dev/autofs there: the probe's request reaches the kernel, and
    // whether it finds a reader rests on the fds that could not be read.
    let reachable = mount(&scan, HOST_MNT, 41);
    assert_eq!(
        verdict(reachable),
        (MountState::Error, Reason::ProcUnreadable),
        "{reachable:#?}"
    );
    assert!(
        reachable
            .message
            .contains("depends on the fds of 1 process(es) that could not be read"),
        "{}",
        reachable.message
    );
}

#[test]
fn criu_probes_a_superblock_through_the_one_mount_its_dump_one_fs_reaches_first() {
    let scan = scan_case("criu_probe_of_direct_mounts");
    // /srv/c (44) is covered, its bind /srv/c2 (45) is not: CRIU's list is the mount table
    // reversed, so dump_one_fs() calls autofs_dump() on 45, whose probe turns the superblock
    // catatonic, and marks 44 dumped with it.
    for id in [44, 45] {
        let r = mount(&scan, HOST_MNT, id);
        assert_eq!(
            (r.state, r.reason, r.dumpable),
            (MountState::Catatonic, Reason::ProbeMakesCatatonic, true),
            "{r:#?}"
        );
        assert_eq!(r.entry.unwrap().fd, -1);
    }
    assert!(
        mount(&scan, HOST_MNT, 44)
            .criu_notes
            .iter()
            .any(|n| n.starts_with("CRIU dumps this superblock from mount 45")),
        "{:?}",
        mount(&scan, HOST_MNT, 44).criu_notes
    );
    // /srv/d (46) is uncovered, its bind /srv/d2 (47) is covered: CRIU probes through 47, the
    // open lands in the tmpfs, and the dump fails for the superblock, 46 included.
    for id in [46, 47] {
        let r = mount(&scan, HOST_MNT, id);
        assert_eq!(
            (r.state, r.reason, r.dumpable),
            (MountState::Orphaned, Reason::HiddenCatatonic, false),
            "{r:#?}"
        );
        assert!(
            r.message
                .ends_with("another mount covers its root, so CRIU's open lands in that mount): Autofs 47 is alive, but unreachable."),
            "{}",
            r.message
        );
    }
}

#[test]
fn numbers_the_kernel_prints_get_criu_values_and_outcomes() {
    let scan = scan_case("numbers_criu_parses_differently");
    let wrapped = mount(&scan, HOST_MNT, 40);
    assert_eq!(
        verdict(wrapped),
        (MountState::Active, Reason::MasterHoldsPipe)
    );
    let e = wrapped.entry.unwrap();
    assert_eq!((e.uid, e.gid), (Some(-2), Some(-1_294_967_296)));
    assert_eq!(wrapped.criu_notes.len(), 2, "{:?}", wrapped.criu_notes);
    assert!(wrapped.criu_notes[0].starts_with("uid=4294967294 exceeds INT_MAX"));
    assert!(wrapped.criu_notes[1].contains("the restore fails"));
    // timeout beyond INT_MAX: CRIU's parse fails even for a catatonic mount.
    let long = mount(&scan, HOST_MNT, 41);
    assert_eq!(
        verdict(long),
        (MountState::Unsupported, Reason::OptionOutOfIntRange)
    );
    assert!(!long.dumpable);
    assert!(
        long.message
            .starts_with("value 0x80000000 (2147483648) is out of int range")
    );
    // minproto=-1 is what the kernel prints after a mount with minproto=4294967295: CRIU's
    // xatoi takes it, so the dump goes on and records it; only the restore's mount fails.
    let negative = mount(&scan, HOST_MNT, 42);
    assert_eq!(
        verdict(negative),
        (MountState::Catatonic, Reason::Catatonic)
    );
    assert!(negative.dumpable);
    assert_eq!(negative.entry, Some(entry(-1, 1234, 0, -1, 5, DIRECT)));
    assert_eq!(negative.criu_notes.len(), 1, "{:?}", negative.criu_notes);
    assert!(
        negative.criu_notes[0].starts_with("minproto=-1: ")
            && negative.criu_notes[0].contains("the restore fails"),
        "{:?}",
        negative.criu_notes
    );
}

#[test]
fn a_pgrp_that_names_a_thread_is_no_master_criu_can_find() {
    let scan = scan_case("pgrp_names_a_thread");
    let r = only(&scan);
    // CRIU reads the thread's fd table (its process's) and finds the read end, the empty pipe
    // and the write end; then pid_to_virt() finds no process with that pid.
    assert_eq!(
        verdict(r),
        (MountState::Orphaned, Reason::MasterOutsideTree),
        "{r:#?}"
    );
    assert!(!r.dumpable);
    assert_eq!((r.read_end_pid, r.read_end_fd), (1301, 4));
    assert!(r.write_end_held);
    assert!(
        r.message.starts_with(
            "failed to find pstree item with pid 1301. Non-catatonic mount without master? (pgrp 1301 names a thread of pid 1234, not a process"
        ),
        "{}",
        r.message
    );
    // No virtual pgrp: the entry keeps the raw one.
    assert_eq!(r.entry.unwrap().pgrp, 1301);
}

#[test]
fn uid_and_gid_are_recorded_as_the_dumped_user_namespace_sees_them() {
    let scan = scan_case("userns_container_ids");
    // uid=101000 is container uid 1000; gid=1000 is outside the container's gid_map.
    let active = mount(&scan, CONTAINER_MNT, 612);
    assert_eq!(
        verdict(active),
        (MountState::Active, Reason::MasterHoldsPipe),
        "{active:#?}"
    );
    assert!(active.dumpable);
    let e = active.entry.unwrap();
    assert_eq!((e.uid, e.gid, e.pgrp), (Some(1000), Some(-1), 7));
    assert_eq!(active.criu_notes.len(), 2, "{:?}", active.criu_notes);
    assert!(
        active.criu_notes[0].starts_with(
            "uid=101000 is a host id: CRIU maps it into the user namespace of pid 4990"
        ) && active.criu_notes[0].ends_with("records uid 1000"),
        "{:?}",
        active.criu_notes
    );
    assert!(
        active.criu_notes[1].starts_with("gid=1000 is outside the gid_map of pid 4990")
            && active.criu_notes[1].contains("records gid -1")
            && active.criu_notes[1].ends_with("so the restore fails"),
        "{:?}",
        active.criu_notes
    );
    // CRIU's probe turns the direct mount catatonic and parses the options it reads again:
    // raw, so the host uid goes into the image.
    let probed = mount(&scan, CONTAINER_MNT, 613);
    assert_eq!(
        verdict(probed),
        (MountState::Catatonic, Reason::ProbeMakesCatatonic),
        "{probed:#?}"
    );
    let e = probed.entry.unwrap();
    assert_eq!((e.fd, e.uid, e.gid), (-1, Some(101_000), None));
    assert!(
        probed
            .criu_notes
            .iter()
            .any(|n| n.starts_with("CRIU's probe path records the raw host uid 101000 instead")),
        "{:?}",
        probed.criu_notes
    );
    // Host uid 200000 is container uid 2147483648: CRIU's %d makes it INT_MIN, its marker for
    // an option not seen, so no uid is recorded, and its probe path (raw uid=200000 read
    // again) keeps has_uid as the first parse left it.
    let unseen = mount(&scan, CONTAINER_MNT, 614);
    assert_eq!(
        verdict(unseen),
        (MountState::Catatonic, Reason::ProbeMakesCatatonic),
        "{unseen:#?}"
    );
    let e = unseen.entry.unwrap();
    assert_eq!((e.fd, e.uid, e.gid), (-1, None, None));
    assert!(
        unseen.criu_notes[0].starts_with("uid=200000: CRIU's rewrite of the option")
            && unseen.criu_notes[0].contains("gives -2147483648, which is INT_MIN")
            && unseen.criu_notes[0].contains("records no uid"),
        "{:?}",
        unseen.criu_notes
    );
    assert!(
        !unseen.criu_notes.iter().any(|n| n.contains("raw host uid")),
        "{:?}",
        unseen.criu_notes
    );
}

#[test]
fn a_superblock_no_mount_of_the_dump_shows_from_its_root_is_not_dumpable() {
    let scan = scan_case("superblock_without_a_root_mount");
    let rootless_note = |r: &MountReport| {
        r.criu_notes
            .iter()
            .find(|n| n.contains("Unable to dump a file system for"))
            .cloned()
    };
    // The kernel state is the same for all: the daemon holds both ends of an empty pipe.
    for id in [40, 41, 42] {
        assert_eq!(
            verdict(mount(&scan, HOST_MNT, id)),
            (MountState::Active, Reason::MasterHoldsPipe)
        );
    }
    // Only a bind of /alice is left of its superblock: CRIU never calls autofs_dump().
    let alice = mount(&scan, HOST_MNT, 40);
    assert!(!alice.dumpable && alice.blocks_dump());
    let note = rootless_note(alice).expect("a note says why");
    assert!(
        note.contains("(this one shows /alice)")
            && note.ends_with("Unable to dump a file system for 40:/srv/alice"),
        "{note}"
    );
    // /home2/bob is dumped with /home, which shows the root of the same superblock.
    for id in [41, 42] {
        let r = mount(&scan, HOST_MNT, id);
        assert!(r.dumpable, "{r:#?}");
        assert_eq!(rootless_note(r), None);
    }
    // The container is dumped without the host's namespace: its bind stands alone.
    let data = mount(&scan, CONTAINER_MNT, 612);
    assert!(!data.dumpable);
    assert!(
        rootless_note(data)
            .is_some_and(|n| n.ends_with("Unable to dump a file system for 612:/data")),
        "{data:#?}"
    );
}

#[test]
fn a_daemon_keeping_the_write_end_of_its_catatonic_mount_blocks_criu_pipe_dump() {
    let scan = scan_case("catatonic_daemon_keeps_its_write_end");
    let catatonic = mount(&scan, CONTAINER_MNT, 612);
    assert_eq!(
        verdict(catatonic),
        (MountState::Catatonic, Reason::Catatonic)
    );
    assert!(!catatonic.dumpable && catatonic.blocks_dump());
    assert_eq!(catatonic.criu_notes.len(), 1, "{:?}", catatonic.criu_notes);
    let note = &catatonic.criu_notes[0];
    assert!(
        note.starts_with(
            "pid 5000 (automount), which CRIU dumps, holds fd 5 of pipe 72001, in packet mode"
        ) && note.ends_with("The packetized mode for pipes is not supported yet"),
        "{note}"
    );
    // The live mount's own pipe is exempt (its write end has O_DIRECT too), and a plain pipe
    // is no trouble; but its daemon is the one that keeps the leftover, which fails the dump
    // whichever mount is asked about (unmounting the catatonic one does not close it).
    let live = mount(&scan, CONTAINER_MNT, 613);
    assert_eq!(verdict(live), (MountState::Active, Reason::MasterHoldsPipe));
    assert!(!live.dumpable && live.blocks_when_external, "{live:#?}");
    assert_eq!(live.criu_notes, catatonic.criu_notes);
    // A leftover held outside the tree CRIU dumps is not dumped.
    let other = mount(&scan, 4026532500, 712);
    assert_eq!(verdict(other), (MountState::Catatonic, Reason::Catatonic));
    assert!(other.dumpable && other.criu_notes.is_empty(), "{other:#?}");
}

#[test]
fn a_catatonic_mounts_group_outlives_its_leader_and_its_leftover_end_still_blocks_criu() {
    let scan = scan_case("catatonic_group_member_keeps_the_write_end");
    // The leader (5000) is gone; its helper, still in the group, holds the end.
    let blocked = mount(&scan, CONTAINER_MNT, 612);
    assert_eq!(verdict(blocked), (MountState::Catatonic, Reason::Catatonic));
    assert!(
        !blocked.dumpable && blocked.blocks_when_external,
        "{blocked:#?}"
    );
    assert_eq!(blocked.criu_notes.len(), 1, "{:?}", blocked.criu_notes);
    let note = &blocked.criu_notes[0];
    assert!(
        note.starts_with(
            "pid 5001 (automount), which CRIU dumps, holds fd 5 of pipe 72001, in packet mode"
        ) && note.ends_with("The packetized mode for pipes is not supported yet"),
        "{note}"
    );
    // The helper's fds cannot be read: unknown, so not dumpable, and said why.
    let unknown = mount(&scan, 4026532500, 712);
    assert_eq!(
        verdict(unknown),
        (MountState::Error, Reason::ProcUnreadable)
    );
    assert!(!unknown.dumpable, "{unknown:#?}");
    assert!(
        unknown.message.starts_with(
            "CATATONIC, but whether its process group 7000 keeps a pipe end in packet mode in the tree CRIU dumps could not be checked: cannot read the fds of pid 7001"
        ),
        "{}",
        unknown.message
    );
}

#[test]
fn with_pid1_hidden_a_missing_daemon_is_unknown_not_gone() {
    let scan = scan_case("pid1_hidden_daemon_missing");
    assert!(scan.view.restricted, "{:?}", scan.view);
    let r = only(&scan);
    assert_eq!(verdict(r), (MountState::Error, Reason::ProcUnreadable));
    assert!(!r.dumpable);
    assert!(
        r.message
            .starts_with("cannot tell a live master from a gone one"),
        "{}",
        r.message
    );
    assert!(r.message.contains("pid 1 is not listed"), "{}", r.message);
}

#[test]
fn with_pid1_hidden_a_probe_that_cannot_reach_the_kernel_still_fails() {
    let scan = scan_case("unreachable_probe_in_a_restricted_view");
    assert!(scan.view.restricted, "{:?}", scan.view);
    // Covered: CRIU's open lands in the tmpfs whatever a hidden process holds.
    let covered = mount(&scan, HOST_MNT, 40);
    assert_eq!(
        (covered.state, covered.reason, covered.dumpable),
        (MountState::Orphaned, Reason::HiddenCatatonic, false),
        "{covered:#?}"
    );
    assert!(
        covered.message.contains("another mount covers its root"),
        "{}",
        covered.message
    );
    assert!(
        covered.message.contains("pid 1 is not listed"),
        "{}",
        covered.message
    );
    assert!(
        covered
            .message
            .ends_with("Autofs 40 is alive, but unreachable."),
        "{}",
        covered.message
    );
    // Uncovered: with nothing hidden, the probe would turn it catatonic and CRIU would dump
    // it; a hidden reader would answer the probe instead. Unknown, and not "CRIU would fail".
    let uncovered = mount(&scan, HOST_MNT, 41);
    assert_eq!(
        verdict(uncovered),
        (MountState::Error, Reason::ProcUnreadable)
    );
    assert!(
        uncovered.message.ends_with(
            "Whether CRIU's probe turns it catatonic (no reader anywhere) or fails (a reader answers) depends on processes hidden from the agent: the agent's view of /proc is restricted: pid 1 is not listed in the proc root: processes are hidden"
        ),
        "{}",
        uncovered.message
    );
    assert!(
        !uncovered.message.contains("CRIU would fail"),
        "{}",
        uncovered.message
    );
}

#[test]
fn chrooted_members_never_give_a_partial_view() {
    let scan = scan_case("chrooted_members");
    // The owner 700 is chrooted; its child 701 sees the whole table.
    let copy = mount(&scan, 4026532700, 306);
    assert_eq!(copy.owner_pid, 700);
    assert_ne!(copy.reason, Reason::MountTableUnreadable);
    // Every member of 4026532710 is chrooted: no complete view, said so.
    let none = mount(&scan, 4026532710, 0);
    assert_eq!(
        verdict(none),
        (MountState::Error, Reason::MountTableUnreadable)
    );
    assert!(
        none.message
            .contains("pid 710: its root is /srv/jail (chrooted: a partial view)"),
        "{}",
        none.message
    );
    let ns = scan
        .namespaces
        .iter()
        .find(|n| n.mnt_ns == 4026532710)
        .unwrap();
    assert!(ns.mount_table_error.is_some());
}

#[test]
fn a_delegated_read_end_found_once_is_rechecked_without_a_census() {
    let root = case_root("orphaned_read_end_delegated");
    let scanner = Scanner::new(&root, NODE)
        .unwrap()
        .with_probe(table_probe(queue_table(&root)));
    let first = scanner.scan().unwrap();
    let second = scanner.scan().unwrap();
    // The first scan had to look for the holder everywhere; the second re-checks it.
    assert_eq!(first.stats.census_pipes, 1);
    assert_eq!(second.stats.census_pipes, 0);
    assert!(
        second.stats.fds < first.stats.fds,
        "{:?} {:?}",
        first.stats,
        second.stats
    );
    assert_eq!(first.reports, second.reports);
    assert_eq!(
        verdict(only(&second)),
        (MountState::Orphaned, Reason::ReadEndDelegated)
    );
}

#[test]
fn facts_that_cannot_be_read_are_errors_never_orphans() {
    let scan = scan_case("unreadable_facts_are_errors");
    // The daemon's ns/pid cannot be read: whether it is in the dumped tree is unknown.
    let r = mount(&scan, 4026532400, 612);
    assert_eq!(
        verdict(r),
        (MountState::Error, Reason::ProcUnreadable),
        "{r:#?}"
    );
    assert!(!r.dumpable);
    assert!(r.message.contains("5000/ns/pid"), "{}", r.message);
    // A stray separator: reported as an error, not read as another filesystem type.
    let stray = mount(&scan, 4026532400, 613);
    assert_eq!(
        verdict(stray),
        (MountState::Error, Reason::MalformedMountinfo)
    );
    assert_eq!(stray.mount_point, "/mnt/stray");
}
