//! Which mounts a question is about, answered once for every front end.
//!
//! - A list's filters (`ListMounts`, `WatchMounts`, `scan --pid`) become a [`Selector`]: a
//!   pid's mount namespace, a mount namespace, a container id prefix, a pod UID, states.
//! - A workload (`CheckMigratable`, `WaitMigratable`) becomes a [`Workload`], and
//!   [`Workload::check`] says which of its mounts block a CRIU dump now, and whether waiting
//!   can help ([`Outcome`]).
//!
//! Everything a client sends is validated here, and a pid only ever becomes
//! `<proc_root>/<pid>/ns/mnt`: nothing a client sends can make the inspector read a path
//! outside its proc root.

use std::io;
use std::path::PathBuf;

use crate::external::{Dump, ExternalMounts};
use crate::proc_root::{ProcRoot, ReadFailure};
use crate::report::{MountReport, MountState};
use crate::scan::{NamespaceInfo, Scan};
use crate::tasks::TaskBlocker;

/// Why a question about mounts cannot be answered. Each variant says what was wrong with the
/// question, or what of the workload could not be found; [`SelectError::kind`] groups them.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// A pid that cannot name a process (≤ 0).
    #[error("pid: must be a positive process id, got {pid}")]
    InvalidPid {
        /// The pid given.
        pid: i32,
    },
    /// A container id that is not 1–64 lowercase hex digits.
    #[error("container_id: expected up to 64 lowercase hex digits, got {given:?}")]
    InvalidContainerId {
        /// The id given (its first 80 characters).
        given: String,
    },
    /// A pod UID not in the dashed 8-4-4-4-12 hex form.
    #[error("pod_uid: expected a UUID like 7c0a1e2f-3b4d-4c5e-8f9a-0b1c2d3e4f5a, got {given:?}")]
    InvalidPodUid {
        /// The UID given (its first 80 characters).
        given: String,
    },
    /// A workload target given as an empty string.
    #[error("{field}: empty")]
    EmptyTarget {
        /// `container_id` or `pod_uid`.
        field: &'static str,
    },
    /// No process with this pid (`<pid>/ns/mnt` does not exist).
    #[error("pid {pid}: no such process")]
    NoSuchProcess {
        /// The pid asked about.
        pid: i32,
        /// The failed `readlink`.
        #[source]
        source: io::Error,
    },
    /// The process exists but its mount namespace may not be read.
    #[error(
        "pid {pid}: the inspector may not read {} (reading another process's namespaces takes CAP_SYS_PTRACE, or the same user without hidepid; a confining AppArmor/SELinux profile can deny it too)",
        path.display()
    )]
    PidDenied {
        /// The pid asked about.
        pid: i32,
        /// `<proc_root>/<pid>/ns/mnt`.
        path: PathBuf,
        /// The refused `readlink`.
        #[source]
        source: io::Error,
    },
    /// Reading the mount namespace of the process failed otherwise.
    #[error("pid {pid}: cannot read {}", path.display())]
    PidUnreadable {
        /// The pid asked about.
        pid: i32,
        /// `<proc_root>/<pid>/ns/mnt`.
        path: PathBuf,
        /// The failed `readlink`, or a link that names no mount namespace.
        #[source]
        source: io::Error,
    },
    /// Both a pid and a mount namespace were given, and the pid lives elsewhere.
    #[error("pid {pid} is in mount namespace {mnt_ns}, not in the requested mnt_ns")]
    PidOutsideNamespace {
        /// The pid given.
        pid: i32,
        /// Its mount namespace (inode).
        mnt_ns: u64,
    },
    /// The pid is a thread whose mount namespace is not its process's: a scan lists the
    /// mount namespaces of processes (thread-group leaders), not of their threads.
    #[error(
        "pid {pid} is a thread of process {tgid} in a mount namespace of its own ({mnt_ns}), which a scan does not see: it reads the mount namespaces of processes, not of their threads"
    )]
    ThreadNamespace {
        /// The pid (thread id) asked about.
        pid: i32,
        /// Its process (thread-group leader).
        tgid: i32,
        /// The thread's mount namespace (inode).
        mnt_ns: u64,
    },
    /// The pid's mount namespace is not in the scan (the process and its namespace are gone).
    #[error("pid {pid}: its mount namespace vanished")]
    NamespaceVanished {
        /// The pid asked about.
        pid: i32,
    },
    /// No mount namespace of the scan belongs to a container with this id prefix.
    #[error("container {id}: no process of it runs on this node")]
    ContainerNotFound {
        /// The container id prefix asked about.
        id: String,
    },
    /// No mount namespace of the scan belongs to a container of this pod.
    #[error("pod {uid}: no container of it runs on this node")]
    PodNotFound {
        /// The pod UID asked about.
        uid: String,
    },
    /// Processes whose mount namespace could not be read belong to the workload, or could not
    /// be attributed to any: mount namespaces of the workload may be missing from the scan, so
    /// neither "dumpable" nor "not found" can be said.
    #[error(
        "{workload}: the mount namespaces of {count} process(es) that {belong} could not be read, so its autofs mounts cannot all be seen (e.g. {example})"
    )]
    WorkloadUnreadable {
        /// `container <prefix>` or `pod <uid>`.
        workload: String,
        /// How many such processes.
        count: usize,
        /// `belong to it`, or `may belong to it` when some could not be attributed.
        belong: &'static str,
        /// The first failure, e.g. `cannot read /proc/42/ns/mnt: Permission denied (os error 13)`.
        example: String,
        /// Whether every failure was a refusal (`EACCES`, `EPERM`).
        denied: bool,
    },
    /// Nothing of the workload was found, but the view was restricted
    /// ([`crate::View::restricted`]): it may be there, hidden ([`SelectError::unless_hidden`]).
    #[error("{not_found}, as far as the agent can see; but {view}: it may be there, unseen")]
    Unseen {
        /// What was not found, e.g. `container 4f3a: no process of it runs on this node`.
        not_found: String,
        /// Why the view is restricted ([`crate::View::summary`]).
        view: String,
    },
    /// An external mount point list that CRIU could not match ([`crate::external`]).
    #[error(transparent)]
    InvalidExternalMount(#[from] crate::external::ExternalMountError),
    /// A container id prefix that matches more than one container.
    #[error("container_id: prefix {prefix} matches {matches} containers; give more digits")]
    AmbiguousContainer {
        /// The prefix given.
        prefix: String,
        /// How many distinct containers it matches.
        matches: usize,
    },
}

