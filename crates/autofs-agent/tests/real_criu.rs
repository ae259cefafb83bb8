//! The agent's verdicts against a real `criu dump --leave-running` of the scenario's tree (its
//! pid namespace's init): dumpable exactly when the dump succeeds, the autofs images byte for
//! byte the ones CRIU writes, and CRIU's own error line in our message or notes when it refuses.
//!
//! Needs CRIU 4.2 (`scripts/install-criu` builds it into `/opt/criu/current/criu`; or
//! `$AUTOFS_TEST_CRIU`); fails, never skips, without it. Part of the default nextest run; alone:
//! `cargo nextest run -P real-criu -p autofs-agent --all-features`.
//!
//! Each test scans first, then dumps: CRIU's probe may turn a mount catatonic. CRIU freezes
//! and ptrace-seizes only the scenario's own processes and leaves them running.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use autofs_api::v1;
use autofs_testkit::HANG_GUARD;
use autofs_testkit::{Answer, AutomountSpec, MountInfoLine, MountSpec, RequesterOutcome, Scenario};
use serde_json::Value;

/// CRIU's binary: `$AUTOFS_TEST_CRIU`, else what `scripts/install-criu` installs.
fn criu_bin() -> PathBuf {
    let bin = std::env::var_os("AUTOFS_TEST_CRIU")
        .map_or_else(|| PathBuf::from("/opt/criu/current/criu"), PathBuf::from);
    assert!(
        bin.is_file(),
        "no CRIU at {} (run scripts/install-criu, or set AUTOFS_TEST_CRIU)",
        bin.display()
    );
    bin
}

/// One `criu dump` and what it left: its exit, the text of its `Error` lines, what else it and
/// the programs it runs (such as `tar` for tmpfs content) said (its stderr and the lines of its
/// log it did not write itself), its images.
struct Dump {
    ok: bool,
    errors: Vec<String>,
    others: Vec<String>,
    dir: tempfile::TempDir,
}

impl Dump {
    fn has_error(&self, text: &str) -> bool {
        self.errors.iter().any(|e| e.contains(text))
    }

    /// Asserts that the dump failed and that `line` is among its errors.
    #[track_caller]
    fn assert_failed_with(&self, line: &str) {
        assert!(!self.ok, "criu dump succeeded: {:#?}", self.errors);
        assert!(self.has_error(line), "{line:?} not in {:#?}", self.errors);
    }

    /// Everything it said, for the message of a dump that should have passed.
    fn said(&self) -> String {
        format!("{:#?}\nother output: {:#?}", self.errors, self.others)
    }
}

/// Dumps the scenario's whole tree (its pid namespace's init) and leaves it running.
/// `--timeout 10` (CRIU's default, spelled out): its own bound on freezing the tree, in seconds.
/// A refusal at the freeze (a requester asleep in the kernel) takes that long; a freeze that
/// succeeds takes milliseconds, so no loaded machine makes a dump that should pass fail here.
/// Network namespace files bound on the host (`ip netns add` of other tests, under the shared
/// `/run/netns`) were copied into the scenario's mount namespace when it was made; CRIU cannot
/// dump such an nsfs mount ("doesn't have a proper root mount") unless told it is external.
fn criu_dump(sc: &Scenario) -> Dump {
    criu_dump_tree(sc.init_host_pid(), &[])
}

