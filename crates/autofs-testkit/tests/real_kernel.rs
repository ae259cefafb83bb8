//! Proves the kit builds the states it claims, by reading the scenario's mount table and
//! processes from the host's `/proc`. Needs root and autofs: fails (never skips) otherwise.

use std::time::Duration;

use autofs_testkit::HANG_GUARD;
use autofs_testkit::packet::{MISSING_DIRECT, MISSING_INDIRECT, V5_PACKET_SIZE};
use autofs_testkit::procfs::{self, PipeEnd};
use autofs_testkit::{
    Answer, AutomountSpec, Daemon, MountInfoLine, MountSpec, RequesterOutcome, Scenario,
};

fn line(sc: &Scenario, d: &Daemon) -> MountInfoLine {
    sc.mount_line(d.mount_id)
        .unwrap_or_else(|| panic!("mount {} of {} not in mountinfo", d.mount_id, d.name))
}

fn assert_common(l: &MountInfoLine, d: &Daemon, mode: &str) {
    assert_eq!(l.fstype, "autofs");
    assert_eq!(l.mount_point, d.mount_point);
    assert_eq!(
        l.option("fd"),
        Some(d.write_fd.to_string().as_str()),
        "{}",
        l.raw
    );
    assert_eq!(
        l.option("pgrp"),
        Some(d.host_pgrp.to_string().as_str()),
        "{}",
        l.raw
    );
    assert_eq!(
        l.option("pipe_ino"),
        Some(d.pipe_ino.to_string().as_str()),
        "{}",
        l.raw
    );
    assert_eq!(l.option("minproto"), Some("5"));
    assert_eq!(l.source, "autofs-testkit");
    assert_eq!(l.option("maxproto"), Some("5"));
    assert!(l.has_flag(mode), "{}", l.raw);
}

/// Waits until the requester sleeps (the request is queued and it waits for an answer).
fn wait_queued(sc: &Scenario, d: &Daemon, bytes: usize) {
    assert!(
        sc.wait_until(HANG_GUARD, |sc| sc.queued_bytes(d).ok() == Some(bytes)),
        "pipe never held {bytes} bytes (has {:?})",
        sc.queued_bytes(d)
    );
}

#[test]
fn indirect_mount_shows_write_fd_host_pgrp_and_pipe_ino() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let l = line(&sc, &d);
    assert_common(&l, &d, "indirect");
    assert_eq!(l.option("timeout"), Some("0"));
    assert!(!l.has_flag("strictexpire"));
    assert_eq!(l.option("uid"), None);
    // Daemon facts: own process group, host numbering as the first NSpid value.
    assert_eq!(d.host_pid, d.nspid[0]);
    assert_eq!(d.host_pgrp, d.host_pid);
    assert_eq!(d.vpid, d.nspid[1]);
    assert_eq!(procfs::host_pgrp(d.host_pid).unwrap(), d.host_pgrp);
    assert_eq!(
        procfs::pipe_fds(d.host_pid, d.pipe_ino).unwrap(),
        vec![(d.read_fd, PipeEnd::Read), (d.write_fd, PipeEnd::Write)]
    );
    // Read from inside the scenario, pgrp= is the scenario-local pgrp.
    let inside = sc.mountinfo_inside(None).unwrap();
    let l_in = inside.iter().find(|l| l.mount_id == d.mount_id).unwrap();
    assert_eq!(l_in.option("pgrp"), Some(d.vpgrp.to_string().as_str()));
    assert_ne!(d.vpgrp, d.host_pgrp);
    // The mount exists only in the scenario's mount namespace.
    let host = procfs::read_mountinfo(std::process::id() as i32).unwrap();
    assert!(host.iter().all(|h| h.mount_point != d.mount_point));
    assert_ne!(sc.mnt_ns(), procfs::ns_inode("self", "mnt").unwrap());
}