/// The groups of [`SelectError`], for callers that map them to protocol status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectErrorKind {
    /// The question itself is malformed or ambiguous: asking again unchanged cannot help.
    InvalidArgument,
    /// Nothing of the workload exists on this node (now).
    NotFound,
    /// The inspector may not look.
    PermissionDenied,
    /// Looking failed for another reason.
    Unreadable,
}

impl SelectError {
    /// Which group this error belongs to.
    pub fn kind(&self) -> SelectErrorKind {
        use SelectError::*;
        match self {
            InvalidPid { .. }
            | InvalidContainerId { .. }
            | InvalidPodUid { .. }
            | EmptyTarget { .. }
            | PidOutsideNamespace { .. }
            | InvalidExternalMount(_)
            | AmbiguousContainer { .. } => SelectErrorKind::InvalidArgument,
            NoSuchProcess { .. }
            | NamespaceVanished { .. }
            | ContainerNotFound { .. }
            | PodNotFound { .. } => SelectErrorKind::NotFound,
            PidDenied { .. } | WorkloadUnreadable { denied: true, .. } | Unseen { .. } => {
                SelectErrorKind::PermissionDenied
            }
            WorkloadUnreadable { denied: false, .. } => SelectErrorKind::Unreadable,
            PidUnreadable { .. } | ThreadNamespace { .. } => SelectErrorKind::Unreadable,
        }
    }
}

impl SelectError {
    /// A "not found" seen through a restricted `view` is no proof of absence (a hidden
    /// process looks exactly like a gone one): it becomes [`SelectError::Unseen`]. Any other
    /// error, or any error in an unrestricted view, is returned unchanged.
    pub fn unless_hidden(self, view: &crate::View) -> Self {
        if view.restricted && self.kind() == SelectErrorKind::NotFound {
            Self::Unseen {
                not_found: self.to_string(),
                view: view.summary(),
            }
        } else {
            self
        }
    }
}

/// The mount namespace (inode) of host pid `pid`, read from `<proc_root>/<pid>/ns/mnt`.
///
/// # Errors
///
/// [`SelectError::InvalidPid`] for a pid ≤ 0 (nothing is read), [`SelectError::NoSuchProcess`]
/// when the process does not exist, [`SelectError::PidDenied`] when its namespace may not be
/// read, [`SelectError::PidUnreadable`] for any other failure, [`SelectError::ThreadNamespace`]
/// for a thread whose mount namespace is not its process's (`Tgid:` of its `status`).
pub fn mount_namespace_of(root: &ProcRoot, pid: i32) -> Result<u64, SelectError> {
    if pid <= 0 {
        return Err(SelectError::InvalidPid { pid });
    }
    let mnt_ns = root.mount_namespace(pid).map_err(|source| {
        let path = root.pid_path(pid, "ns/mnt");
        match ReadFailure::of(&source) {
            ReadFailure::Vanished => SelectError::NoSuchProcess { pid, source },
            ReadFailure::Denied => SelectError::PidDenied { pid, path, source },
            ReadFailure::Other => SelectError::PidUnreadable { pid, path, source },
        }
    })?;
    // A thread id names its process's namespace, unless the thread has one of its own.
    let tgid = crate::process::ProcessTable::new(root)
        .info(pid)
        .map_or(pid, |info| info.tgid);
    if tgid != pid && root.mount_namespace(tgid).is_ok_and(|ns| ns != mnt_ns) {
        return Err(SelectError::ThreadNamespace { pid, tgid, mnt_ns });
    }
    Ok(mnt_ns)
}

/// A container id filter: `None` for an empty one, else 1–64 lowercase hex digits (a unique
/// prefix of the id is enough).
///
/// # Errors
///
/// [`SelectError::InvalidContainerId`] for anything else.
pub fn container_id_prefix(raw: &str) -> Result<Option<String>, SelectError> {
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.len() > 64
        || !raw
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(SelectError::InvalidContainerId {
            given: truncate(raw),
        });
    }
    Ok(Some(raw.to_owned()))
}

/// A pod UID filter: `None` for an empty one, else the dashed 8-4-4-4-12 hex form, lowercased
/// (as the kubelet names pods in cgroup paths).
///
/// # Errors
///
/// [`SelectError::InvalidPodUid`] for anything else.
pub fn pod_uid(raw: &str) -> Result<Option<String>, SelectError> {
    if raw.is_empty() {
        return Ok(None);
    }
    let groups: Vec<&str> = raw.split('-').collect();
    let ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        return Err(SelectError::InvalidPodUid {
            given: truncate(raw),
        });
    }
    Ok(Some(raw.to_ascii_lowercase()))
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

fn container_matches(prefix: &str, container_id: &str) -> bool {
    !container_id.is_empty() && container_id.starts_with(prefix)
}

/// Which mounts a list is about; a field left empty matches every mount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// Mount namespace (inode): the one asked for, or that of the pid asked for.
    pub mnt_ns: Option<u64>,
    /// Container id prefix (validated: lowercase hex).
    pub container_id: Option<String>,
    /// Pod UID (validated, lowercase).
    pub pod_uid: Option<String>,
    /// Accepted states (empty: all).
    pub states: Vec<MountState>,
}

impl Selector {
    /// A selector of the given filters; empty strings and `None` match everything.
    ///
    /// # Errors
    ///
    /// [`SelectError::InvalidContainerId`] or [`SelectError::InvalidPodUid`].
    pub fn new(
        mnt_ns: Option<u64>,
        container_id: &str,
        pod_uid: &str,
        states: Vec<MountState>,
    ) -> Result<Self, SelectError> {
        Ok(Self {
            mnt_ns,
            container_id: container_id_prefix(container_id)?,
            pod_uid: self::pod_uid(pod_uid)?,
            states,
        })
    }