/// [`criu_dump`] of the tree rooted at host pid `root`, also telling CRIU that the mounts at
/// `external` (paths in the tree's mount namespace) are external (`--external mnt[PATH]:KEY`,
/// as runc passes every bind mount of a container).
///
/// The tmpfs mounts the tree's namespace inherited from this process's (its `/tmp`, `/run`,
/// `/dev/shm` where they are tmpfs: same superblock) are external too, as runc marks the host's
/// mounts of a container: CRIU would otherwise archive their content with `tar`, which fails
/// while other tests write there. The scenario's own tmpfs mounts are new superblocks and are
/// dumped.
fn criu_dump_tree(root: i32, external_mounts: &[&str]) -> Dump {
    let dir = tempfile::tempdir().unwrap();
    let host_tmpfs: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(MountInfoLine::parse)
        .filter(|l| l.fstype == "tmpfs")
        .map(|l| l.dev)
        .collect();
    let mountinfo = std::fs::read_to_string(format!("/proc/{root}/mountinfo")).unwrap();
    let mut external: Vec<String> = mountinfo
        .lines()
        .filter_map(MountInfoLine::parse)
        .filter_map(|l| {
            let kind = match l.fstype.as_str() {
                "nsfs" => "nsfs",
                "tmpfs" if host_tmpfs.contains(&l.dev) => "tmpfs",
                _ => return None,
            };
            let point = l.mount_point.display().to_string();
            (!external_mounts.contains(&point.as_str()))
                .then(|| format!("mnt[{point}]:{kind}{}", l.mount_id))
        })
        .collect();
    external.extend(
        external_mounts
            .iter()
            .enumerate()
            .map(|(i, path)| format!("mnt[{path}]:bind{i}")),
    );
    let mut cmd = Command::new(criu_bin());
    for e in &external {
        cmd.arg("--external").arg(e);
    }
    let out = cmd
        .args(["dump", "--leave-running", "--timeout", "10", "-v4"])
        .args(["-o", "dump.log", "-t"])
        .arg(root.to_string())
        .arg("-D")
        .arg(dir.path())
        .output()
        .expect("run criu");
    let log = std::fs::read_to_string(dir.path().join("dump.log")).unwrap_or_else(|e| {
        panic!(
            "criu wrote no log ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    // "(00.061244) Error (criu/autofs.c:210): Failed to find read pipe fd ..."
    let errors = log
        .lines()
        .filter_map(|l| l.split_once(" Error (")?.1.split_once("): "))
        .map(|(_, text)| text.to_owned())
        .collect();
    Dump {
        ok: out.status.success(),
        errors,
        others: String::from_utf8_lossy(&out.stderr)
            .lines()
            .chain(log.lines().filter(|l| !l.starts_with('(')))
            .map(str::to_owned)
            .collect(),
        dir,
    }
}

/// `autofs-agent scan --json --criu-images DIR`, of the scenario's mount namespace (`pid`
/// `Some`) or of the whole node; returns the reports and the image dir.
fn scan(sc: &Scenario, only_init_ns: bool) -> (Vec<Value>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_autofs-agent"));
    cmd.args(["scan", "--json", "--criu-images"])
        .arg(dir.path())
        .env_remove("AUTOFS_AGENT_PROC_ROOT");
    if only_init_ns {
        cmd.arg("--pid").arg(sc.init_host_pid().to_string());
    }
    let out = cmd.output().expect("run autofs-agent");
    let reports = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (reports, dir)
}

/// `autofs-<s_dev>.img` name → bytes, of the files right in `dir`.
fn autofs_images(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.starts_with("autofs-")
                .then(|| (name, std::fs::read(e.path()).unwrap()))
        })
        .collect()
}

fn by_mount_id(reports: &[Value], id: u32) -> &Value {
    reports
        .iter()
        .find(|r| r["mount_id"] == id)
        .unwrap_or_else(|| panic!("mount {id} missing from {reports:#?}"))
}

/// Our text about one mount: the message and the CRIU notes.
fn our_text(r: &Value) -> String {
    let mut s = r["message"].as_str().unwrap_or_default().to_owned();
    for n in r["criu_notes"].as_array().into_iter().flatten() {
        s.push('\n');
        s.push_str(n.as_str().unwrap_or_default());
    }
    s
}

/// Scans the scenario's namespace, then dumps: every mount dumpable and the dump succeeds, and
/// our images are CRIU's (same files, same bytes).
fn assert_dumped_as_predicted(sc: &Scenario) -> (Vec<Value>, Dump) {
    let (reports, ours) = scan(sc, true);
    let dump = criu_dump(sc);
    assert!(
        !reports.is_empty() && reports.iter().all(|r| r["dumpable"] == true),
        "{reports:#?}"
    );
    assert!(dump.ok, "criu dump failed: {}", dump.said());
    assert_eq!(
        autofs_images(&ours.path().join(sc.mnt_ns().to_string())),
        autofs_images(dump.dir.path()),
        "our images (left) and CRIU's"
    );
    (reports, dump)
}

/// Scans the scenario's namespace, then dumps: the mount is not dumpable, the dump fails, and
/// `criu_line` (CRIU's error line, built from what the scenario knows) is both in CRIU's log
/// and in our message or notes.
fn assert_refused_as_predicted(sc: &Scenario, mount_id: u32, criu_line: &str) {
    let (reports, _) = scan(sc, true);
    let dump = criu_dump(sc);
    let r = by_mount_id(&reports, mount_id);
    assert_eq!(r["dumpable"], false, "{r:#?}");
    dump.assert_failed_with(criu_line);
    assert!(
        our_text(r).contains(criu_line),
        "{criu_line:?} not in {r:#?}"
    );
    assert!(
        autofs_images(dump.dir.path()).is_empty(),
        "CRIU wrote no autofs image"
    );
}

#[test]
fn active_systemd_like_and_catatonic_mounts_dump_to_the_images_we_write() {
    let mut sc = Scenario::start_or_panic();
    sc.mount(MountSpec::indirect().timeout(300).uid(1000).gid(100))
        .unwrap();
    sc.mount(MountSpec::direct().strictexpire().minproto(3).timeout(7))
        .unwrap();
    sc.mount(MountSpec::offset()).unwrap();
    sc.mount(MountSpec::direct().close_write()).unwrap();
    let catatonic = sc.mount(MountSpec::indirect()).unwrap();
    sc.make_catatonic(&catatonic, HANG_GUARD).unwrap();
    let (reports, _) = assert_dumped_as_predicted(&sc);
    assert_eq!(reports.len(), 5, "{reports:#?}");
    assert_eq!(
        by_mount_id(&reports, catatonic.mount_id)["state"],
        "CATATONIC"
    );
}

#[test]
fn the_real_automount_daemon_dumps_to_the_image_we_write() {
    let mut sc = Scenario::start_or_panic();
    let a = sc.start_automount(AutomountSpec::default()).unwrap();
    let (reports, _) = assert_dumped_as_predicted(&sc);
    assert_eq!(by_mount_id(&reports, a.mount_id)["state"], "ACTIVE");
}

#[test]
fn criu_probe_turns_a_live_leader_s_direct_mount_catatonic_and_dumps_it_as_we_predict() {
    let mut sc = Scenario::start_or_panic();
    let d = probe_path_mount(&mut sc);
    let (reports, dump) = assert_dumped_as_predicted(&sc);
    let r = by_mount_id(&reports, d.mount_id);
    assert_eq!(r["state"], "CATATONIC", "{r:#?}");
    let line = format!(
        "Master {} doesn't have a read end of the pipe with inode {} opened",
        d.host_pid, d.pipe_ino
    );
    assert!(dump.has_error(&line), "{line:?} not in {:#?}", dump.errors);
    assert!(our_text(r).contains(&line), "{r:#?}");
    let after = sc.mount_line(d.mount_id).unwrap();
    assert_eq!(
        after.option("fd"),
        Some("-1"),
        "CRIU's probe left it catatonic"
    );
}

#[test]
fn a_namespace_made_inside_the_container_is_dumped_with_it_to_the_image_we_write() {
    // `scan --pid` is one mount namespace; CRIU dumps every namespace of the tree, so the
    // aside namespace's mount is compared through a whole-node scan.
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect().aside()).unwrap();
    let aside_ns = d.aside.as_ref().unwrap().mnt_ns;
    let (reports, ours) = scan(&sc, false);
    let dump = criu_dump(&sc);
    let r = reports
        .iter()
        .find(|r| r["mnt_ns"] == aside_ns && r["mount_id"] == d.mount_id)
        .unwrap_or_else(|| panic!("{reports:#?}"));
    assert_eq!(r["dumpable"], true, "{r:#?}");
    assert!(dump.ok, "criu dump failed: {}", dump.said());
    assert_eq!(
        autofs_images(&ours.path().join(aside_ns.to_string())),
        autofs_images(dump.dir.path())
    );
}

