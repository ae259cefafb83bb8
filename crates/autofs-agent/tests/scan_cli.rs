//! The real `autofs-agent` binary against real autofs mounts (built by autofs-testkit in
//! private mount and pid namespaces), and its CRIU images against CRIU's own `crit`.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use autofs_testkit::HANG_GUARD;
use autofs_testkit::child::Reaped;
use autofs_testkit::{MountSpec, RequesterOutcome, Scenario};
use serde_json::Value;

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autofs-agent"))
        .args(args)
        .env_remove("AUTOFS_AGENT_PROC_ROOT")
        .output()
        .expect("run autofs-agent")
}

fn json_scan(sc: &Scenario, extra: &[&str]) -> (Vec<Value>, i32) {
    let pid = sc.init_host_pid().to_string();
    let mut args = vec![
        "scan",
        "--node-name",
        "node-a",
        "--json",
        "--pid",
        pid.as_str(),
    ];
    args.extend_from_slice(extra);
    let out = agent(&args);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let reports = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (reports, out.status.code().unwrap())
}

fn by_mount_id(reports: &[Value], id: u32) -> &Value {
    reports
        .iter()
        .find(|r| r["mount_id"] == id)
        .unwrap_or_else(|| panic!("mount {id} missing from {reports:#?}"))
}

/// Decodes an image with CRIU's `crit` (Debian's, run by Debian's python3 as CRIU requires).
fn crit_decode(image: &Path) -> Value {
    let out = Command::new("/usr/bin/python3")
        .arg("/usr/bin/crit")
        .args(["decode", "-i"])
        .arg(image)
        .output()
        .expect("CRIU's crit must be installed (Debian package criu)");
    assert!(
        out.status.success(),
        "crit failed on {}: {}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn json_lines_report_active_mounts_and_exit_zero() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect().timeout(30)).unwrap();
    let (reports, code) = json_scan(&sc, &[]);
    assert_eq!(code, 0, "{reports:#?}");
    assert_eq!(reports.len(), 1);
    let r = by_mount_id(&reports, d.mount_id);
    assert_eq!(r["node"], "node-a");
    assert_eq!(r["state"], "ACTIVE");
    assert_eq!(r["reason"], "MASTER_HOLDS_PIPE");
    assert_eq!(r["mnt_ns"], sc.mnt_ns());
    assert_eq!(r["host_pgrp"], d.host_pgrp);
    assert_eq!(r["entry"]["pgrp"], d.vpgrp);
    assert_eq!(r["entry"]["timeout"], 30);

    // AUTOFS_AGENT_JSON takes the values environment switches are given (1, yes, true...).
    let pid = sc.init_host_pid().to_string();
    for (value, json) in [("1", true), ("yes", true), ("0", false), ("false", false)] {
        let out = Command::new(env!("CARGO_BIN_EXE_autofs-agent"))
            .args(["scan", "--pid", pid.as_str()])
            .env_remove("AUTOFS_AGENT_PROC_ROOT")
            .env("AUTOFS_AGENT_JSON", value)
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(0), "{value}: {stdout}");
        assert_eq!(
            stdout.starts_with('{'),
            json,
            "AUTOFS_AGENT_JSON={value}: {stdout}"
        );
    }
}

#[test]
fn interim_mount_makes_the_scan_exit_one_and_the_table_says_why() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let _req = sc.make_interim(&d, "key", HANG_GUARD).unwrap();

    let pid = sc.init_host_pid().to_string();
    let out = agent(&["scan", "--pid", &pid]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(table.contains("INTERIM"), "{table}");
    assert!(table.contains("PIPE_NOT_EMPTY"), "{table}");
    assert!(table.contains("is not empty. Try again later."), "{table}");
    // The scan consumed nothing: the daemon still reads the request.
    assert_eq!(sc.read_packet(&d).unwrap().name, b"key");
}