    /// Narrows the selector to the mount namespace of host pid `pid`.
    ///
    /// # Errors
    ///
    /// Those of [`mount_namespace_of`], and [`SelectError::PidOutsideNamespace`] when the
    /// selector already names another mount namespace.
    pub fn with_pid(mut self, root: &ProcRoot, pid: i32) -> Result<Self, SelectError> {
        let mnt_ns = mount_namespace_of(root, pid)?;
        if self.mnt_ns.is_some_and(|wanted| wanted != mnt_ns) {
            return Err(SelectError::PidOutsideNamespace { pid, mnt_ns });
        }
        self.mnt_ns = Some(mnt_ns);
        Ok(self)
    }

    /// Whether a mount with these facts is selected; `state` is `None` for a state the caller
    /// could not name (selected only when no state is asked for).
    pub fn admits(
        &self,
        mnt_ns: u64,
        container_id: &str,
        pod_uid: &str,
        state: Option<MountState>,
    ) -> bool {
        self.mnt_ns.is_none_or(|ns| mnt_ns == ns)
            && self
                .container_id
                .as_deref()
                .is_none_or(|prefix| container_matches(prefix, container_id))
            && self.pod_uid.as_deref().is_none_or(|uid| pod_uid == uid)
            && (self.states.is_empty() || state.is_some_and(|s| self.states.contains(&s)))
    }

    /// Whether `report` is selected.
    pub fn matches(&self, report: &MountReport) -> bool {
        self.admits(
            report.mnt_ns,
            &report.container_id,
            &report.pod_uid,
            Some(report.state),
        )
    }
}

/// What a workload question names: a process, a container or a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A host pid: the workload is its mount namespace, and the mount namespaces made inside
    /// its container (whose owner is a process of that namespace: see [`crate::tree`]).
    Pid(i32),
    /// A container id, or a unique prefix of it.
    ContainerId(String),
    /// A pod UID: every container of the pod.
    PodUid(String),
}

/// A validated workload: the mount namespaces of a pid, a container, or a pod, and the mount
/// points CRIU is told are external when it is dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    target: Target,
    /// For a pid: its mount namespace, resolved when the question was asked.
    pid_ns: Option<u64>,
    /// CRIU's `--external mnt[PATH]` mount points (none: a bare `criu dump`).
    external: ExternalMounts,
}

impl Workload {
    /// Validates `target`; a pid is resolved to its mount namespace through `root` now, so a
    /// process that exits later is still answered for by its namespace.
    ///
    /// # Errors
    ///
    /// Those of [`Workload::of_pid`], [`Workload::of_container`] and [`Workload::of_pod`].
    pub fn resolve(target: Target, root: &ProcRoot) -> Result<Self, SelectError> {
        match target {
            Target::Pid(pid) => Self::of_pid(root, pid),
            Target::ContainerId(id) => Self::of_container(&id),
            Target::PodUid(uid) => Self::of_pod(&uid),
        }
    }

    /// The mount namespace of host pid `pid`.
    ///
    /// # Errors
    ///
    /// Those of [`mount_namespace_of`].
    pub fn of_pid(root: &ProcRoot, pid: i32) -> Result<Self, SelectError> {
        Ok(Self {
            target: Target::Pid(pid),
            pid_ns: Some(mount_namespace_of(root, pid)?),
            external: ExternalMounts::default(),
        })
    }

    /// The container whose id starts with `prefix`.
    ///
    /// # Errors
    ///
    /// [`SelectError::EmptyTarget`] or [`SelectError::InvalidContainerId`].
    pub fn of_container(prefix: &str) -> Result<Self, SelectError> {
        let id = container_id_prefix(prefix)?.ok_or(SelectError::EmptyTarget {
            field: "container_id",
        })?;
        Ok(Self {
            target: Target::ContainerId(id),
            pid_ns: None,
            external: ExternalMounts::default(),
        })
    }

    /// Every container of the pod with UID `uid`.
    ///
    /// # Errors
    ///
    /// [`SelectError::EmptyTarget`] or [`SelectError::InvalidPodUid`].
    pub fn of_pod(uid: &str) -> Result<Self, SelectError> {
        let uid = pod_uid(uid)?.ok_or(SelectError::EmptyTarget { field: "pod_uid" })?;
        Ok(Self {
            target: Target::PodUid(uid),
            pid_ns: None,
            external: ExternalMounts::default(),
        })
    }

    /// The workload as CRIU dumps it when told that `paths` (as seen in the workload's own
    /// mount namespace) are external mounts (`--external mnt[PATH]:KEY`, as runc and crun pass
    /// every bind mount of a container): the autofs mounts CRIU then skips do not block
    /// ([`Check::external`]). Replaces any paths given before.
    ///
    /// # Errors
    ///
    /// [`SelectError::InvalidExternalMount`] ([`ExternalMounts::new`]).
    pub fn with_external_mounts<P: AsRef<[u8]>>(
        mut self,
        paths: impl IntoIterator<Item = P>,
    ) -> Result<Self, SelectError> {
        self.external = ExternalMounts::new(paths)?;
        Ok(self)
    }

    /// The external mount points given ([`Workload::with_external_mounts`]).
    pub fn external_mounts(&self) -> &ExternalMounts {
        &self.external
    }

    /// What was asked for (validated; a pod UID lowercased).
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// For a pid target, its mount namespace: a scan that does not know it predates the
    /// process (look again) or postdates its exit.
    pub fn pid_namespace(&self) -> Option<u64> {
        self.pid_ns
    }