#[test]
fn direct_and_offset_mounts_show_their_type_and_options() {
    let mut sc = Scenario::start_or_panic();
    let d = sc
        .mount(
            MountSpec::direct()
                .uid(1234)
                .gid(4321)
                .timeout(77)
                .strictexpire(),
        )
        .unwrap();
    let l = line(&sc, &d);
    assert_common(&l, &d, "direct");
    assert_eq!(l.option("uid"), Some("1234"), "{}", l.raw);
    assert_eq!(l.option("gid"), Some("4321"), "{}", l.raw);
    assert_eq!(l.option("timeout"), Some("77"), "{}", l.raw);
    assert!(l.has_flag("strictexpire"), "{}", l.raw);

    let o = sc
        .mount(MountSpec::offset().timeout(5).write_fd(31))
        .unwrap();
    assert_eq!(o.write_fd, 31);
    let l = line(&sc, &o);
    assert_common(&l, &o, "offset");
    assert_eq!(l.option("fd"), Some("31"));
    assert_eq!(l.option("timeout"), Some("5"));
}

#[test]
fn close_write_leaves_only_the_read_end_but_mountinfo_unchanged() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::direct().close_write()).unwrap();
    assert!(d.write_closed);
    assert_common(&line(&sc, &d), &d, "direct");
    assert_eq!(
        procfs::pipe_fds(d.host_pid, d.pipe_ino).unwrap(),
        vec![(d.read_fd, PipeEnd::Read)]
    );
    let d2 = sc.mount(MountSpec::indirect()).unwrap();
    sc.close_write(&d2).unwrap();
    assert_eq!(
        procfs::pipe_fds(d2.host_pid, d2.pipe_ino).unwrap(),
        vec![(d2.read_fd, PipeEnd::Read)]
    );
    assert_common(&line(&sc, &d2), &d2, "indirect");
}

#[test]
fn unread_trigger_queues_one_304_byte_packet_then_read_packet_answers_it() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    assert_eq!(sc.queued_bytes(&d).unwrap(), 0);
    let req = sc.trigger(&d.name, "missing-name").unwrap();
    assert_ne!(procfs::host_pgrp(req.host_pid).unwrap(), d.host_pgrp);
    wait_queued(&sc, &d, V5_PACKET_SIZE);
    assert!(wait_until(HANG_GUARD, || procfs::blocked_in_autofs(
        req.host_pid
    )));
    assert_eq!(
        sc.wait_requester(&req, Duration::from_millis(50)).unwrap(),
        RequesterOutcome::Running
    );
    // Still exactly one packet after a while: nobody reads.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(sc.queued_bytes(&d).unwrap(), V5_PACKET_SIZE);

    let p = sc.read_packet(&d).unwrap();
    assert_eq!(p.raw.len(), V5_PACKET_SIZE);
    assert_eq!(p.proto_version, 5);
    assert_eq!(p.packet_type, MISSING_INDIRECT);
    assert_eq!(p.name_str(), "missing-name");
    assert_eq!(p.len as usize, "missing-name".len());
    // pid/tgid are in the daemon's pid namespace (the scenario's).
    assert_eq!(p.pid as i32, req.vpid);
    assert_eq!(p.tgid as i32, req.vpid);
    assert_eq!(
        sc.wait_requester(&req, HANG_GUARD).unwrap(),
        RequesterOutcome::Failed(libc::ENOENT)
    );
    assert_eq!(sc.queued_bytes(&d).unwrap(), 0);
}

#[test]
fn direct_mount_root_lookup_sends_missing_direct() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::direct()).unwrap();
    let req = sc.trigger(&d.name, "").unwrap();
    wait_queued(&sc, &d, V5_PACKET_SIZE);
    let p = sc.read_packet(&d).unwrap();
    assert_eq!(p.packet_type, MISSING_DIRECT);
    assert_eq!(
        sc.wait_requester(&req, HANG_GUARD).unwrap(),
        RequesterOutcome::Failed(libc::ENOENT)
    );
}

#[test]
fn answer_none_keeps_the_requester_blocked() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let req = sc.trigger(&d.name, "x").unwrap();
    let p = sc
        .read_packet_with(&d.name, Answer::None, HANG_GUARD)
        .unwrap();
    assert_eq!(p.name_str(), "x");
    assert_eq!(
        sc.wait_requester(&req, Duration::from_millis(100)).unwrap(),
        RequesterOutcome::Running
    );
    assert_eq!(sc.queued_bytes(&d).unwrap(), 0);
}