#[test]
fn criu_probes_a_superblock_in_two_namespaces_through_the_one_it_found_last() {
    // A direct mount whose daemon closed its read end, copied into a namespace made below the
    // init, then covered in the init's namespace only. CRIU walks the namespace it discovered
    // last (the copy's) first, so its bind ring starts at the copy, which it probes: the
    // probe reaches the root, turns the mount catatonic, and the dump passes. Judged from the
    // init's namespace alone, the covered mount would be "alive, but unreachable".
    let mut sc = Scenario::start_or_panic();
    let d = probe_path_mount(&mut sc);
    let copy = sc.ns_member(None, false).unwrap();
    sc.cover(&d, &d.mount_point).unwrap();
    let (reports, ours) = scan(&sc, false);
    let dump = criu_dump(&sc);
    let point = d.mount_point.display().to_string();
    for mnt_ns in [sc.mnt_ns(), copy.mnt_ns] {
        let r = reports
            .iter()
            .find(|r| r["mnt_ns"] == mnt_ns && r["mount_point"] == point.as_str())
            .unwrap_or_else(|| panic!("{point} of {mnt_ns} not in {reports:#?}"));
        assert_eq!(
            (&r["dumpable"], &r["reason"]),
            (&Value::from(true), &Value::from("PROBE_MAKES_CATATONIC")),
            "{r:#?}"
        );
        if mnt_ns == sc.mnt_ns() {
            let through = format!("of mount namespace {}", copy.mnt_ns);
            assert!(our_text(r).contains(&through), "{through:?} not in {r:#?}");
        }
    }
    assert!(dump.ok, "criu dump failed: {}", dump.said());
    assert_eq!(
        autofs_images(&ours.path().join(sc.mnt_ns().to_string())),
        autofs_images(dump.dir.path()),
        "our images (left) and CRIU's"
    );
}