    /// Fails when processes the scan could not place in a mount namespace belong to this
    /// container or pod (for a pid: to the container of its mount namespace, whose nested
    /// namespaces its workload includes), or could not be attributed at all.
    fn all_seen(&self, scan: &Scan, own: Option<&NamespaceInfo>) -> Result<(), SelectError> {
        let (workload, container) = match &self.target {
            Target::Pid(pid) => (
                format!("pid {pid}"),
                own.map(|n| n.container_id.as_str())
                    .filter(|id| !id.is_empty()),
            ),
            Target::ContainerId(prefix) => (format!("container {prefix}"), None),
            Target::PodUid(uid) => (format!("pod {uid}"), None),
        };
        let belongs = |a: &crate::attribution::Attribution| match &self.target {
            Target::Pid(_) => container.is_some_and(|id| a.container_id == id),
            _ => self.owns(0, &a.container_id, &a.pod_uid),
        };
        let hidden: Vec<&crate::scan::UnknownProcess> = scan
            .unknown_processes
            .iter()
            .filter(|p| p.attribution.as_ref().is_none_or(belongs))
            .collect();
        let Some(first) = hidden.first() else {
            return Ok(());
        };
        let belong = if hidden.iter().all(|p| p.attribution.is_some()) {
            "belong to it"
        } else {
            "may belong to it"
        };
        Err(SelectError::WorkloadUnreadable {
            workload,
            count: hidden.len(),
            belong,
            example: first.why.clone(),
            denied: hidden.iter().all(|p| p.denied),
        })
    }

    /// Whether a mount namespace with this attribution belongs to the workload.
    fn owns(&self, mnt_ns: u64, container_id: &str, pod_uid: &str) -> bool {
        match &self.target {
            Target::Pid(_) => self.pid_ns == Some(mnt_ns),
            Target::ContainerId(prefix) => container_matches(prefix, container_id),
            Target::PodUid(uid) => pod_uid == uid,
        }
    }

    /// The workload's mounts in `scan`, and those that block a dump (CRIU dumps a mount
    /// namespace whole: one blocking mount blocks the workload).
    ///
    /// # Errors
    ///
    /// [`SelectError::NamespaceVanished`], [`SelectError::ContainerNotFound`] or
    /// [`SelectError::PodNotFound`] when no mount namespace of `scan` belongs to the workload
    /// ([`SelectError::Unseen`] instead when the scan's view was restricted);
    /// [`SelectError::AmbiguousContainer`] when a container id prefix matches several
    /// containers; [`SelectError::WorkloadUnreadable`] when a container or pod may have
    /// processes whose mount namespace the scan could not read
    /// ([`Scan::unknown_processes`]).
    pub fn check(&self, scan: &Scan) -> Result<Check, SelectError> {
        // A pid's own mount namespace in this scan.
        let own = self
            .pid_ns
            .and_then(|pid_ns| scan.namespaces.iter().find(|n| n.mnt_ns == pid_ns));
        self.all_seen(scan, own)?;
        // A pid's workload also has the mount namespaces made inside its container, whose
        // owner (the init CRIU dumps them with) is a process of the pid's own namespace.
        let members: &[i32] = own.map_or(&[], |n| n.pids.as_slice());
        let owned: Vec<&NamespaceInfo> = scan
            .namespaces
            .iter()
            .filter(|n| {
                self.owns(n.mnt_ns, &n.container_id, &n.pod_uid)
                    || (n.owner_pid > 0 && members.binary_search(&n.owner_pid).is_ok())
            })
            .collect();
        if owned.is_empty() {
            return Err(match &self.target {
                Target::Pid(pid) => SelectError::NamespaceVanished { pid: *pid },
                Target::ContainerId(id) => SelectError::ContainerNotFound { id: id.clone() },
                Target::PodUid(uid) => SelectError::PodNotFound { uid: uid.clone() },
            }
            .unless_hidden(&scan.view));
        }
        if let Target::ContainerId(prefix) = &self.target {
            let mut ids: Vec<&str> = owned.iter().map(|n| n.container_id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            if ids.len() > 1 {
                return Err(SelectError::AmbiguousContainer {
                    prefix: prefix.clone(),
                    matches: ids.len(),
                });
            }
        }
        let namespaces: Vec<u64> = owned.iter().map(|n| n.mnt_ns).collect();
        let external =
            crate::external::external_binds(&scan.reports, &self.dumps(&owned), &self.external);
        let mut check = Check {
            namespaces: namespaces.clone(),
            ..Check::default()
        };
        // Mounts of one superblock (binds of it) share its pipe, and so do mounts made with one
        // write end: each queue is counted once.
        let mut counted_pipes: Vec<u64> = Vec::new();
        for (i, report) in scan.reports.iter().enumerate() {
            if !namespaces.contains(&report.mnt_ns) {
                continue;
            }
            check.mounts_checked += 1;
            check.mounts.push(i);
            // CRIU's dump_one_fs() skips an external bind; only what fails before that (its
            // parse stage, the freeze, the namespaces) still blocks.
            if external.contains(&i) && !report.blocks_when_external {
                check.external.push(i);
            } else if report.blocks_dump() || external.contains(&i) {
                check.blocking.push(i);
                if report.state == MountState::Interim {
                    if !counted_pipes.contains(&report.pipe_ino) {
                        counted_pipes.push(report.pipe_ino);
                        check.queued_packets += report.pending_packets;
                    }
                } else {
                    check.stuck.push(i);
                }
            }
        }
        Ok(check)
    }

    /// The dumps CRIU makes of the workload's mount namespaces `owned`: a pid's is one, rooted
    /// at its namespace; a container's or pod's one per tree, rooted at the namespace of its
    /// owner (the container init), which owns the namespaces made inside it too.
    fn dumps(&self, owned: &[&NamespaceInfo]) -> Vec<Dump> {
        if let Some(pid_ns) = self.pid_ns {
            return vec![Dump {
                root_ns: Some(pid_ns),
                namespaces: owned.iter().map(|n| n.mnt_ns).collect(),
            }];
        }
        let mut dumps: Vec<(i32, Dump)> = Vec::new();
        for n in owned {
            // An unknown owner (0) leaves the namespace a dump of its own, with no known root.
            let known = n.owner_pid > 0;
            let slot = match dumps.iter().position(|(o, _)| known && *o == n.owner_pid) {
                Some(slot) => slot,
                None => {
                    let dump = Dump {
                        root_ns: None,
                        namespaces: Vec::new(),
                    };
                    dumps.push((n.owner_pid, dump));
                    dumps.len() - 1
                }
            };
            let dump = &mut dumps[slot].1;
            dump.namespaces.push(n.mnt_ns);
            if known && n.pids.binary_search(&n.owner_pid).is_ok() {
                dump.root_ns = Some(n.mnt_ns);
            }
        }
        dumps.into_iter().map(|(_, dump)| dump).collect()
    }
}

/// What one scan says about a workload. Indices point into the scan's `reports`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Check {
    /// The workload's autofs mounts.
    pub mounts_checked: u32,
    /// Those mounts, in report order (every mount of the mount namespaces CRIU dumps with the
    /// workload, external ones included).
    pub mounts: Vec<usize>,
    /// Those that block a dump now, in report order.
    pub blocking: Vec<usize>,
    /// The blocking mounts that cannot clear by themselves (every state but INTERIM).
    pub stuck: Vec<usize>,
    /// Kernel requests queued in the pipes of the INTERIM blocking mounts (packets), each pipe
    /// counted once: the mounts of one superblock share its pipe and its queue.
    pub queued_packets: u64,
    /// The mounts CRIU skips as external binds of the workload's external mount points
    /// ([`Workload::with_external_mounts`]), in report order: they do not block. One that
    /// [`MountReport::blocks_when_external`] is among `blocking` instead.
    pub external: Vec<usize>,
    /// The mount namespaces CRIU dumps with the workload.
    pub namespaces: Vec<u64>,
    /// The tasks of the dumped trees that stop the dump by themselves, once looked at
    /// ([`Check::look_at_tasks`]); empty until then.
    pub tasks: Vec<TaskBlocker>,
}