#[test]
fn dead_daemon_then_trigger_makes_the_mount_catatonic() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    sc.exit_daemon(&d).unwrap();
    assert!(procfs::process_state(d.host_pid).is_none());
    // Hidden catatonic: nothing changed yet.
    assert_common(&line(&sc, &d), &d, "indirect");
    let req = sc.trigger(&d.name, "nobody-home").unwrap();
    assert_eq!(
        sc.wait_requester(&req, HANG_GUARD).unwrap(),
        RequesterOutcome::Failed(libc::ENOENT)
    );
    let l = line(&sc, &d);
    assert_eq!(l.option("fd"), Some("-1"), "{}", l.raw);
    assert_eq!(l.option("pipe_ino"), Some("-1"), "{}", l.raw);
    assert_eq!(l.option("pgrp"), Some(d.host_pgrp.to_string().as_str()));
}

#[test]
fn sigkilled_daemon_is_reaped_and_its_mount_stays() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::direct().close_write()).unwrap();
    sc.kill_daemon(&d, libc::SIGKILL).unwrap();
    assert!(
        procfs::process_state(d.host_pid).is_none(),
        "daemon not reaped"
    );
    assert_common(&line(&sc, &d), &d, "direct");
    assert!(sc.exit_daemon(&d).is_err());
}

#[test]
fn delegate_keeps_only_the_read_end_in_another_process_group() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let del = sc.delegate(&d).unwrap();
    assert!(
        procfs::process_state(d.host_pid).is_none(),
        "daemon still there"
    );
    assert_ne!(del.host_pgrp, d.host_pgrp);
    assert_eq!(del.read_fd, d.read_fd);
    assert_eq!(procfs::host_pgrp(del.host_pid).unwrap(), del.host_pgrp);
    assert_eq!(
        procfs::pipe_fds(del.host_pid, d.pipe_ino).unwrap(),
        vec![(d.read_fd, PipeEnd::Read)]
    );
    // Nobody else in the scenario holds an end of that pipe.
    for p in sc.processes() {
        if p != del.host_pid {
            assert!(
                procfs::pipe_fds(p, d.pipe_ino)
                    .unwrap_or_default()
                    .is_empty()
            );
        }
    }
    assert_common(&line(&sc, &d), &d, "indirect");
    // The delegate is a child of the scenario's pid 1 now.
    sc.kill(&del.name, libc::SIGKILL, true).unwrap();
}

#[test]
fn nested_pidns_daemon_reports_every_level_and_host_pgrp_in_mountinfo() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect().nested_pidns()).unwrap();
    assert_eq!(d.nspid.len(), 3, "{:?}", d.nspid);
    assert_eq!(d.nspid[2], 2, "the daemon is pid 2 under a nested reaper");
    assert_eq!(d.ns_pgrp, 2);
    assert_eq!(d.vpgrp, d.nspid[1]);
    let l = line(&sc, &d);
    assert_common(&l, &d, "indirect");
    // A trigger from inside the nested namespace reaches the daemon; pid is nested-local.
    let req = sc.trigger(&d.name, "deep").unwrap();
    assert_eq!(req.nspid.len(), 3);
    wait_queued(&sc, &d, V5_PACKET_SIZE);
    let p = sc.read_packet(&d).unwrap();
    assert_eq!(p.pid as i32, req.nspid[2]);
    assert_eq!(p.name_str(), "deep");
    assert_eq!(
        sc.wait_requester(&req, HANG_GUARD).unwrap(),
        RequesterOutcome::Failed(libc::ENOENT)
    );
    // pgrp= is printed in the reader's pid namespace.
    let pgrp_seen = |v: Vec<MountInfoLine>| {
        v.into_iter()
            .find(|l| l.mount_id == d.mount_id)
            .and_then(|l| l.int_option("pgrp"))
    };
    let scenario_view = sc.mountinfo_inside(None).unwrap();
    assert_eq!(pgrp_seen(scenario_view), Some(d.vpgrp as i64));
    let nested_view = sc.mountinfo_inside(Some(&d)).unwrap();
    assert_eq!(pgrp_seen(nested_view), Some(d.ns_pgrp as i64));
    // A requester the daemon's namespace cannot see gets ENOENT and nothing is queued.
    let blind = sc.trigger_outside(&d.name, "unseen").unwrap();
    assert_eq!(blind.nspid.len(), 2);
    assert_eq!(
        sc.wait_requester(&blind, HANG_GUARD).unwrap(),
        RequesterOutcome::Failed(libc::ENOENT)
    );
    assert_eq!(sc.queued_bytes(&d).unwrap(), 0);
    assert_common(&line(&sc, &d), &d, "indirect");
    // Delegation survives the daemon inside the nested namespace.
    let del = sc.delegate(&d).unwrap();
    assert!(procfs::process_alive(del.host_pid));
    assert_eq!(del.nspid.len(), 3);
}