#[test]
fn missing_proc_root_exits_two_naming_the_path() {
    let out = agent(&["scan", "--proc-root", "/nonexistent/proc"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("/nonexistent/proc"), "{err}");
}

#[test]
fn usage_errors_exit_two() {
    assert_eq!(agent(&["scan", "--no-such-flag"]).status.code(), Some(2));
    assert_eq!(agent(&["scan", "--pid", "0"]).status.code(), Some(2));
    assert_eq!(agent(&["scan", "--pid", "abc"]).status.code(), Some(2));
}

#[test]
fn criu_images_decode_with_crit_to_the_reported_entries() {
    let mut sc = Scenario::start_or_panic();
    let indirect = sc
        .mount(MountSpec::indirect().timeout(300).uid(1000).gid(100))
        .unwrap();
    let systemd_like = sc.mount(MountSpec::direct().close_write()).unwrap();
    let offset = sc.mount(MountSpec::offset()).unwrap();
    let catatonic = sc.mount(MountSpec::direct()).unwrap();
    sc.exit_daemon(&catatonic).unwrap();
    let req = sc.trigger(&catatonic.name, "").unwrap();
    assert!(matches!(
        sc.wait_requester(&req, HANG_GUARD).unwrap(),
        RequesterOutcome::Failed(_)
    ));
    let interim = sc.mount(MountSpec::indirect()).unwrap();
    let _blocked = sc.make_interim(&interim, "k", HANG_GUARD).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (reports, code) = json_scan(&sc, &["--criu-images", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "the interim mount blocks");
    let ns_dir = dir.path().join(sc.mnt_ns().to_string());

    let expected = [
        (
            indirect.mount_id,
            serde_json::json!({"fd": indirect.write_fd, "pgrp": indirect.vpgrp, "timeout": 300, "minproto": 5, "maxproto": 5, "mode": 1, "uid": 1000, "gid": 100}),
        ),
        (
            systemd_like.mount_id,
            serde_json::json!({"fd": systemd_like.write_fd, "pgrp": systemd_like.vpgrp, "timeout": 0, "minproto": 5, "maxproto": 5, "mode": 0, "read_fd": systemd_like.read_fd}),
        ),
        (
            offset.mount_id,
            serde_json::json!({"fd": offset.write_fd, "pgrp": offset.vpgrp, "timeout": 0, "minproto": 5, "maxproto": 5, "mode": 2}),
        ),
        (
            catatonic.mount_id,
            serde_json::json!({"fd": -1, "pgrp": catatonic.host_pgrp, "timeout": 0, "minproto": 5, "maxproto": 5, "mode": 0}),
        ),
    ];
    for (mount_id, entry) in expected {
        let r = by_mount_id(&reports, mount_id);
        assert_eq!(r["entry"], entry, "reported entry of mount {mount_id}");
        let image = ns_dir.join(format!("autofs-{}.img", r["criu_s_dev"]));
        let decoded = crit_decode(&image);
        assert_eq!(decoded["magic"], "AUTOFS");
        assert_eq!(
            decoded["entries"],
            serde_json::json!([entry]),
            "{}",
            image.display()
        );
    }
    let interim_report = by_mount_id(&reports, interim.mount_id);
    assert_eq!(interim_report["state"], "INTERIM");
    let not_written = ns_dir.join(format!("autofs-{}.img", interim_report["criu_s_dev"]));
    assert!(
        !not_written.exists(),
        "no image for a mount CRIU would refuse"
    );
    assert_eq!(std::fs::read_dir(&ns_dir).unwrap().count(), 4);
}

/// Runs `scan --json` as root without CAP_SYS_PTRACE, through a fresh proc instance mounted
/// with `proc_options` in a throwaway mount namespace (nothing outlives the command).
fn scan_without_ptrace(proc_options: &str) -> (Vec<Value>, i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let proc_dir = dir.path().join("proc");
    std::fs::create_dir(&proc_dir).unwrap();
    let script = format!(
        "mount -t proc -o {proc_options} proc {dir} && exec capsh --drop=cap_sys_ptrace -- -c 'exec {agent} scan --json --node-name node-a --proc-root {dir}'",
        dir = proc_dir.display(),
        agent = env!("CARGO_BIN_EXE_autofs-agent"),
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare and capsh (util-linux, libcap2-bin) run the reduced scan");
    common::scan_output(out)
}

#[test]
fn hidden_daemons_are_never_taken_for_gone_ones_and_the_scan_exits_two() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    // A bystander without capabilities in the daemon's mount namespace: an agent without
    // CAP_SYS_PTRACE still sees it (and the namespace's mountinfo through it), but not the
    // full-capability daemon, which hidepid makes look exactly like an exited one.
    let init = sc.init_host_pid().to_string();
    let _bystander = Reaped(
        Command::new("nsenter")
            .args(["-t", &init, "-m", "--", "setpriv", "--inh-caps=-all"])
            .args(["--bounding-set=-all", "--", "sleep", "600"])
            .spawn()
            .expect("nsenter and setpriv (util-linux)"),
    );
    assert!(
        autofs_testkit::wait_until(HANG_GUARD, || autofs_testkit::procfs::pids_in_ns(
            "mnt",
            sc.mnt_ns()
        )
        .iter()
        .any(
            |&p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c == "sleep\n")
        )),
        "the bystander entered the namespace"
    );
    for options in ["hidepid=invisible,gid=4242", "hidepid=2,gid=4242"] {
        let (reports, code, stderr) = scan_without_ptrace(options);
        assert_eq!(
            code, 2,
            "{options}: a restricted view never exits 0 or 1; {stderr}"
        );
        assert!(stderr.contains("hidepid="), "{options}: {stderr}");
        let mine: Vec<_> = reports
            .iter()
            .filter(|r| r["mnt_ns"] == sc.mnt_ns())
            .collect();
        assert_eq!(mine.len(), 1, "{options}: {mine:#?}");
        let r = mine[0];
        assert_eq!(r["mount_id"], d.mount_id);
        assert_eq!(
            (r["state"].as_str(), r["reason"].as_str()),
            (Some("ERROR"), Some("PROC_UNREADABLE")),
            "{options}: {r:#?}"
        );
        assert_eq!(r["dumpable"], false);
        // Nowhere on the node does an absence become a verdict.
        for r in &reports {
            assert!(
                !matches!(
                    r["reason"].as_str(),
                    Some("HIDDEN_CATATONIC" | "LEADER_GONE")
                ),
                "{options}: {r:#?}"
            );
        }
    }
}

#[test]
fn without_cap_sys_ptrace_unreadable_namespaces_make_the_scan_exit_two() {
    // The daemon is alone in its mount namespace: without CAP_SYS_PTRACE its ns/mnt cannot be
    // read, so the namespace cannot even be found. That must not look like "no mounts".
    let mut sc = Scenario::start_or_panic();
    sc.mount(MountSpec::indirect()).unwrap();
    let (_, code, stderr) = scan_without_ptrace("rw");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("lacks CAP_SYS_PTRACE"), "{stderr}");
}