/// Whether waiting can make a workload dumpable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing blocks: CRIU can dump it now.
    Dumpable,
    /// Only what clears by itself blocks: INTERIM mounts (once their daemon reads its queue)
    /// and requesters waiting for an answer (once their daemon answers).
    Waiting,
    /// A blocking mount cannot clear by itself (ORPHANED, ERROR, UNSUPPORTED…).
    WillNotClear,
}

impl Check {
    /// Reads the tasks of the workload's dumped trees from `root` now
    /// ([`crate::tasks::blocking_tasks`]): what stops the dump that no mount shows. Costs,
    /// for the workload's trees alone, a `children` read and a `stat` per thread, each
    /// namespace's mount table and a walk of each process's fd table.
    pub fn look_at_tasks(&mut self, root: &ProcRoot, scan: &Scan) {
        let trees = crate::tasks::dump_roots(root, scan, &self.namespaces);
        self.tasks = crate::tasks::blocking_tasks(root, &trees);
    }

    /// Whether CRIU could dump the workload now.
    pub fn dumpable(&self) -> bool {
        self.blocking.is_empty() && self.tasks.is_empty()
    }

    /// Whether waiting can help.
    pub fn outcome(&self) -> Outcome {
        if self.dumpable() {
            Outcome::Dumpable
        } else if self.stuck.is_empty() && self.tasks.iter().all(TaskBlocker::clears_by_itself) {
            Outcome::Waiting
        } else {
            Outcome::WillNotClear
        }
    }

    /// Whether only what clears by itself blocks (INTERIM mounts, requesters waiting for an
    /// answer): a retry soon may succeed.
    pub fn only_interim(&self) -> bool {
        self.outcome() == Outcome::Waiting
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::attribution::Attribution;
    use crate::pipes::QueueProbe;
    use crate::scan::{Scanner, UnknownProcess};

    #[test]
    fn not_found_through_a_restricted_view_is_unseen_not_absent() {
        let view = crate::View {
            restricted: true,
            reasons: vec!["pid 1 is not listed in the proc root: processes are hidden".into()],
            ..Default::default()
        };
        let e = SelectError::ContainerNotFound { id: "4f3a".into() }.unless_hidden(&view);
        assert_eq!(e.kind(), SelectErrorKind::PermissionDenied);
        assert_eq!(
            e.to_string(),
            "container 4f3a: no process of it runs on this node, as far as the agent can see; but the agent's view of /proc is restricted: pid 1 is not listed in the proc root: processes are hidden: it may be there, unseen"
        );
        let e = SelectError::NamespaceVanished { pid: 7 }.unless_hidden(&view);
        assert_eq!(e.kind(), SelectErrorKind::PermissionDenied);
        // Unchanged in a full view, and for what is not a "not found".
        let e = SelectError::PodNotFound { uid: "u".into() }.unless_hidden(&crate::View::default());
        assert_eq!(e.kind(), SelectErrorKind::NotFound);
        let e = SelectError::InvalidPid { pid: 0 }.unless_hidden(&view);
        assert_eq!(e.kind(), SelectErrorKind::InvalidArgument);
    }

    /// Queued bytes per pipe inode, as the fixture's `queues.json` says.
    struct Queues(&'static [(u64, u64)]);

    impl QueueProbe for Queues {
        fn queued_bytes(&self, _fd_path: &Path, ino: u64) -> io::Result<u64> {
            Ok(self
                .0
                .iter()
                .find(|(i, _)| *i == ino)
                .map_or(0, |(_, bytes)| *bytes))
        }
    }

    fn fixture(case: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/proc")
            .join(case)
    }

    fn scan(case: &str, queues: &'static [(u64, u64)]) -> (Scan, ProcRoot) {
        let scan = Scanner::new(fixture(case), "node")
            .unwrap()
            .with_probe(Queues(queues))
            .scan()
            .unwrap();
        (scan, ProcRoot::open(fixture(case)).unwrap())
    }

    const POD: &str = "7c0a1e2f-3b4d-4c5e-8f9a-0b1c2d3e4f5a";

    #[test]
    fn a_pid_resolves_to_its_mount_namespace_through_the_proc_root() {
        let root = ProcRoot::open(fixture("two_mount_namespaces")).unwrap();
        assert_eq!(mount_namespace_of(&root, 700).unwrap(), 4026532700);
        assert_eq!(mount_namespace_of(&root, 1234).unwrap(), 4026531841);
        let gone = mount_namespace_of(&root, 999).unwrap_err();
        assert!(matches!(gone, SelectError::NoSuchProcess { pid: 999, .. }));
        assert_eq!(gone.kind(), SelectErrorKind::NotFound);
        assert_eq!(gone.to_string(), "pid 999: no such process");
        assert!(
            std::error::Error::source(&gone).is_some(),
            "the cause is kept"
        );
        for bad in [0, -1] {
            let err = mount_namespace_of(&root, bad).unwrap_err();
            assert!(matches!(err, SelectError::InvalidPid { .. }), "{err}");
            assert_eq!(err.kind(), SelectErrorKind::InvalidArgument);
        }
    }

    #[test]
    fn a_namespace_link_of_another_kind_is_unreadable_not_absent() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("42/ns")).unwrap();
        std::os::unix::fs::symlink("pid:[4026531836]", dir.path().join("42/ns/mnt")).unwrap();
        let root = ProcRoot::open(dir.path()).unwrap();
        let err = mount_namespace_of(&root, 42).unwrap_err();
        assert_eq!(err.kind(), SelectErrorKind::Unreadable, "{err}");
        assert!(err.to_string().contains("42/ns/mnt"), "{err}");
    }