/// A direct mount whose live daemon closed its read end: on CRIU's probe path, which reaches
/// it only with a minor below 256 (its devid encoding).
fn probe_path_mount(sc: &mut Scenario) -> autofs_testkit::Daemon {
    let d = sc.mount(MountSpec::direct()).unwrap();
    sc.close_read(&d).unwrap();
    assert!(
        minor(sc, d.mount_id) < 256,
        "CRIU's probe reaches only minors below 256 (its devid encoding); this machine gave more"
    );
    d
}

/// The device minor of a mount of the scenario (`maj:min` in mountinfo).
fn minor(sc: &Scenario, mount_id: u32) -> u32 {
    let dev = sc.mount_line(mount_id).unwrap().dev;
    dev.split_once(':')
        .and_then(|(_, m)| m.parse().ok())
        .unwrap_or_else(|| panic!("device {dev}"))
}

fn read_end_missing(ino: u64, pgrp: i32) -> String {
    format!("Failed to find read pipe fd (ino {ino}) in process {pgrp}")
}

#[test]
fn a_gone_daemon_s_mount_is_refused_with_criu_s_line() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::direct()).unwrap();
    sc.exit_daemon(&d).unwrap();
    assert_refused_as_predicted(&sc, d.mount_id, &read_end_missing(d.pipe_ino, d.host_pgrp));
}

#[test]
fn a_delegated_read_end_is_refused_with_criu_s_line() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    sc.delegate(&d).unwrap();
    assert_refused_as_predicted(&sc, d.mount_id, &read_end_missing(d.pipe_ino, d.host_pgrp));
}

#[test]
fn a_killed_automount_is_refused_with_criu_s_line() {
    let mut sc = Scenario::start_or_panic();
    let a = sc.start_automount(AutomountSpec::default()).unwrap();
    sc.kill(&a.name, 9, true).unwrap();
    let line = sc.mount_line(a.mount_id).unwrap();
    let ino: u64 = line.option("pipe_ino").unwrap().parse().unwrap();
    assert_refused_as_predicted(&sc, a.mount_id, &read_end_missing(ino, a.host_pgrp));
}

#[test]
fn criu_probe_cannot_reach_an_indirect_root_or_a_covered_path_as_we_predict() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    sc.close_read(&d).unwrap();
    let line = format!("Autofs {} is alive, but unreachable.", d.mount_id);
    assert_refused_as_predicted(&sc, d.mount_id, &line);

    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::direct().dir(b"above/below/m")).unwrap();
    sc.close_read(&d).unwrap();
    sc.tmpfs(b"above").unwrap();
    let line = format!("Autofs {} is alive, but unreachable.", d.mount_id);
    assert_refused_as_predicted(&sc, d.mount_id, &line);
}

#[test]
fn a_uid_beyond_int_fails_criu_s_parse_after_its_probe_as_we_predict() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::direct().uid(1 << 31)).unwrap();
    sc.close_read(&d).unwrap();
    // CRIU's probe finds the superblock only for a minor below 256 (its devid encoding).
    let line = if minor(&sc, d.mount_id) < 256 {
        "value 0x80000000 (2147483648) is out of int range".to_owned()
    } else {
        format!("Autofs {} is alive, but unreachable.", d.mount_id)
    };
    assert_refused_as_predicted(&sc, d.mount_id, &line);
}

