//! End-to-end tests of WatchMounts: the real agent binary watching a real autofs mount appear,
//! turn INTERIM, turn CATATONIC and disappear, and honouring the client's deadline.

mod common;

use std::time::{Duration, Instant};

use autofs_api::v1::{self, MountState, mount_event::Kind};
use autofs_testkit::host_aside::HostAside;
use autofs_testkit::{AutomountSpec, MountSpec, Scenario};
use common::{Agent, HANG_GUARD, state};
use tonic::{Code, Streaming};

/// Reads a watch stream, checking that sequence numbers start at 1 and grow by 1 and that
/// every event names the agent's node.
struct Events {
    stream: Streaming<v1::MountEvent>,
    node: String,
    next_sequence: u64,
}

impl Events {
    /// Watches the mounts of the mount namespace of host pid `pid`.
    async fn of_pid(agent: &Agent, pid: i32) -> Events {
        let filter = v1::ListMountsRequest {
            pid: Some(pid),
            ..Default::default()
        };
        Events::of(agent, Some(filter)).await
    }

    /// Watches the mounts `filter` selects (all with `None`).
    async fn of(agent: &Agent, filter: Option<v1::ListMountsRequest>) -> Events {
        let stream = agent
            .client()
            .await
            .watch_mounts(v1::WatchMountsRequest { filter })
            .await
            .unwrap()
            .into_inner();
        Events {
            stream,
            node: agent.node.clone(),
            next_sequence: 1,
        }
    }

    /// The first event about a mount of mount namespace `mnt_ns`, under one hang guard for
    /// the whole wait (other namespaces' events must not prolong it).
    async fn first_in(&mut self, mnt_ns: u64) -> v1::MountEvent {
        tokio::time::timeout(HANG_GUARD, async {
            loop {
                let event = self.next().await;
                if event.mount.as_ref().is_some_and(|m| m.mnt_ns == mnt_ns) {
                    break event;
                }
            }
        })
        .await
        .expect("the namespace's mount is reported (hang guard)")
    }

    async fn next(&mut self) -> v1::MountEvent {
        let event = tokio::time::timeout(HANG_GUARD, self.stream.message())
            .await
            .expect("no event in time")
            .expect("the watch failed")
            .expect("the watch ended");
        assert_eq!(event.sequence, self.next_sequence, "{event:#?}");
        self.next_sequence += 1;
        assert_eq!(event.node, self.node);
        assert!(event.mount.is_some(), "{event:#?}");
        event
    }

    /// The first event about `mount_id` that satisfies `pred`; events about it before that
    /// are returned too.
    async fn until(
        &mut self,
        mount_id: u32,
        pred: impl Fn(&v1::MountEvent) -> bool,
    ) -> (v1::MountEvent, Vec<v1::MountEvent>) {
        let deadline = Instant::now() + HANG_GUARD;
        let mut before = Vec::new();
        loop {
            assert!(
                Instant::now() < deadline,
                "no matching event for mount {mount_id}; saw {before:#?}"
            );
            let event = self.next().await;
            if event.mount.as_ref().unwrap().mount_id != mount_id {
                continue;
            }
            if pred(&event) {
                return (event, before);
            }
            before.push(event);
        }
    }
}