    #[test]
    fn container_ids_must_be_lowercase_hex_prefixes() {
        assert_eq!(container_id_prefix("").unwrap(), None);
        assert_eq!(
            container_id_prefix("4f1c").unwrap().as_deref(),
            Some("4f1c")
        );
        for bad in ["../../etc", "4F1C", &"a".repeat(65), "xyz"] {
            let err = container_id_prefix(bad).unwrap_err();
            assert!(matches!(err, SelectError::InvalidContainerId { .. }));
            assert!(err.to_string().starts_with("container_id:"), "{err}");
        }
    }

    #[test]
    fn pod_uids_must_be_uuids_and_are_lowercased() {
        assert_eq!(
            pod_uid("7C0A1E2F-3B4D-4C5E-8F9A-0B1C2D3E4F5A")
                .unwrap()
                .as_deref(),
            Some(POD)
        );
        for bad in ["7c0a1e2f", "7c0a1e2f_3b4d_4c5e_8f9a_0b1c2d3e4f5a", "../x"] {
            let err = pod_uid(bad).unwrap_err();
            assert_eq!(err.kind(), SelectErrorKind::InvalidArgument, "{err}");
        }
        let long = "x".repeat(500);
        let err = pod_uid(&long).unwrap_err();
        assert!(err.to_string().len() < 200, "the echo is truncated: {err}");
    }

    #[test]
    fn a_selector_matches_namespace_container_pod_and_states() {
        let (scan, root) = scan("shared_pod_pid_namespace", &[]);
        let all = Selector::default();
        assert_eq!(scan.reports.iter().filter(|r| all.matches(r)).count(), 2);

        let by_pod = Selector::new(None, "", POD, Vec::new()).unwrap();
        assert_eq!(scan.reports.iter().filter(|r| by_pod.matches(r)).count(), 2);
        let by_prefix = Selector::new(None, "aaaa", "", Vec::new()).unwrap();
        let ids: Vec<u32> = scan
            .reports
            .iter()
            .filter(|r| by_prefix.matches(r))
            .map(|r| r.mount_id)
            .collect();
        assert_eq!(ids, [801]);
        let orphaned = Selector::new(None, "", "", vec![MountState::Orphaned]).unwrap();
        assert!(
            scan.reports
                .iter()
                .filter(|r| orphaned.matches(r))
                .all(|r| r.state == MountState::Orphaned)
        );
        assert!(
            !orphaned.admits(4026532820, "", "", None),
            "an unnamed state"
        );

        let by_pid = Selector::default().with_pid(&root, 6000).unwrap();
        assert_eq!(by_pid.mnt_ns, Some(4026532810));
        let ids: Vec<u32> = scan
            .reports
            .iter()
            .filter(|r| by_pid.matches(r))
            .map(|r| r.mount_id)
            .collect();
        assert_eq!(ids, [700]);
    }

    #[test]
    fn a_pid_outside_the_requested_namespace_is_refused() {
        let root = ProcRoot::open(fixture("shared_pod_pid_namespace")).unwrap();
        let err = Selector::new(Some(4026532820), "", "", Vec::new())
            .unwrap()
            .with_pid(&root, 6000)
            .unwrap_err();
        assert!(
            matches!(
                err,
                SelectError::PidOutsideNamespace {
                    pid: 6000,
                    mnt_ns: 4026532810
                }
            ),
            "{err}"
        );
        let same = Selector::new(Some(4026532810), "", "", Vec::new())
            .unwrap()
            .with_pid(&root, 6000)
            .unwrap();
        assert_eq!(same.mnt_ns, Some(4026532810));
    }

    #[test]
    fn a_pod_is_blocked_by_any_of_its_containers() {
        let (scan, _) = scan("shared_pod_pid_namespace", &[]);
        let check = Workload::of_pod(POD).unwrap().check(&scan).unwrap();
        assert_eq!(check.mounts_checked, 2);
        let blocking: Vec<u32> = check
            .blocking
            .iter()
            .map(|&i| scan.reports[i].mount_id)
            .collect();
        assert_eq!(blocking, [801], "the ORPHANED mount of container aaaa…");
        assert_eq!(check.stuck, check.blocking);
        assert_eq!(check.outcome(), Outcome::WillNotClear);
        assert!(!check.dumpable());

        let bbbb = Workload::of_container("bbbb")
            .unwrap()
            .check(&scan)
            .unwrap();
        assert_eq!(
            (bbbb.mounts_checked, bbbb.outcome()),
            (1, Outcome::Dumpable)
        );
    }

    fn mount_ids(scan: &Scan, indices: &[usize]) -> Vec<u32> {
        indices.iter().map(|&i| scan.reports[i].mount_id).collect()
    }

