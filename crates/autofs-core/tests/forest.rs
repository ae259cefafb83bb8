//! Real-kernel tests of the owner choice remembered across scans (`tree::ForestMemo`): a
//! private mount namespace whose process forest the test reshapes — new roots, a root that
//! exits, a zombie parent, reparenting, a pid-namespace init handed ownership, a pid reused by
//! a process of another rank — and after every change the remembered answer must equal a
//! fresh walk of every member. Needs root; fails, never skips, without it. Every process the
//! test starts is killed and reaped on drop, even on failure.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use autofs_core::ProcRoot;
use autofs_core::process::ProcessTable;
use autofs_core::tree::{ForestMemo, namespace_owner};
use autofs_testkit::{HANG_GUARD, procfs};
use nix::libc;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Processes of one private mount namespace, all started by the test (it is their child
/// subreaper, so orphans come back to it and are reaped).
struct Forest {
    mnt_ns: u64,
    children: Vec<Child>,
    cloned: Vec<i32>,
}

impl Forest {
    /// `unshare --mount --fork sh` with `n` sleeping children: unshare (a root whose parent is
    /// the test), sh, and the sleeps.
    fn start(n: usize) -> Forest {
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
        let script = format!("for i in $(seq {n}); do sleep infinity & done; wait");
        let child = Command::new("unshare")
            .args(["--mount", "--fork", "sh", "-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let unshare = pid_of(&child);
        let mut forest = Forest {
            mnt_ns: 0,
            children: vec![child],
            cloned: Vec::new(),
        };
        let host_ns = ns_of(i32::try_from(std::process::id()).unwrap()).unwrap();
        forest.wait_for("the new namespace to fill", |f| {
            let Some(ns) = ns_of(unshare).filter(|&ns| ns != host_ns) else {
                return false;
            };
            f.mnt_ns = ns;
            f.members().len() == n + 2
        });
        forest
    }

    /// Host pids of the namespace's members, ascending.
    fn members(&self) -> Vec<i32> {
        let root = ProcRoot::open("/proc").unwrap();
        root.pids()
            .unwrap()
            .into_iter()
            .filter(|&pid| root.mount_namespace(pid).ok() == Some(self.mnt_ns))
            .collect()
    }

    /// Runs `args` with its mount namespace set to the forest's (`nsenter --mount`), as
    /// `docker exec` does: a new root whose parent is the test.
    fn enter(&mut self, args: &[&str]) -> i32 {
        let target = self.members()[0].to_string();
        let child = Command::new("nsenter")
            .args(["--target", &target, "--mount", "--"])
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .expect("nsenter");
        let pid = pid_of(&child);
        self.children.push(child);
        let mnt_ns = self.mnt_ns;
        self.wait_for("nsenter to join the namespace", |_| {
            ns_of(pid) == Some(mnt_ns)
        });
        pid
    }

    fn wait_for(&mut self, what: &str, mut done: impl FnMut(&mut Forest) -> bool) {
        let start = Instant::now();
        while !done(self) {
            assert!(start.elapsed() < HANG_GUARD, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Reaps whatever children of the test have exited (orphans included).
    fn reap(&mut self) {
        while let Ok(status) = nix::sys::wait::waitpid(
            Pid::from_raw(-1),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        ) {
            if status == nix::sys::wait::WaitStatus::StillAlive {
                break;
            }
        }
    }
}

impl Drop for Forest {
    fn drop(&mut self) {
        for pid in self.members() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for &pid in &self.cloned {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let start = Instant::now();
        while !self.members().is_empty() && start.elapsed() < HANG_GUARD {
            self.reap();
            std::thread::sleep(Duration::from_millis(10));
        }
        self.reap();
    }
}

fn pid_of(child: &Child) -> i32 {
    i32::try_from(child.id()).unwrap()
}

fn ns_of(pid: i32) -> Option<u64> {
    ProcRoot::open("/proc").unwrap().mount_namespace(pid).ok()
}

/// One scan's owner, remembered and fresh; asserts they agree and returns it with the number of
/// `stat`/`status` files the remembered choice read.
fn owners_agree(memo: &mut ForestMemo, forest: &Forest, step: &str) -> (i32, usize) {
    let root = ProcRoot::open("/proc").unwrap();
    let listing = root.pid_entries().unwrap();
    let members = forest.members();
    let remembered = {
        let mut table = ProcessTable::new(&root);
        memo.begin(&listing).owner(&mut table, &members)
    };
    let fresh = namespace_owner(&mut ProcessTable::new(&root), &members);
    assert_eq!(
        remembered, fresh,
        "{step}: the remembered owner differs from a fresh walk of members {members:?}"
    );
    (fresh.expect("an owner"), memo.reads())
}

/// `clone3(CLONE_NEWPID)` with `set_tid = [1, pid]`: a pid-namespace init that takes host pid
/// `pid`, joins the forest's mount namespace and sleeps. `Err(errno)` when the pid is taken.
fn clone_init_at(pid: i32, forest: &Forest) -> Result<i32, nix::errno::Errno> {
    let ns = std::fs::File::open(format!("/proc/{}/ns/mnt", forest.members()[0])).unwrap();
    autofs_testkit::child::clone_sleep_at(&[1, pid], true, Some(ns.as_fd()))
}

/// Forks a process that joins the forest's mount namespace, becomes a child subreaper (so
/// orphans below it stay inside the namespace) and runs `sh -c script`: a root whose parent
/// is the test.
fn spawn_subreaper(forest: &mut Forest, script: &str) -> i32 {
    let ns = std::fs::File::open(format!("/proc/{}/ns/mnt", forest.members()[0])).unwrap();
    let sh = CString::new("/bin/sh").unwrap();
    let arg0 = CString::new("sh").unwrap();
    let arg1 = CString::new("-c").unwrap();
    let arg2 = CString::new(script).unwrap();
    let argv = [
        arg0.as_ptr(),
        arg1.as_ptr(),
        arg2.as_ptr(),
        std::ptr::null(),
    ];
    // SAFETY: the child only calls async-signal-safe functions (setns, prctl, execv, _exit) on
    // data prepared before the fork.
    #[allow(unsafe_code)]
    let pid = unsafe {
        let pid = libc::fork();
        if pid == 0 {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) == 0
                && libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
            {
                libc::execv(sh.as_ptr(), argv.as_ptr());
            }
            libc::_exit(127);
        }
        pid
    };
    assert!(pid > 0, "fork: {}", nix::errno::Errno::last());
    forest.cloned.push(pid);
    pid
}

#[test]
fn remembered_owner_equals_a_fresh_walk_while_the_forest_changes() {
    let mut forest = Forest::start(20);
    let mut memo = ForestMemo::default();
    let members = forest.members();
    let unshare = pid_of(&forest.children[0]);
    let parents: HashSet<i32> = members.iter().filter_map(|&p| procfs::ppid(p)).collect();
    // The memo tells processes apart by their /proc/<pid> inode numbers, and the kernel may
    // evict an unused entry between two scans (memory pressure): back, it has a new number
    // and the memo reads it again, rightly. Held open, the entries keep theirs, so
    // "unchanged" is unchanged for the memo too.
    let pinned: Vec<std::fs::File> = members
        .iter()
        .chain(&parents)
        .map(|pid| std::fs::File::open(format!("/proc/{pid}")).unwrap())
        .collect();

    // unshare is the only root: it owns the namespace.
    let (owner, _) = owners_agree(&mut memo, &forest, "first scan");
    assert_eq!(owner, unshare);
    // Unchanged: one `stat` per distinct parent (the test, unshare, sh), not one per member.
    let (owner, reads) = owners_agree(&mut memo, &forest, "unchanged");
    assert_eq!(owner, unshare);
    assert!(
        reads == parents.len() && reads < members.len(),
        "{reads} files read for {} members of {} distinct parents",
        members.len(),
        parents.len()
    );
    drop(pinned);

    // A later root (docker exec): younger, so it does not outrank unshare.
    let exec = forest.enter(&["sleep", "infinity"]);
    let (owner, _) = owners_agree(&mut memo, &forest, "a later root");
    assert_eq!(owner, unshare);
    assert!(forest.members().contains(&exec));

    // The owner dies and stays a zombie: sh's parent has begun to exit, and sh now belongs to
    // the test (its subreaper), outside the namespace: sh is a root, older than `exec`.
    let sh = *forest
        .members()
        .iter()
        .find(|&&p| procfs::ppid(p) == Some(unshare))
        .expect("sh, unshare's child");
    let me = i32::try_from(std::process::id()).unwrap();
    kill(Pid::from_raw(unshare), Signal::SIGKILL).unwrap();
    forest.wait_for("sh to be reparented to the test", |_| {
        procfs::ppid(sh) == Some(me)
    });
    forest.wait_for("unshare to be a zombie", |_| {
        procfs::process_state(unshare) == Some('Z')
    });
    let (owner, _) = owners_agree(&mut memo, &forest, "the owner is a zombie");
    assert_eq!(owner, sh);
    forest.children[0].wait().unwrap();
    let (owner, _) = owners_agree(&mut memo, &forest, "the owner was reaped");
    assert_eq!(owner, sh);

    // A subreaper root in the namespace with two children, one of them `unshare --pid --fork`
    // waiting on its init. That unshare dies and stays a zombie (the subreaper never reaps):
    // the init goes to the subreaper, a member, so it is no root (the parent pid remembered
    // from before would make it one, and an init would outrank sh).
    let subreaper = spawn_subreaper(
        &mut forest,
        "sleep infinity & unshare --pid --fork sleep infinity & exec sleep infinity",
    );
    // Its init: a grandchild of the subreaper.
    forest.wait_for("the subreaper's init", |f| {
        f.members().iter().any(|&p| {
            procfs::ppid(p) != Some(subreaper)
                && procfs::ppid(p).is_some_and(|parent| procfs::ppid(parent) == Some(subreaper))
        })
    });
    let (owner, _) = owners_agree(&mut memo, &forest, "a subreaper root");
    assert_eq!(owner, sh);
    let waiting = *forest
        .members()
        .iter()
        .find(|&&p| {
            procfs::ppid(p) == Some(subreaper)
                && forest.members().iter().any(|&c| procfs::ppid(c) == Some(p))
        })
        .expect("unshare --pid under the subreaper");
    let init = *forest
        .members()
        .iter()
        .find(|&&p| procfs::ppid(p) == Some(waiting))
        .unwrap();
    owners_agree(&mut memo, &forest, "the subreaper's tree, unchanged");
    kill(Pid::from_raw(waiting), Signal::SIGKILL).unwrap();
    forest.wait_for("the init to go to the subreaper", |_| {
        procfs::ppid(init) == Some(subreaper) && procfs::process_state(waiting) == Some('Z')
    });
    let (owner, _) = owners_agree(&mut memo, &forest, "an init reparented inside");
    assert_eq!(owner, sh);

    // A sleep's pid is reused by a pid-namespace init of the same mount namespace: a root
    // of another rank under a pid the memo knows as sh's child. It outranks sh.
    let sleeps: Vec<i32> = forest
        .members()
        .into_iter()
        .filter(|&p| procfs::ppid(p) == Some(sh))
        .collect();
    let mut reused = None;
    for victim in sleeps {
        kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
        forest.wait_for("sh to reap the sleep", |_| {
            !std::path::Path::new(&format!("/proc/{victim}")).exists()
        });
        match clone_init_at(victim, &forest) {
            Ok(pid) => {
                assert_eq!(pid, victim);
                forest.cloned.push(pid);
                reused = Some(pid);
                break;
            }
            // Another process of the machine took the pid first: try the next one.
            Err(nix::errno::Errno::EEXIST) => continue,
            Err(e) => panic!("clone3 with set_tid: {e}"),
        }
    }
    let reused = reused.expect("a pid of a sleep reused");
    let mnt_ns = forest.mnt_ns;
    forest.wait_for("the init to join the namespace", |_| {
        ns_of(reused) == Some(mnt_ns)
    });
    let (owner, _) = owners_agree(&mut memo, &forest, "a pid reused by an init");
    assert_eq!(owner, reused);

    // A root that waits on an init it forked (`unshare --pid --fork`) hands ownership to it;
    // that init is younger than `reused`, so the owner stays.
    let outer = forest.enter(&["unshare", "--pid", "--fork", "sleep", "infinity"]);
    forest.wait_for("unshare's init", |f| {
        f.members().iter().any(|&p| procfs::ppid(p) == Some(outer))
    });
    let (owner, _) = owners_agree(&mut memo, &forest, "a handing-over root");
    assert_eq!(owner, reused);

    // The older init exits: the handed-over init owns the namespace.
    kill(Pid::from_raw(reused), Signal::SIGKILL).unwrap();
    forest.wait_for("the init to go", |f| {
        f.reap();
        !f.members().contains(&reused)
    });
    let handed = *forest
        .members()
        .iter()
        .find(|&&p| procfs::ppid(p) == Some(outer))
        .unwrap();
    let (owner, _) = owners_agree(&mut memo, &forest, "the older init exited");
    assert_eq!(owner, handed);

    // Its waiting parent dies: the init is reparented to the test and becomes a root itself.
    kill(Pid::from_raw(outer), Signal::SIGKILL).unwrap();
    forest.wait_for("the init to be reparented", |_| {
        procfs::ppid(handed) == Some(me)
    });
    let (owner, _) = owners_agree(&mut memo, &forest, "the init was reparented");
    assert_eq!(owner, handed);
    forest.reap();
    let (owner, _) = owners_agree(&mut memo, &forest, "everything reaped");
    assert_eq!(owner, handed);

    // The remembered processes are the namespace's: the test's exits were forgotten.
    let members: HashSet<i32> = forest.members().into_iter().collect();
    assert!(!members.contains(&unshare));
}