#[test]
fn an_interim_mount_is_refused_but_criu_stops_at_the_blocked_requester_first() {
    // A requester blocked on the mount is in the dumped tree (it must be visible in the
    // daemon's pid namespace to make the kernel write the request), and it sleeps in the
    // kernel's autofs wait (state D), so CRIU cannot seize it and fails before its autofs
    // stage: "Process P autofs pipe fd N is not empty." (our message) is never printed; our
    // criu_notes say so.
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let req = sc.make_interim(&d, "k", HANG_GUARD).unwrap();
    let (reports, _) = scan(&sc, true);
    let dump = criu_dump(&sc);
    let r = by_mount_id(&reports, d.mount_id);
    assert_eq!(
        (&r["state"], &r["dumpable"]),
        (&"INTERIM".into(), &false.into())
    );
    assert!(!dump.ok, "criu dump succeeded: {:#?}", dump.errors);
    let unseizable = format!(
        "Unseizable non-zombie {} found, state D, err -1/4",
        req.host_pid
    );
    // Our report says CRIU stops there, before the autofs stage.
    assert!(
        r["criu_notes"].as_array().unwrap().iter().any(|n| n
            .as_str()
            .unwrap()
            .contains("Unseizable non-zombie <requester pid> found, state D")),
        "{r:#}"
    );
    assert!(
        dump.has_error(&unseizable),
        "{unseizable:?} not in {:#?}",
        dump.errors
    );
}

#[test]
fn a_request_left_in_an_unread_pipe_stops_criu_at_its_requester_as_we_note() {
    // The daemon closed its read end with a request queued for its direct mount. Its
    // requester still waits (state D) inside the tree: CRIU's freeze fails on it. (With no
    // requester left in the tree CRIU's probe joins the wait and the dump hangs, which a test
    // could only assert with a timer: our report says it.)
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::direct()).unwrap();
    sc.make_interim(&d, "", HANG_GUARD).unwrap();
    sc.close_read(&d).unwrap();
    let (reports, _) = scan(&sc, true);
    let dump = criu_dump(&sc);
    let r = by_mount_id(&reports, d.mount_id);
    assert_eq!(
        (&r["reason"], &r["dumpable"]),
        (&"HIDDEN_CATATONIC".into(), &false.into()),
        "{r:#}"
    );
    dump.assert_failed_with("Unseizable non-zombie");
    // A minor of 256 or more: CRIU's probe cannot reach the mount at all (its MKKDEV devid
    // defect), and the report says that instead.
    if r["minor"].as_u64().unwrap() < 256 {
        let ours = our_text(r);
        assert!(
            ours.contains("the dump hangs") && ours.contains("Unseizable non-zombie"),
            "{r:#}"
        );
    }
}

#[test]
fn a_hostpath_style_bind_blocks_a_bare_dump_and_passes_as_runc_s_external_mount() {
    // A container (new mount and pid namespaces, its init a session leader) holding a copy of
    // a mount whose daemon lives outside it, as a pod holds a hostPath volume the host's
    // automount serves. A bare dump fails at the mount; told the mount is external, as runc
    // and crun tell it of every bind mount, CRIU skips it and the dump passes.
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let c = autofs_testkit::container::Container::start(&sc).unwrap();
    let point = d.mount_point.to_str().unwrap();
    let init = c.init.to_string();
    let scan = |extra: &[&str]| {
        let mut args = vec!["scan", "--json", "--pid", init.as_str()];
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_autofs-agent"))
            .args(&args)
            .output()
            .unwrap()
    };

    let bare = scan(&[]);
    let dump = criu_dump_tree(c.init, &[]);
    assert_eq!(bare.status.code(), Some(1), "{bare:?}");
    assert!(!dump.ok, "a bare criu dump succeeded");
    let line = format!("failed to find pstree item with pid {}", d.host_pgrp);
    assert!(dump.has_error(&line), "{line:?} not in {:#?}", dump.errors);
    let stdout = String::from_utf8(bare.stdout).unwrap();
    let r: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert!(our_text(&r).contains(&line), "{r:#}");

    let external = scan(&["--external", point]);
    let dump = criu_dump_tree(c.init, &[point]);
    assert_eq!(external.status.code(), Some(0), "{external:?}");
    assert!(
        dump.ok,
        "criu dump with the external mount failed: {}",
        dump.said()
    );
    assert!(
        autofs_images(dump.dir.path()).is_empty(),
        "CRIU skipped the external mount: no autofs image"
    );
    drop(c);
}