    #[test]
    fn an_external_bind_is_skipped_and_a_path_naming_no_mount_changes_nothing() {
        let (scan, _) = scan("shared_pod_pid_namespace", &[]);
        let aaaa = Workload::of_container("aaaa").unwrap();
        let bare = aaaa.check(&scan).unwrap();
        assert_eq!(mount_ids(&scan, &bare.blocking), [801]);
        assert!(bare.external.is_empty());

        let external = aaaa.clone().with_external_mounts(["/data"]).unwrap();
        let check = external.check(&scan).unwrap();
        assert_eq!(check.outcome(), Outcome::Dumpable);
        assert_eq!(mount_ids(&scan, &check.external), [801]);
        assert_eq!(check.mounts_checked, 1);
        // The same for the pod: its other container's mount is ACTIVE.
        let pod = Workload::of_pod(POD)
            .unwrap()
            .with_external_mounts(["/data"])
            .unwrap()
            .check(&scan)
            .unwrap();
        assert_eq!((pod.outcome(), pod.mounts_checked), (Outcome::Dumpable, 2));
        assert_eq!(mount_ids(&scan, &pod.external), [801]);

        // Paths that name no mount of the workload, or not exactly: nothing changes.
        for paths in [&["/nothing"][..], &["/data/sub"], &["/srv/data"], &["/"]] {
            let check = aaaa
                .clone()
                .with_external_mounts(paths)
                .unwrap()
                .check(&scan)
                .unwrap();
            assert_eq!(check, bare, "{paths:?}");
        }
    }

    #[test]
    fn an_external_mount_still_blocks_when_criu_s_mountinfo_parse_fails_on_it() {
        let (scan, root) = scan("malformed_options", &[]);
        let pid = Workload::of_pid(&root, 1234).unwrap();
        // pipe_ino=xyz fails CRIU's autofs_parse(), which runs before any mount is skipped;
        // fd=abc fails only its autofs_dump(), which an external mount never reaches.
        let check = pid
            .clone()
            .with_external_mounts(["/mnt/bad8", "/mnt/bad6"])
            .unwrap()
            .check(&scan)
            .unwrap();
        assert_eq!(mount_ids(&scan, &check.external), [46]);
        assert!(mount_ids(&scan, &check.blocking).contains(&48));
        assert!(!mount_ids(&scan, &check.blocking).contains(&46));
        assert!(check.stuck.iter().any(|&i| scan.reports[i].mount_id == 48));

        let (scan, root) = scan_overflow();
        let check = Workload::of_pid(&root, 1234)
            .unwrap()
            .with_external_mounts(["/home"])
            .unwrap()
            .check(&scan)
            .unwrap();
        assert_eq!(
            mount_ids(&scan, &check.blocking),
            [40],
            "pipe_ino > UINT32_MAX"
        );
        assert!(check.external.is_empty());
        assert_eq!(check.outcome(), Outcome::WillNotClear);
    }

    fn scan_overflow() -> (Scan, ProcRoot) {
        scan("pipe_ino_above_uint32_max", &[])
    }

    #[test]
    fn invalid_external_mounts_are_invalid_arguments() {
        let err = Workload::of_pod(POD)
            .unwrap()
            .with_external_mounts(["relative"])
            .unwrap_err();
        assert_eq!(err.kind(), SelectErrorKind::InvalidArgument);
        assert!(err.to_string().starts_with("external_mounts[0]: "), "{err}");
    }

    #[test]
    fn a_container_without_mounts_is_checked_and_dumpable() {
        let (scan, _) = scan("shared_pod_pid_namespace", &[]);
        let check = Workload::of_container("cccc")
            .unwrap()
            .check(&scan)
            .unwrap();
        let ns = scan
            .namespaces
            .iter()
            .find(|n| n.container_id.starts_with("cccc"))
            .unwrap()
            .mnt_ns;
        assert_eq!(
            check,
            Check {
                namespaces: vec![ns],
                ..Check::default()
            }
        );
        assert_eq!(check.outcome(), Outcome::Dumpable);
    }

    #[test]
    fn tasks_block_and_only_requesters_waiting_for_an_answer_clear_by_themselves() {
        use crate::tasks::TaskReason;
        let task = |reason| TaskBlocker {
            pid: 5,
            tid: 5,
            comm: "d".into(),
            reason,
            fd: -1,
            pipe_ino: 0,
            message: String::new(),
        };
        let mut check = Check {
            tasks: vec![task(TaskReason::RequesterWaiting)],
            ..Check::default()
        };
        assert!(!check.dumpable());
        assert_eq!(check.outcome(), Outcome::Waiting);
        check.tasks.push(task(TaskReason::Unreadable));
        assert_eq!(check.outcome(), Outcome::WillNotClear);
        check.tasks = vec![task(TaskReason::PacketModePipe)];
        assert_eq!(check.outcome(), Outcome::WillNotClear);
    }