#[test]
fn an_aside_daemon_sits_two_levels_below_its_namespace_owner_until_the_middle_dies() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::direct().aside()).unwrap();
    let aside = d
        .aside
        .expect("an aside daemon reports the processes above it");
    assert_eq!(procfs::ppid(d.host_pid), Some(aside.middle_host_pid));
    assert_eq!(
        procfs::ppid(aside.middle_host_pid),
        Some(aside.owner_host_pid)
    );
    assert_eq!(procfs::ppid(aside.owner_host_pid), Some(sc.init_host_pid()));
    // The mount is in the owner's namespace, shared by the middle process and the daemon,
    // and not in the scenario's.
    assert_ne!(aside.mnt_ns, sc.mnt_ns());
    for pid in [aside.owner_host_pid, aside.middle_host_pid, d.host_pid] {
        assert_eq!(
            procfs::ns_inode(pid, "mnt").unwrap(),
            aside.mnt_ns,
            "pid {pid}"
        );
    }
    let l = procfs::mount_at(aside.owner_host_pid, &d.mount_point)
        .unwrap()
        .expect("the mount in the owner's namespace");
    assert_common(&l, &d, "direct");
    assert!(
        !sc.mountinfo()
            .unwrap()
            .iter()
            .any(|l| l.mount_id == d.mount_id),
        "the aside mount leaked into the scenario's namespace"
    );
    // The middle process dies: the kernel re-parents the daemon to the scenario's pid 1.
    sc.kill(&format!("{}.middle", d.name), 9, true).unwrap();
    assert!(procfs::process_state(aside.middle_host_pid).is_none());
    assert_eq!(procfs::ppid(d.host_pid), Some(sc.init_host_pid()));
    assert!(procfs::process_alive(aside.owner_host_pid));
    assert_eq!(procfs::ns_inode(d.host_pid, "mnt").unwrap(), aside.mnt_ns);
    // The combination with a nested pid namespace is refused.
    let err = sc
        .mount(MountSpec::indirect().aside().nested_pidns())
        .unwrap_err();
    assert!(err.to_string().contains("do not combine"), "{err}");
}

#[test]
fn automount_mounts_with_its_own_pgrp_and_stays_mounted_after_sigkill() {
    let mut sc = Scenario::start_or_panic();
    let a = sc.start_automount(AutomountSpec::default()).unwrap();
    assert_eq!(a.host_pgrp, a.host_pid, "automount leads its process group");
    let l = sc.mount_line(a.mount_id).expect("automount's mount");
    assert_eq!(l.fstype, "autofs");
    assert_eq!(l.mount_point, a.mount_point);
    assert_eq!(
        l.option("pgrp"),
        Some(a.host_pgrp.to_string().as_str()),
        "{}",
        l.raw
    );
    assert_eq!(l.option("timeout"), Some("60"), "{}", l.raw);
    assert!(l.has_flag("indirect"));
    let ino = l.int_option("pipe_ino").unwrap() as u64;
    assert!(!procfs::pipe_fds(a.host_pid, ino).unwrap().is_empty());

    sc.kill(&a.name, libc::SIGKILL, true).unwrap();
    assert!(procfs::process_state(a.host_pid).is_none());
    let l = sc
        .mount_line(a.mount_id)
        .expect("still mounted after SIGKILL");
    assert_eq!(l.int_option("pipe_ino"), Some(ino as i64), "{}", l.raw);
}