fn kind(event: &v1::MountEvent) -> Kind {
    Kind::try_from(event.kind).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_a_mount_appear_turn_interim_turn_catatonic_and_disappear() {
    let mut sc = Scenario::start_or_panic();
    let existing = sc.mount(MountSpec::indirect()).unwrap();
    let agent = Agent::start(&[]);
    let mut events = Events::of_pid(&agent, sc.init_host_pid()).await;

    // The initial snapshot: the existing mount, ADDED, sequence 1.
    let first = events.next().await;
    assert_eq!(first.sequence, 1);
    assert_eq!(kind(&first), Kind::Added);
    let mount = first.mount.unwrap();
    assert_eq!(mount.mount_id, existing.mount_id);
    assert_eq!(mount.mnt_ns, sc.mnt_ns());
    assert_eq!(state(&mount), MountState::Active);

    // A new mount appears.
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let (added, before) = events.until(d.mount_id, |_| true).await;
    assert!(before.is_empty());
    assert_eq!(kind(&added), Kind::Added, "{added:#?}");
    let mount = added.mount.unwrap();
    assert_eq!(state(&mount), MountState::Active, "{mount:#?}");
    assert_eq!(mount.mnt_ns, sc.mnt_ns());
    assert_eq!(mount.pipe_ino, d.pipe_ino);

    // A lookup the daemon does not answer: INTERIM.
    let _blocked = sc.make_interim(&d, "key", HANG_GUARD).unwrap();
    let (interim, _) = events
        .until(d.mount_id, |e| {
            state(e.mount.as_ref().unwrap()) == MountState::Interim
        })
        .await;
    assert_eq!(kind(&interim), Kind::Changed, "{interim:#?}");
    assert_eq!(interim.mount.as_ref().unwrap().pending_bytes, 304);

    // The daemon answers, exits, and the next lookup finds no reader: CATATONIC.
    sc.read_packet(&d).unwrap();
    sc.make_catatonic(&d, HANG_GUARD).unwrap();
    let (catatonic, between) = events
        .until(d.mount_id, |e| {
            state(e.mount.as_ref().unwrap()) == MountState::Catatonic
        })
        .await;
    assert_eq!(kind(&catatonic), Kind::Changed, "{catatonic:#?}");
    assert_eq!(catatonic.mount.as_ref().unwrap().entry.unwrap().fd, -1);
    // Whatever the scans caught in between (ACTIVE again, ORPHANED while the daemon was
    // gone) was a change of the same mount.
    assert!(
        between.iter().all(|e| kind(e) == Kind::Changed),
        "{between:#?}"
    );

    // Unmounted: REMOVED, carrying the mount as it was last seen.
    sc.umount(&d.name).unwrap();
    let (removed, _) = events.until(d.mount_id, |_| true).await;
    assert_eq!(kind(&removed), Kind::Removed, "{removed:#?}");
    assert_eq!(
        state(removed.mount.as_ref().unwrap()),
        MountState::Catatonic
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_with_a_client_deadline_ends_with_deadline_exceeded_and_the_agent_keeps_serving() {
    let agent = Agent::start(&[]);
    agent.wait_serving().await;
    let mut client = agent.client().await;
    // A namespace nobody has: an empty snapshot, then silence until the deadline.
    let quiet = || v1::WatchMountsRequest {
        filter: Some(v1::ListMountsRequest {
            mnt_ns: Some(1),
            ..Default::default()
        }),
    };
    let mut request = tonic::Request::new(quiet());
    request.set_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let mut stream = client.watch_mounts(request).await.unwrap().into_inner();
    let ended = tokio::time::timeout(HANG_GUARD, stream.message())
        .await
        .expect("the deadline was not honoured");
    let status = ended.expect_err("the stream should end with a status");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "ended before the deadline: {:?}",
        started.elapsed()
    );

    // Still serving, on the same connection and for new watches.
    common::node_info(&mut client).await;
    let mut open = client.watch_mounts(quiet()).await.unwrap().into_inner();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), open.message())
            .await
            .is_err(),
        "a watch without deadline stays open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_and_master_exits_are_noticed_between_scans() {
    // The background scan runs once, at start: every later event comes from change detection
    // (a FIONREAD pass over the known read ends, a pidfd per master), not from the safety net.
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let agent = Agent::start(&["--scan-interval", "1h", "--queue-poll-interval", "200ms"]);
    let mut events = Events::of_pid(&agent, sc.init_host_pid()).await;
    let (first, _) = events.until(d.mount_id, |_| true).await;
    assert_eq!(state(first.mount.as_ref().unwrap()), MountState::Active);

    // A queue appears on the known read end: INTERIM. (Latencies are printed, not asserted:
    // the README's figures come from here.)
    let _blocked = sc.make_interim(&d, "key", HANG_GUARD).unwrap();
    let seen = Instant::now();
    let (interim, _) = events
        .until(d.mount_id, |e| {
            state(e.mount.as_ref().unwrap()) == MountState::Interim
        })
        .await;
    eprintln!("queue-to-event latency: {:?}", seen.elapsed());
    assert_eq!(interim.mount.as_ref().unwrap().pending_bytes, 304);

    // The daemon reads the request (answering it): the queue drains, ACTIVE again.
    let packet = sc
        .read_packet_with(&d.name, autofs_testkit::Answer::Ready, HANG_GUARD)
        .unwrap();
    assert_eq!(packet.name, b"key");
    let (active, _) = events
        .until(d.mount_id, |e| {
            state(e.mount.as_ref().unwrap()) == MountState::Active
        })
        .await;
    assert_eq!(active.mount.as_ref().unwrap().pending_bytes, 0);

    // The master exits without anybody looking the mount up: nothing in the mount table
    // changes, only its pidfd tells.
    let exiting = Instant::now();
    sc.exit_daemon(&d).unwrap();
    let (orphaned, _) = events
        .until(d.mount_id, |e| {
            state(e.mount.as_ref().unwrap()) == MountState::Orphaned
        })
        .await;
    eprintln!("master-exit-to-event latency: {:?}", exiting.elapsed());
    assert_eq!(
        orphaned.mount.as_ref().unwrap().reason,
        v1::Reason::HiddenCatatonic as i32,
        "{orphaned:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_automount_killed_and_restarted_between_scans_is_followed_to_its_new_pipe() {
    // The background scan runs once, at start. The kill is seen through the master's pidfd;
    // the restarted daemon's takeover (CATATONIC, then SETPIPEFD: new pipe, new pgrp) changes
    // only the mount's super options, for which the kernel raises no mount-table event (the
    // re-read of a namespace holding an orphaned mount sees it; so does the scan that
    // automount's start-up test mount, a mount-table event, sets off: either will do here).
    let mut sc = Scenario::start_or_panic();
    let a = sc.start_automount(AutomountSpec::default()).unwrap();
    let agent = Agent::start(&["--scan-interval", "1h", "--queue-poll-interval", "200ms"]);
    let mut events = Events::of_pid(&agent, sc.init_host_pid()).await;
    let (first, _) = events.until(a.mount_id, |_| true).await;
    let first = first.mount.unwrap();
    assert_eq!(state(&first), MountState::Active, "{first:#?}");

    sc.kill(&a.name, 9, true).unwrap();
    let (orphaned, _) = events
        .until(a.mount_id, |e| {
            state(e.mount.as_ref().unwrap()) == MountState::Orphaned
        })
        .await;
    assert_eq!(
        orphaned.mount.as_ref().unwrap().reason,
        v1::Reason::HiddenCatatonic as i32,
        "{orphaned:#?}"
    );

    let b = sc.restart_automount(&a).unwrap();
    let (active, between) = events
        .until(a.mount_id, |e| {
            state(e.mount.as_ref().unwrap()) == MountState::Active
        })
        .await;
    assert_eq!(kind(&active), Kind::Changed, "{active:#?}");
    // Catatonic for the instant between the two ioctls, if a re-read caught it.
    assert!(
        between
            .iter()
            .all(|e| state(e.mount.as_ref().unwrap()) == MountState::Catatonic),
        "{between:#?}"
    );
    let mount = active.mount.unwrap();
    assert_ne!(mount.pipe_ino, first.pipe_ino, "{mount:#?}");
    assert_eq!(mount.host_pgrp, b.host_pgrp);
    assert_eq!(mount.read_end_pid, b.host_pid);
    assert_eq!(mount.entry.unwrap().pgrp, b.vpgrp);

    // The watch agrees with a one-shot scan of the same moment.
    let scan = autofs_core::Scanner::new("/proc", "n")
        .unwrap()
        .scan()
        .unwrap();
    let now = scan
        .reports
        .iter()
        .find(|r| r.mnt_ns == sc.mnt_ns() && r.mount_id == a.mount_id)
        .unwrap();
    assert_eq!(
        (now.state, now.pipe_ino, now.host_pgrp),
        (
            autofs_core::MountState::Active,
            mount.pipe_ino,
            mount.host_pgrp
        )
    );
}

/// An agent that scans only at start (`--scan-interval 1h`, queues polled every 200 ms) and
/// a watch of the scenario's namespace, which has seen `d` ACTIVE and then, its daemon made
/// to exit, ORPHANED: the event.
async fn orphaned_between_scans(
    sc: &mut Scenario,
    d: &autofs_testkit::Daemon,
) -> (Agent, Events, v1::MountEvent) {
    let agent = Agent::start(&["--scan-interval", "1h", "--queue-poll-interval", "200ms"]);
    let mut events = Events::of_pid(&agent, sc.init_host_pid()).await;
    let (first, _) = events.until(d.mount_id, |_| true).await;
    assert_eq!(state(first.mount.as_ref().unwrap()), MountState::Active);
    sc.exit_daemon(d).unwrap();
    let (orphaned, _) = events
        .until(d.mount_id, |e| {
            state(e.mount.as_ref().unwrap()) == MountState::Orphaned
        })
        .await;
    (agent, events, orphaned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_turned_catatonic_by_a_lookup_is_noticed_between_scans() {
    // The daemon exits: ORPHANED, nobody holds the read end. A lookup then finds no reader
    // and the kernel turns the mount catatonic: only its super options in mountinfo change
    // (fd=-1, pipe_ino=-1), with no mount-table event, no process exit and no queue. The
    // background scan runs once, at start.
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let (_agent, mut events, orphaned) = orphaned_between_scans(&mut sc, &d).await;
    assert_eq!(
        orphaned.mount.as_ref().unwrap().reason,
        v1::Reason::HiddenCatatonic as i32,
        "{orphaned:#?}"
    );

    let looking_up = Instant::now();
    let req = sc.trigger(&d.name, "after-exit").unwrap();
    let outcome = sc.wait_requester(&req, HANG_GUARD).unwrap();
    assert!(
        matches!(outcome, autofs_testkit::RequesterOutcome::Failed(_)),
        "{outcome:?}"
    );
    let (catatonic, _) = events
        .until(d.mount_id, |e| {
            state(e.mount.as_ref().unwrap()) == MountState::Catatonic
        })
        .await;
    eprintln!("catatonic-to-event latency: {:?}", looking_up.elapsed());
    let mount = catatonic.mount.as_ref().unwrap();
    assert_eq!(kind(&catatonic), Kind::Changed, "{catatonic:#?}");
    assert_eq!(
        (mount.reason, mount.entry.unwrap().fd),
        (v1::Reason::Catatonic as i32, -1),
        "{catatonic:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_re_parented_out_of_the_dumped_tree_is_noticed_between_scans() {
    // The daemon sits two levels below the owner of its mount namespace (owner → middle →
    // daemon, of the host's pid namespace: a `--pid=host` container). When the middle process
    // exits, the kernel re-parents the daemon out of the owner's tree: nothing in the mount
    // table, the pipe or the master changes; only the pidfd on the middle process tells. The
    // background scan runs once, at start.
    let sc = Scenario::start_or_panic();
    let mut aside = HostAside::start(&sc, "aside").unwrap();
    let agent = Agent::start(&["--scan-interval", "1h"]);
    let mut events = Events::of_pid(&agent, aside.owner).await;
    let (first, _) = events.until(aside.mount_id, |_| true).await;
    assert_eq!(state(first.mount.as_ref().unwrap()), MountState::Active);

    let exiting = Instant::now();
    aside.kill_middle().unwrap();
    let (orphaned, _) = events
        .until(aside.mount_id, |e| {
            state(e.mount.as_ref().unwrap()) == MountState::Orphaned
        })
        .await;
    eprintln!("re-parenting-to-event latency: {:?}", exiting.elapsed());
    let mount = orphaned.mount.as_ref().unwrap();
    assert_eq!(
        (mount.reason, mount.owner_pid),
        (v1::Reason::MasterOutsideTree as i32, aside.owner),
        "{orphaned:#?}"
    );
}

/// A daemon started from outside a namespace's process tree, as by `nsenter` or `kubectl
/// exec`: the middle process (the entered one, whose parent is outside) forks the daemon,
/// which makes itself a process-group leader, mounts autofs on `argv[1]` and prints its host
/// pid and the mount id; the middle exits when told (a line on stdin), leaving the daemon to
/// the pid namespace's init.
const ENTERED_DAEMON: &str = r#"
import ctypes, os, signal, sys
libc = ctypes.CDLL("libc.so.6", use_errno=True)
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    os.makedirs(sys.argv[1], exist_ok=True)
    opts = f"fd={w},pgrp={os.getpgrp()},minproto=5,maxproto=5,indirect".encode()
    if libc.mount(b"entered", sys.argv[1].encode(), b"autofs", 0, opts) != 0:
        os._exit(5)
    mount_id = next(l.split()[0] for l in open("/proc/self/mountinfo") if l.split()[4] == sys.argv[1])
    print(os.readlink("/proc/self"), mount_id, flush=True)
    while True:
        signal.pause()
sys.stdin.readline()
os._exit(0)
"#;

/// Kills a host pid on drop (the entered daemon: the scenario kills it too when it ends).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// A process of this test's with host pid `pid` (`clone3` with `set_tid`, which root may use
/// to pick a free pid), sleeping until it is killed; killed and reaped on drop.
struct PidTaker(i32);

impl PidTaker {
    fn take(pid: i32) -> Result<PidTaker, nix::errno::Errno> {
        autofs_testkit::child::clone_sleep_at(&[pid], false, None).map(PidTaker)
    }
}

impl Drop for PidTaker {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_leaders_pid_taken_by_another_process_is_noticed_between_scans() {
    // CRIU takes `pgrp=` as a pid, whatever process has it. The daemon of a direct mount
    // exits (ORPHANED, leader gone), then an unrelated process gets its pid: the verdict
    // changes with nothing in the mount table, the pipe or a watched process changing. The
    // background scan runs once, at start.
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::direct()).unwrap();
    let (_agent, mut events, orphaned) = orphaned_between_scans(&mut sc, &d).await;
    let gone = orphaned.mount.clone().unwrap();
    assert_eq!(gone.host_pgrp, d.host_pgrp, "{orphaned:#?}");
    assert!(
        autofs_testkit::procfs::process_state(d.host_pgrp).is_none(),
        "the leader is gone"
    );

    let taken = Instant::now();
    let _taker = PidTaker::take(d.host_pgrp).expect("clone3 with the gone leader's pid");
    let (changed, _) = events.until(d.mount_id, |_| true).await;
    eprintln!("pid-taken-to-event latency: {:?}", taken.elapsed());
    let now = changed.mount.as_ref().unwrap();
    assert_eq!(kind(&changed), Kind::Changed, "{changed:#?}");
    assert_eq!(now.host_pgrp, d.host_pgrp, "{changed:#?}");
    assert_ne!(
        (now.state, &now.message),
        (gone.state, &gone.message),
        "{changed:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_re_parented_into_the_dumped_tree_is_noticed_between_scans() {
    // The daemon's parent was entered from outside the namespace: the master is outside the
    // tree CRIU dumps (ORPHANED). When that parent exits, the kernel re-parents the daemon to
    // the pid namespace's init, in the tree: ACTIVE, with nothing in the mount table, the pipe
    // or the master changing; only a pidfd on the parent tells. The background scan runs
    // once, at start.
    use std::io::{BufRead, Write};
    let sc = Scenario::start_or_panic();
    let dir = sc.work_dir().join("entered");
    let mut middle = autofs_testkit::child::Reaped(
        std::process::Command::new("nsenter")
            .arg("-t")
            .arg(sc.init_host_pid().to_string())
            .args(["-m", "-p", "--", "python3", "-c", ENTERED_DAEMON])
            .arg(&dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("nsenter python3"),
    );
    let line = std::io::BufReader::new(middle.0.stdout.take().unwrap())
        .lines()
        .next()
        .expect("the daemon's pid and mount id")
        .unwrap();
    let (daemon, mount_id) = line
        .split_once(' ')
        .and_then(|(pid, id)| Some((pid.parse::<i32>().ok()?, id.parse::<u32>().ok()?)))
        .unwrap_or_else(|| panic!("bad line from the daemon: {line:?}"));
    let _daemon = KillOnDrop(daemon);

    let agent = Agent::start(&["--scan-interval", "1h"]);
    let mut events = Events::of_pid(&agent, sc.init_host_pid()).await;
    let (first, _) = events.until(mount_id, |_| true).await;
    let mount = first.mount.as_ref().unwrap();
    assert_eq!(
        (state(mount), mount.reason, mount.host_pgrp),
        (
            MountState::Orphaned,
            v1::Reason::MasterOutsideTree as i32,
            daemon
        ),
        "{first:#?}"
    );

    let exiting = Instant::now();
    writeln!(middle.0.stdin.take().unwrap()).unwrap();
    let (active, _) = events
        .until(mount_id, |e| {
            state(e.mount.as_ref().unwrap()) == MountState::Active
        })
        .await;
    eprintln!("re-parenting-to-event latency: {:?}", exiting.elapsed());
    assert_eq!(
        active.mount.as_ref().unwrap().reason,
        v1::Reason::MasterHoldsPipe as i32,
        "{active:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounts_appearing_and_vanishing_are_noticed_between_scans() {
    // The background scan runs once, at start: the mount table's change (POLLPRI on the
    // namespace's mountinfo, watched by the agent) is what makes it scan again.
    let mut sc = Scenario::start_or_panic();
    let agent = Agent::start(&["--scan-interval", "1h"]);
    agent.wait_serving().await;
    let mut events = Events::of_pid(&agent, sc.init_host_pid()).await;

    let d = sc.mount(MountSpec::indirect()).unwrap();
    let mounted = Instant::now();
    let (added, _) = events.until(d.mount_id, |_| true).await;
    eprintln!("mounted-to-event latency: {:?}", mounted.elapsed());
    assert_eq!(kind(&added), Kind::Added, "{added:#?}");
    assert_eq!(state(added.mount.as_ref().unwrap()), MountState::Active);

    sc.umount(&d.name).unwrap();
    let (removed, _) = events.until(d.mount_id, |e| kind(e) == Kind::Removed).await;
    assert_eq!(removed.mount.as_ref().unwrap().mount_id, d.mount_id);
}

/// A private mount namespace whose only process exits while its mount table is kept open
/// for the mount-table watch. The parent (its own process group, the master) holds the read
/// end of an autofs mount's pipe; the child unshares, mounts, prints its pid and namespace and
/// exits when told.
const DYING_NAMESPACE: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
os.setpgid(0, 0)
r, w = os.pipe()
child = os.fork()
if child == 0:
    os.close(r)
    if libc.unshare(0x00020000) != 0:  # CLONE_NEWNS
        os._exit(3)
    if libc.mount(b"none", b"/", None, 0x40000 | 0x4000, None) != 0:  # MS_PRIVATE|MS_REC
        os._exit(4)
    opts = f"fd={w},pgrp={os.getpgrp()},minproto=5,maxproto=5,indirect".encode()
    if libc.mount(b"dying-ns", sys.argv[1].encode(), b"autofs", 0, opts) != 0:
        os._exit(5)
    os.close(w)
    print(os.getpid(), os.readlink("/proc/self/ns/mnt"), flush=True)
    sys.stdin.readline()
    os._exit(0)
os.close(w)
_, status = os.waitpid(child, 0)
if os.waitstatus_to_exitcode(status) != 0:
    # No line comes: the test must fail now, not wait for one.
    sys.exit(f"the child making the namespace failed with {os.waitstatus_to_exitcode(status)}")
sys.stdin.readline()
"#;

/// The python tree above, killed whole on drop.
struct DyingNamespace(std::process::Child);

impl DyingNamespace {
    /// Starts the tree with its autofs mount on `dir`; returns it with the child's pid and
    /// mount namespace once the child has mounted.
    fn start(dir: &std::path::Path) -> (Self, u32, u64) {
        use std::io::BufRead;
        let mut tree = DyingNamespace(
            std::process::Command::new("python3")
                .arg("-c")
                .arg(DYING_NAMESPACE)
                .arg(dir)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("python3"),
        );
        let mut lines = std::io::BufReader::new(tree.0.stdout.take().unwrap()).lines();
        let line = lines
            .next()
            .unwrap_or_else(|| {
                panic!(
                    "the python tree printed no pid and namespace (its stderr above says why): {:?}",
                    tree.0.wait()
                )
            })
            .unwrap();
        let parsed = line.split_once(' ').and_then(|(pid, link)| {
            let ns = link
                .strip_prefix("mnt:[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            Some((pid.parse::<u32>().ok()?, ns))
        });
        let (child, mnt_ns) = parsed.unwrap_or_else(|| panic!("unexpected: {line}"));
        (tree, child, mnt_ns)
    }

    /// Tells the child to exit (and the tree with it).
    fn end(&mut self) {
        use std::io::Write;
        self.0.stdin.as_mut().unwrap().write_all(b"exit\n").unwrap();
    }
}

impl Drop for DyingNamespace {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// The `mountinfo` files of the agent's own descriptor table that were opened through `pid`.
fn tables_read_through(agent: &Agent, pid: u32) -> usize {
    let table = format!("/proc/{pid}/mountinfo");
    std::fs::read_dir(format!("/proc/{}/fd", agent.pid()))
        .expect("the agent's fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|link| link.as_os_str() == table.as_str())
        .count()
}

/// An open mount table holds its namespace, and the namespace its mounts: when the last
/// process of a namespace whose table the agent keeps exits, the agent lets go of it at once
/// (a scan follows the exit of the process the table was read through), so the kernel can
/// tear the namespace down as it would without the agent. Before, the agent held it until
/// the next full scan (`--scan-interval 1h` here: never). The agent's own descriptors are
/// looked at: other tests' agents may hold the namespace too, for a while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_whose_last_process_exits_is_let_go_at_once() {
    let agent = Agent::start(&["--scan-interval", "1h"]);
    agent.wait_serving().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut tree, child, mnt_ns) = DyingNamespace::start(dir.path());

    // A scan that lists the namespace keeps its table open, read through the child.
    let agent = &agent;
    common::eventually("the agent lists the new namespace's mount", || async move {
        let mut client = agent.client().await;
        (!common::list_ns(&mut client, mnt_ns).await.is_empty()).then_some(())
    })
    .await;
    common::eventually("the agent watches the namespace's table", || async move {
        (tables_read_through(agent, child) > 0).then_some(())
    })
    .await;

    tree.end();
    common::eventually_within(
        "the agent lets go of the dead namespace's table",
        HANG_GUARD,
        || async move { (tables_read_through(agent, child) == 0).then_some(()) },
    )
    .await;
}

/// A mount namespace made after the last scan by a process that mounts only inside it
/// (private propagation: no mount table the agent keeps changes) is found within a pass of
/// the namespace walk, and its autofs mount reported to a watch of every mount. Before, it
/// waited for the next full scan (`--scan-interval 1h` here: never).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_made_after_the_last_scan_is_found_between_scans() {
    let agent = Agent::start(&["--scan-interval", "1h"]);
    agent.wait_serving().await;
    // Every mount; the stream is answered once any scan it asked for is done, so from here
    // on only the background scanner scans.
    let mut events = Events::of(&agent, None).await;

    let dir = tempfile::tempdir().unwrap();
    let (mut tree, _, mnt_ns) = DyingNamespace::start(dir.path());
    let added = events.first_in(mnt_ns).await;
    assert_eq!(kind(&added), Kind::Added, "{added:#?}");
    let mount = added.mount.unwrap();
    assert_eq!(
        mount.mount_point,
        dir.path().to_str().unwrap(),
        "{mount:#?}"
    );
    tree.end();
}

/// An agent starved of descriptors for a while (`prlimit` lowers its soft `RLIMIT_NOFILE` to 0:
/// every new fd fails with `EMFILE`, and `poll(2)` on more fds than that with `EINVAL`) comes
/// back whole once a scan works again: its walk of the mount namespaces and its watch of the
/// mount tables, which both failed, are tried again after the next scan, and a namespace made
/// after it is found between scans. Fails where either is given up until restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_starved_of_fds_walks_and_watches_again_after_the_next_scan() {
    // Its namespace is one the walk must open a fd for, and a table the watch polls.
    let mut sc = Scenario::start_or_panic();
    let agent = Agent::start(&["--scan-interval", "1h", "--max-scan-age", "1ms"]);
    agent.wait_serving().await;
    let mut client = agent.client().await;
    let mut events = Events::of(&agent, None).await;
    let log_line = |needle: &'static str| {
        let agent = &agent;
        common::eventually(needle, move || async move {
            agent
                .log_text()
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_owned)
        })
    };

    let soft = soft_nofile(agent.pid());
    set_soft_nofile(agent.pid(), "0");
    // A change the watch wakes for, after which its next poll fails.
    sc.mount(MountSpec::indirect()).unwrap();
    let walk = log_line("walking the mount namespaces failed").await;
    let watch = log_line("mount-table watch failed").await;
    set_soft_nofile(agent.pid(), &soft);
    assert!(walk.contains("Too many open files"), "{walk}");
    assert!(watch.contains("Invalid argument"), "{watch}");

    // A scan (ListMounts scans fresh at this --max-scan-age): the walk works again, and the
    // watch takes that scan's tables and wakes for the next change.
    common::list(&mut client, v1::ListMountsRequest::default())
        .await
        .unwrap();
    log_line("walking the mount namespaces works again").await;
    let later = sc.mount(MountSpec::indirect()).unwrap();
    log_line("mount-table watch works again").await;
    events
        .until(later.mount_id, |e| kind(e) == Kind::Added)
        .await;

    let dir = tempfile::tempdir().unwrap();
    let (mut tree, _, mnt_ns) = DyingNamespace::start(dir.path());
    let added = events.first_in(mnt_ns).await;
    assert_eq!(kind(&added), Kind::Added, "{added:#?}");
    tree.end();
}

/// The soft `RLIMIT_NOFILE` of `pid` (`/proc/<pid>/limits`), as `prlimit` takes it.
fn soft_nofile(pid: i32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().to_owned()
}

/// Sets the soft `RLIMIT_NOFILE` of `pid` with util-linux `prlimit`.
fn set_soft_nofile(pid: i32, soft: &str) {
    let out = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={soft}:"))
        .output()
        .expect("prlimit");
    assert!(out.status.success(), "prlimit: {out:?}");
}

/// An agent without `CAP_SYS_ADMIN` (the DaemonSet gives it `CAP_SYS_PTRACE` and
/// `CAP_DAC_READ_SEARCH` alone) cannot walk the kernel's list of mount namespaces, which
/// would hide them from it, and says at start that new namespaces wait for the next scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_cap_sys_admin_says_new_namespaces_wait_for_the_next_scan() {
    let agent = Agent::start_wrapped(
        &[
            "setpriv",
            "--inh-caps=-sys_admin",
            "--bounding-set=-sys_admin",
            "--",
        ],
        &[],
    );
    agent.wait_serving().await;
    let said = common::eventually("the agent says it cannot walk the namespaces", || async {
        let log = agent.log_text();
        log.lines()
            .find(|l| l.contains("new mount namespaces are seen at the next scan"))
            .map(str::to_owned)
    })
    .await;
    assert!(said.contains("lacks CAP_SYS_ADMIN"), "{said}");
}