    #[test]
    fn processes_of_a_workload_whose_namespace_is_unknown_leave_it_unanswered() {
        let (mut scan, root) = scan("shared_pod_pid_namespace", &[]);
        let bbbb = Workload::of_container("bbbb").unwrap();
        let bbbb_id = scan
            .namespaces
            .iter()
            .find(|n| n.container_id.starts_with("bbbb"))
            .map(|n| n.container_id.clone())
            .unwrap();
        let unknown = |pid: i32, denied: bool, attribution: Option<Attribution>| UnknownProcess {
            pid,
            why: format!("cannot read /proc/{pid}/ns/mnt: refused"),
            denied,
            attribution,
        };
        // A process of another workload does not matter.
        scan.unknown_processes = vec![unknown(
            9001,
            true,
            Some(Attribution {
                container_id: "dddd".repeat(16),
                pod_uid: String::new(),
            }),
        )];
        assert_eq!(bbbb.check(&scan).unwrap().outcome(), Outcome::Dumpable);
        // One of the container (and so of its pod): neither dumpable nor not found.
        scan.unknown_processes.push(unknown(
            9002,
            true,
            Some(Attribution {
                container_id: bbbb_id,
                pod_uid: POD.into(),
            }),
        ));
        for workload in [bbbb.clone(), Workload::of_pod(POD).unwrap()] {
            let e = workload.check(&scan).unwrap_err();
            assert_eq!(e.kind(), SelectErrorKind::PermissionDenied, "{e}");
            assert!(
                e.to_string().contains("of 1 process(es) that belong to it"),
                "{e}"
            );
            assert!(e.to_string().contains("/proc/9002/ns/mnt"), "{e}");
        }
        // One that could not be attributed either, and failed otherwise than by a refusal.
        scan.unknown_processes.push(unknown(9003, false, None));
        let e = bbbb.check(&scan).unwrap_err();
        assert_eq!(e.kind(), SelectErrorKind::Unreadable, "{e}");
        assert!(
            e.to_string()
                .contains("of 2 process(es) that may belong to it"),
            "{e}"
        );
        // A pid's workload is its container's namespaces: the same processes leave it
        // unanswered, those of another container do not.
        let bbbb_pid = scan
            .namespaces
            .iter()
            .find(|n| n.container_id.starts_with("bbbb"))
            .unwrap()
            .pids[0];
        let pid = Workload::of_pid(&root, bbbb_pid).unwrap();
        let e = pid.check(&scan).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "pid {bbbb_pid}: the mount namespaces of 2 process(es) that may belong to it"
            )),
            "{e}"
        );
        scan.unknown_processes.retain(|p| p.pid == 9001);
        assert!(pid.check(&scan).is_ok());
    }

    #[test]
    fn interim_mounts_say_waiting_helps_with_their_queued_requests() {
        let (scan, root) = scan("interim_v5", &[(41001, 608)]);
        let check = Workload::resolve(Target::Pid(1234), &root)
            .unwrap()
            .check(&scan)
            .unwrap();
        assert_eq!(check.blocking.len(), 1);
        assert!(check.stuck.is_empty());
        assert_eq!(check.queued_packets, 2, "608 bytes of v5 packets");
        assert_eq!(check.outcome(), Outcome::Waiting);
        assert!(check.only_interim());
    }

    #[test]
    fn a_queue_shared_by_binds_of_one_superblock_is_counted_once() {
        let (mut scan, root) = scan("interim_v5", &[(41001, 608)]);
        let interim = scan
            .reports
            .iter()
            .position(|r| r.state == MountState::Interim)
            .unwrap();
        // A bind of the same superblock: another mount, the same pipe and queue.
        let mut bind = scan.reports[interim].clone();
        bind.mount_id += 1000;
        bind.mount_point.push_str("-bind");
        bind.mount_point_bytes.extend_from_slice(b"-bind");
        scan.reports.push(bind);
        let check = Workload::resolve(Target::Pid(1234), &root)
            .unwrap()
            .check(&scan)
            .unwrap();
        assert_eq!(check.blocking.len(), 2, "both mounts block");
        assert_eq!(check.queued_packets, 2, "one pipe holding 608 bytes");
        // Mounts made with another pipe add their own queue.
        let mut other = scan.reports[interim].clone();
        other.mount_id += 2000;
        other.pipe_ino += 1;
        scan.reports.push(other);
        let check = Workload::resolve(Target::Pid(1234), &root)
            .unwrap()
            .check(&scan)
            .unwrap();
        assert_eq!(check.queued_packets, 4, "two pipes");
    }

    #[test]
    fn nothing_of_the_workload_on_the_node_is_not_found() {
        let (mut scan, root) = scan("two_mount_namespaces", &[]);
        let pid = Workload::of_pid(&root, 700).unwrap();
        assert_eq!(pid.pid_namespace(), Some(4026532700));
        assert_eq!(pid.check(&scan).unwrap().mounts_checked, 2);
        scan.namespaces.retain(|n| n.mnt_ns != 4026532700);
        let gone = pid.check(&scan).unwrap_err();
        assert_eq!(gone.to_string(), "pid 700: its mount namespace vanished");
        assert_eq!(gone.kind(), SelectErrorKind::NotFound);

        let err = Workload::of_container("4f1c")
            .unwrap()
            .check(&scan)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "container 4f1c: no process of it runs on this node"
        );
        let err = Workload::of_pod(POD).unwrap().check(&scan).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("pod {POD}: no container of it runs on this node")
        );
    }

    #[test]
    fn an_ambiguous_container_prefix_is_refused_with_the_count() {
        let namespace = |mnt_ns, id: &str| NamespaceInfo {
            mnt_ns,
            owner_pid: 1,
            container_id: id.to_owned(),
            pod_uid: String::new(),
            pids: vec![1],
            autofs_mounts: 0,
            mount_table_error: None,
            table_reader: 1,
        };
        let scan = Scan {
            reports: Vec::new(),
            namespaces: vec![
                namespace(1, &format!("ab{}", "0".repeat(62))),
                namespace(2, &format!("ab{}", "1".repeat(62))),
                namespace(3, &format!("ab{}", "1".repeat(62))),
            ],
            view: Default::default(),
            stats: Default::default(),
            tree_paths: Vec::new(),
            gone_leaders: Vec::new(),
            unknown_processes: Vec::new(),
        };
        let err = Workload::of_container("ab")
            .unwrap()
            .check(&scan)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "container_id: prefix ab matches 2 containers; give more digits"
        );
        assert_eq!(err.kind(), SelectErrorKind::InvalidArgument);
        assert!(Workload::of_container("ab1").unwrap().check(&scan).is_ok());
    }

    #[test]
    fn empty_workload_targets_are_refused() {
        for (target, field) in [
            (Target::ContainerId(String::new()), "container_id"),
            (Target::PodUid(String::new()), "pod_uid"),
        ] {
            let root = ProcRoot::open(fixture("two_mount_namespaces")).unwrap();
            let err = Workload::resolve(target, &root).unwrap_err();
            assert_eq!(err.to_string(), format!("{field}: empty"));
        }
    }
}