#[test]
fn a_daemon_in_a_nested_pid_namespace_fails_criu_before_its_autofs_stage() {
    // The mount itself is healthy (ACTIVE), but CRIU dumps only the pid namespace of the tree's
    // root task: a daemon in one nested below it stops the dump.
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect().nested_pidns()).unwrap();
    assert_refused_as_predicted(&sc, d.mount_id, "Can't dump nested pid namespace for");
    let (reports, _) = scan(&sc, true);
    assert_eq!(by_mount_id(&reports, d.mount_id)["state"], "ACTIVE");
}

#[test]
fn a_daemon_keeping_the_write_end_of_its_catatonic_mount_fails_criu_pipe_dump() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    sc.close_read(&d).unwrap();
    fail_a_lookup(&mut sc, &d);
    assert_refused_as_predicted(
        &sc,
        d.mount_id,
        "The packetized mode for pipes is not supported yet",
    );
}

#[test]
fn a_child_keeping_the_write_end_after_its_daemon_exits_fails_criu_pipe_dump() {
    // The daemon's child, still in the daemon's process group, inherited the write end; the
    // daemon exits and nobody reads, so a request turns the mount catatonic. The group's
    // leader is gone, but the end in packet mode is still in the tree CRIU dumps.
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let keeper = sc.hand_write_end(&d).unwrap();
    assert_eq!(keeper.host_pgrp, d.host_pgrp);
    fail_a_lookup(&mut sc, &d);
    assert_refused_as_predicted(
        &sc,
        d.mount_id,
        "The packetized mode for pipes is not supported yet",
    );
    let (reports, _) = scan(&sc, true);
    let r = by_mount_id(&reports, d.mount_id);
    assert_eq!(r["state"], "CATATONIC", "{r:#}");
    assert_names_end(r, keeper.host_pid, keeper.write_fd, d.pipe_ino);
}

#[test]
fn a_daemon_keeping_the_pipe_of_its_unmounted_mount_fails_criu_pipe_dump() {
    // A daemon leading two mounts; one is unmounted (`umount -l`) while it runs. The kernel
    // lets that pipe go, the daemon keeps its write end, in packet mode, and no mount shows
    // the pipe any more: its other mount is healthy, but the dump fails.
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let other = sc
        .mount_another(&d, &sc.work_dir().join("another"))
        .unwrap();
    sc.umount(&d.name).unwrap();
    assert!(
        sc.wait_until(HANG_GUARD, |sc| sc.mount_line(d.mount_id).is_none()),
        "the unmounted mount is still listed"
    );
    assert_refused_as_predicted(
        &sc,
        other,
        "The packetized mode for pipes is not supported yet",
    );
    let (reports, _) = scan(&sc, true);
    let r = by_mount_id(&reports, other);
    assert_eq!(r["state"], "ACTIVE", "{r:#}");
    assert_names_end(r, d.host_pid, d.write_fd, d.pipe_ino);
}

/// `r`'s text names the end in packet mode CRIU refuses: `pid` holds `fd` of pipe `ino`.
fn assert_names_end(r: &Value, pid: i32, fd: i32, ino: u64) {
    let held = format!("pid {pid} ");
    let end = format!("holds fd {fd} of pipe {ino}");
    assert!(
        our_text(r).contains(&held) && our_text(r).contains(&end),
        "{held:?} and {end:?} not in {r:#}"
    );
}

/// A lookup on `d`'s mount that nobody reads fails: the kernel's write to the pipe fails and
/// the mount turns catatonic.
fn fail_a_lookup(sc: &mut Scenario, d: &autofs_testkit::Daemon) {
    let req = sc.trigger(&d.name, "missing").unwrap();
    assert!(matches!(
        sc.wait_requester(&req, HANG_GUARD).unwrap(),
        RequesterOutcome::Failed(_)
    ));
}

/// The agent's `CheckMigratable` answer for the scenario's tree (its init's pid).
fn check_migratable(sc: &Scenario) -> v1::CheckMigratableResponse {
    let agent = common::Agent::start(&[]);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            agent
                .client()
                .await
                .check_migratable(v1::CheckMigratableRequest {
                    target: Some(v1::check_migratable_request::Target::Pid(
                        sc.init_host_pid(),
                    )),
                    ..Default::default()
                })
                .await
                .expect("CheckMigratable answers")
                .into_inner()
        })
}