#[test]
fn a_daemon_binds_its_direct_root_and_covers_both_mounts_without_triggering() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::direct()).unwrap();
    let bind_point = sc.work_dir().join("bind");
    let bind = sc.bind_root(&d, &bind_point).unwrap();
    let cover_own = sc.cover(&d, &d.mount_point).unwrap();
    let cover_bind = sc.cover(&d, &bind_point).unwrap();

    let table = sc.mountinfo().unwrap();
    let at = |id: u32| {
        let i = table
            .iter()
            .position(|l| l.mount_id == id)
            .unwrap_or_else(|| panic!("mount {id} not in {table:#?}"));
        (i, &table[i])
    };
    let (own_at, own) = at(d.mount_id);
    let (bind_at, b) = at(bind);
    // A second mount of the same superblock's root, listed after the first.
    assert!(own_at < bind_at, "{table:#?}");
    assert_eq!(
        (b.fstype.as_str(), b.dev.as_str(), b.root.as_str()),
        ("autofs", own.dev.as_str(), "/"),
        "{}",
        b.raw
    );
    assert_eq!(b.mount_point, bind_point);
    assert_eq!(b.super_options, own.super_options);
    // Each tmpfs sits on the root of the mount it covers.
    for (id, parent, point) in [
        (cover_own, d.mount_id, &d.mount_point),
        (cover_bind, bind, &bind_point),
    ] {
        let (_, l) = at(id);
        assert_eq!(
            (l.fstype.as_str(), l.parent_id, &l.mount_point),
            ("tmpfs", parent, point),
            "{}",
            l.raw
        );
    }
    // The daemon did it all in oz mode: no request reached the pipe, and the mount is live.
    assert_eq!(sc.queued_bytes(&d).unwrap(), 0);
    assert_eq!(
        line(&sc, &d).option("fd"),
        Some(d.write_fd.to_string().as_str())
    );
    // A relative target is refused.
    let e = sc
        .bind_root(&d, std::path::Path::new("relative"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not absolute"), "{e}");
}

#[test]
fn errors_are_reported_not_fatal() {
    let mut sc = Scenario::start_or_panic();
    let e = sc.trigger("nope", "x").unwrap_err().to_string();
    assert!(e.contains("no process named"), "{e}");
    // A duplicate name is refused without touching the (direct, triggering) mount root.
    let d = sc.mount(MountSpec::direct().name("same")).unwrap();
    assert!(sc.mount(MountSpec::indirect().name("same")).is_err());
    assert!(sc.mount(MountSpec::indirect().name("a/b")).is_err());
    let e = sc
        .read_packet_with(&d.name, Answer::Fail, Duration::from_millis(50))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no packet"), "{e}");
    // Still usable afterwards.
    sc.mount(MountSpec::direct()).unwrap();
}

#[test]
fn drop_kills_everything_and_frees_the_mount_namespace() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let _blocked = sc.trigger(&d.name, "stuck").unwrap();
    let del_src = sc.mount(MountSpec::direct()).unwrap();
    let del = sc.delegate(&del_src).unwrap();
    let (init, mnt_ns, pid_ns, work) = (
        sc.init_host_pid(),
        sc.mnt_ns(),
        sc.pid_ns(),
        sc.work_dir().to_path_buf(),
    );
    let n = sc.mount(MountSpec::indirect().nested_pidns()).unwrap();
    let procs = sc.processes();
    assert!(procs.len() >= 6, "{procs:?}");
    assert!(
        procs.contains(&n.host_pid),
        "{procs:?} lacks the nested daemon"
    );
    assert!(procs.contains(&init) && procs.contains(&d.host_pid) && procs.contains(&del.host_pid));
    // Every process of the scenario's namespaces, with its start time: the kernel reuses
    // namespace inode numbers at once, so after the drop a namespace of another test may carry
    // the same number; only these very processes must be gone.
    let members: Vec<(i32, u64)> = procfs::pids_in_ns("mnt", mnt_ns)
        .into_iter()
        .chain(procfs::pids_in_ns("pid", pid_ns))
        .filter_map(|p| Some((p, start_time(p)?)))
        .collect();
    assert!(members.len() >= procs.len(), "{members:?} {procs:?}");
    // The scenario's processes by start time too: a pid reused after the drop is not theirs.
    let procs: Vec<(i32, u64)> = procs
        .into_iter()
        .filter_map(|p| Some((p, start_time(p)?)))
        .collect();
    drop(sc);
    for (p, started) in procs {
        assert_ne!(start_time(p), Some(started), "pid {p} left behind");
    }
    for (p, started) in members {
        assert_ne!(
            start_time(p),
            Some(started),
            "pid {p} of the namespaces left behind"
        );
    }
    assert!(!work.exists());
}

