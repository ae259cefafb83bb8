//! A cgroup v2 path shaped like a containerd container of a Kubernetes pod (systemd driver), so
//! an inspector attributes whatever process is moved into it — and its mount namespace — to
//! that container and pod. The dirs are removed on drop.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// A container cgroup under a pod slice; remove it by dropping it.
#[derive(Debug)]
pub struct ContainerCgroup {
    /// 64-hex container id.
    pub container_id: String,
    /// Dashed pod UID.
    pub pod_uid: String,
    root: PathBuf,
    /// Created dirs, outermost first.
    dirs: Vec<PathBuf>,
}

impl ContainerCgroup {
    /// Creates the cgroup and moves `pid` into it. Panics with the reason when it cannot (no
    /// cgroup v2 hierarchy, not root): tests that need it fail rather than skip.
    ///
    /// # Panics
    ///
    /// When `/proc/self/mountinfo` shows no cgroup v2 hierarchy, when a cgroup dir cannot be
    /// created (not root), or when `pid` cannot be written to the leaf's `cgroup.procs` (e.g. no
    /// such process).
    pub fn enter(pid: i32) -> ContainerCgroup {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let seed = format!(
            "{:08x}{:08x}{:08x}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            nanos
        );
        let container_id = format!("{seed}{}", "c0ffee".repeat(7))[..64].to_owned();
        let pod_uid = format!(
            "{}-{}-{}-{}-0e2e0e2e0e2e",
            &seed[..8],
            &seed[8..12],
            &seed[12..16],
            &seed[16..20]
        );
        let root = cgroup2_mount();
        let top = root.join(format!("autofs-test-{seed}.slice"));
        let pod = top.join(format!(
            "kubepods-besteffort-pod{}.slice",
            pod_uid.replace('-', "_")
        ));
        let leaf = pod.join(format!("cri-containerd-{container_id}.scope"));
        let mut cgroup = ContainerCgroup {
            container_id,
            pod_uid,
            root,
            dirs: Vec::new(),
        };
        for dir in [top, pod, leaf] {
            std::fs::create_dir(&dir)
                .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", dir.display()));
            cgroup.dirs.push(dir);
        }
        let procs = cgroup.dirs[2].join("cgroup.procs");
        std::fs::write(&procs, pid.to_string())
            .unwrap_or_else(|e| panic!("cannot move {pid} into {}: {e}", procs.display()));
        cgroup
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        // Processes still inside go back to the root cgroup first.
        if let Some(leaf) = self.dirs.last()
            && let Ok(pids) = std::fs::read_to_string(leaf.join("cgroup.procs"))
        {
            for pid in pids.lines() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
            }
        }
        for dir in self.dirs.iter().rev() {
            // A cgroup whose last process just died can stay busy for a moment.
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Mount point of the cgroup v2 hierarchy (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on
/// hybrid hosts).
fn cgroup2_mount() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            (right.split(' ').next()? == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .expect("container attribution tests need a cgroup v2 hierarchy")
}