#[test]
fn unreadable_facts_and_stray_separators_are_errors_in_the_real_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../autofs-core/tests/fixtures/proc/unreadable_facts_are_errors");
    let out = agent(&[
        "scan",
        "--json",
        "--node-name",
        "node-a",
        "--proc-root",
        root.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let reports: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let unreadable = by_mount_id(&reports, 612);
    assert_eq!(unreadable["state"], "ERROR");
    assert_eq!(unreadable["reason"], "PROC_UNREADABLE");
    let stray = by_mount_id(&reports, 613);
    assert_eq!(stray["reason"], "MALFORMED_MOUNTINFO");
}

#[test]
fn a_pids_scan_covers_the_namespaces_criu_dumps_with_it() {
    // A mount namespace made inside the container (its daemon two levels below the init, in
    // a private copy of the namespace): CRIU dumps it with the init, so `--pid` of the init
    // reports its mount and its exit code counts it.
    let mut sc = Scenario::start_or_panic();
    let own = sc.mount(MountSpec::indirect()).unwrap();
    let aside = sc.mount(MountSpec::indirect().aside()).unwrap();
    let (reports, code) = json_scan(&sc, &[]);
    assert_eq!(code, 0, "{reports:#?}");
    by_mount_id(&reports, own.mount_id);
    let aside_ns = aside.aside.as_ref().unwrap().mnt_ns;
    let r = reports
        .iter()
        .find(|r| r["mnt_ns"] == aside_ns && r["mount_id"] == aside.mount_id)
        .unwrap_or_else(|| panic!("the aside mount is missing: {reports:#?}"));
    assert_eq!(r["state"], "ACTIVE", "{r:#}");
    // Its daemon gone, the workload is blocked by the namespace made inside it.
    sc.kill(&aside.name, 9, true).unwrap();
    let (reports, code) = json_scan(&sc, &[]);
    assert_eq!(code, 1, "{reports:#?}");
}

#[test]
fn external_mounts_given_to_a_pids_scan_do_not_block_it() {
    // A container (new mount and pid namespaces) with a copy of a mount served from outside
    // it, as a pod with a hostPath volume: ORPHANED for a bare `criu dump`, skipped when runc
    // names it external.
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let c = autofs_testkit::container::Container::start(&sc).unwrap();
    let pid = c.pid.to_string();
    let point = d.mount_point.to_str().unwrap();
    let scan = |extra: &[&str]| {
        let mut args = vec!["scan", "--json", "--pid", pid.as_str()];
        args.extend_from_slice(extra);
        agent(&args)
    };
    let bare = scan(&[]);
    assert_eq!(bare.status.code(), Some(1), "{bare:?}");
    let external = scan(&["--external", point]);
    let stderr = String::from_utf8_lossy(&external.stderr);
    assert_eq!(external.status.code(), Some(0), "{external:?}");
    assert!(
        stderr.contains(&format!("{point} is skipped by CRIU as an external bind")),
        "{stderr}"
    );
    // The report itself stays what a bare dump meets.
    let line = String::from_utf8(external.stdout).unwrap();
    let r: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(r["state"], "ORPHANED", "{r:#}");
    // A path CRIU could not match, and --external without --pid: usage errors.
    let bad = scan(&["--external", "relative/path"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    let alone = agent(&["scan", "--external", point]);
    assert_eq!(alone.status.code(), Some(2), "{alone:?}");
    drop(c);
}