/// Field 22 of `/proc/<pid>/stat`: when the process started (tells it from a later one that
/// got the same pid).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

#[test]
fn a_killed_test_process_takes_its_scenario_down() {
    use std::io::BufRead as _;
    // Orphans of the killed helper come to us instead of the slow host pid 1, so this
    // test can check that nothing is left, zombies included.
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_autofs-scenario-holder"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read the helper's report on a thread so a broken helper cannot hang this test.
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(i) = l.find("HOLDING ") {
                let _ = tx.send(l[i..].to_string());
                return;
            }
        }
    });
    let held = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(l) => l,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the helper never reported a scenario: {e}");
        }
    };
    let v: Vec<&str> = held.split_whitespace().collect();
    let init: i32 = v[1].parse().unwrap();
    let mnt_ns: u64 = v[2].parse().unwrap();
    assert!(procfs::process_alive(init));
    // The namespace's processes with their start times: its inode number may be reused by
    // another test's namespace as soon as it is freed.
    let members: Vec<(i32, u64)> = procfs::pids_in_ns("mnt", mnt_ns)
        .into_iter()
        .filter_map(|p| Some((p, start_time(p)?)))
        .collect();
    assert!(!members.is_empty());
    let outer = procfs::ppid(init).unwrap(); // the scenario process the library spawned
    child.kill().unwrap(); // SIGKILL: no Drop runs in the helper
    child.wait().unwrap();
    assert!(
        // A zombie (reaped below) holds no namespace any more.
        wait_until(HANG_GUARD, || members.iter().all(|&(p, started)| {
            start_time(p) != Some(started) || procfs::process_state(p) == Some('Z')
        })),
        "the scenario's mount namespace outlived the killed test process"
    );
    for pid in [outer, init] {
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        let reaped = wait_until(HANG_GUARD, || {
            !matches!(
                waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)),
                Ok(WaitStatus::StillAlive)
            )
        });
        assert!(reaped, "pid {pid} never died");
        assert!(
            wait_until(HANG_GUARD, || procfs::process_state(pid).is_none()),
            "pid {pid} is left in /proc"
        );
    }
    let _ = std::fs::remove_dir(v[3]);
}

#[test]
fn a_scenario_outlives_the_thread_that_started_it() {
    let sc = std::thread::spawn(Scenario::start_or_panic).join().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(procfs::process_alive(sc.init_host_pid()));
    let mut sc = sc;
    sc.mount(MountSpec::direct()).unwrap();
}

use autofs_testkit::wait_until;

#[test]
fn the_scenario_binary_says_how_to_use_it() {
    let bin = env!("CARGO_BIN_EXE_autofs-scenario");
    let help = std::process::Command::new(bin)
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success(), "{help:?}");
    let text = String::from_utf8(help.stdout).unwrap();
    assert!(
        text.starts_with("usage: autofs-scenario --work-dir DIR"),
        "{text}"
    );
    let bad = std::process::Command::new(bin)
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--help for usage"),
        "{bad:?}"
    );
}