#[test]
fn a_request_read_but_left_unanswered_stops_criu_at_its_requester_as_check_migratable_says() {
    // The daemon read the request and has not answered (a mount in progress, a hung NFS
    // server): the pipe is empty and the mount ACTIVE, but the requester sleeps in the
    // kernel's autofs wait, in the tree CRIU dumps, and CRIU's freeze cannot seize it.
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let req = sc.make_interim(&d, "k", HANG_GUARD).unwrap();
    sc.read_packet_with(&d.name, Answer::None, HANG_GUARD)
        .unwrap();
    let (reports, _) = scan(&sc, true);
    let r = by_mount_id(&reports, d.mount_id);
    assert_eq!(
        (&r["state"], &r["dumpable"]),
        (&"ACTIVE".into(), &true.into())
    );
    let check = check_migratable(&sc);
    let dump = criu_dump(&sc);
    assert!(!check.dumpable && check.blocking.is_empty(), "{check:#?}");
    assert!(
        check.retry_after_ms > 0,
        "it clears when the daemon answers: {check:#?}"
    );
    let unseizable = format!("Unseizable non-zombie {} found, state D", req.host_pid);
    let [task] = check.blocking_tasks.as_slice() else {
        panic!("one blocking task expected: {check:#?}");
    };
    assert_eq!(
        (task.pid, task.tid, task.reason()),
        (req.host_pid, req.host_pid, v1::TaskReason::RequesterWaiting),
        "{task:#?}"
    );
    assert!(task.message.contains(&unseizable), "{task:#?}");
    dump.assert_failed_with(&unseizable);
}

#[test]
fn a_thread_left_asleep_in_a_request_stops_criu_at_its_tid_as_check_migratable_says() {
    // As above, but the lookup is made by a second thread while the thread-group leader
    // waits for it (a worker thread of a server): the leader is seized, the thread is not,
    // and CRIU names the thread.
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let req = sc.make_interim_from_thread(&d, "k", HANG_GUARD).unwrap();
    assert_ne!(req.host_tid, req.host_pid, "{req:?}");
    sc.read_packet_with(&d.name, Answer::None, HANG_GUARD)
        .unwrap();
    let check = check_migratable(&sc);
    let dump = criu_dump(&sc);
    assert!(
        !check.dumpable && check.blocking.is_empty() && check.retry_after_ms > 0,
        "{check:#?}"
    );
    let [task] = check.blocking_tasks.as_slice() else {
        panic!("one blocking task expected: {check:#?}");
    };
    assert_eq!(
        (task.pid, task.tid, task.reason()),
        (req.host_pid, req.host_tid, v1::TaskReason::RequesterWaiting),
        "{task:#?}"
    );
    let unseizable = format!("Unseizable non-zombie {} found, state D", req.host_tid);
    assert!(
        task.message.contains(&unseizable)
            && task
                .message
                .contains(&format!("thread {} of pid {}", req.host_tid, req.host_pid)),
        "{task:#?}"
    );
    dump.assert_failed_with(&unseizable);
}

#[test]
fn a_daemon_keeping_the_pipe_of_its_only_mount_fails_criu_pipe_dump_as_check_migratable_says() {
    // The daemon's only mount is unmounted (`umount -l`) while it runs: no mount is left to
    // name the daemon, but it keeps the pipe's write end in packet mode, and CRIU's pipe dump
    // refuses it.
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    sc.umount(&d.name).unwrap();
    assert!(
        sc.wait_until(HANG_GUARD, |sc| sc.mount_line(d.mount_id).is_none()),
        "the unmounted mount is still listed"
    );
    let check = check_migratable(&sc);
    let dump = criu_dump(&sc);
    assert!(
        !check.dumpable && check.blocking.is_empty() && check.retry_after_ms == 0,
        "{check:#?}"
    );
    let [task] = check.blocking_tasks.as_slice() else {
        panic!("one blocking task expected: {check:#?}");
    };
    assert_eq!(
        (task.pid, task.reason(), task.fd, task.pipe_ino),
        (
            d.host_pid,
            v1::TaskReason::PacketModePipe,
            d.write_fd,
            d.pipe_ino
        ),
        "{task:#?}"
    );
    let refused = "The packetized mode for pipes is not supported yet";
    assert!(task.message.contains(refused), "{task:#?}");
    dump.assert_failed_with(refused);
}
