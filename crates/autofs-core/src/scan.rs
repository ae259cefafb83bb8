//! One scan of a node: processes grouped by mount namespace, one `mountinfo` read per
//! namespace, one pipe census, one verdict per autofs mount. Nothing here opens or stats a
//! mount point, and nothing reads from a pipe.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use serde::Serialize;

use crate::attribution::Attribution;
use crate::error::Result;
use crate::mountinfo::{MountInfo, looks_like_autofs};
use crate::options::{AutofsOptions, PipeIno};
use crate::pidns::namespace_owner;
use crate::pipes::{Fionread, PipeIndex, QueueProbe};
use crate::proc_root::{ProcRoot, ReadFailure, parse_ns_link};
use crate::process::ProcessTable;
use crate::report::{MountReport, MountState, Reason};
use crate::verdict::{Facts, judge};

/// Scans one proc root.
#[derive(Debug)]
pub struct Scanner<Q = Fionread> {
    root: ProcRoot,
    node: String,
    probe: Q,
}

/// The result of one scan.
#[derive(Debug, Clone, Serialize)]
pub struct Scan {
    /// One report per autofs mount per mount namespace, by namespace then mount id.
    pub reports: Vec<MountReport>,
    /// Every mount namespace seen, with the container that owns it (so a workload without
    /// autofs mounts is known to exist and to have nothing blocking).
    pub namespaces: Vec<NamespaceInfo>,
    /// What the scan looked at.
    pub stats: ScanStats,
}

/// One mount namespace and who owns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceInfo {
    /// Mount namespace inode.
    pub mnt_ns: u64,
    /// Host pid of the owner: the container init for namespaces with autofs mounts, the
    /// lowest pid otherwise.
    pub owner_pid: i32,
    /// Container owning the namespace, if any.
    pub container_id: String,
    /// Pod owning the namespace, if any.
    pub pod_uid: String,
    /// Host pids of the processes in the namespace.
    pub pids: Vec<i32>,
    /// Number of autofs mounts in the namespace.
    pub autofs_mounts: usize,
}

/// Counters of one scan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScanStats {
    /// Processes listed in the proc root.
    pub processes: usize,
    /// Processes that exited during the scan.
    pub vanished: usize,
    /// Processes some fact of which could not be read (permissions).
    pub unreadable: usize,
    /// Mount namespaces seen.
    pub mount_namespaces: usize,
    /// fds listed by the pipe census.
    pub fds: usize,
    /// Mountinfo lines that were not autofs and could not be parsed (ignored).
    pub ignored_lines: usize,
}

/// The processes of one mount namespace and its autofs lines.
struct Namespace {
    pids: Vec<i32>,
    lines: Vec<Result<MountInfo, (String, String)>>,
}

impl Scanner<Fionread> {
    /// A scanner of `proc_root` (normally `/proc`, or `/host/proc` in a container) reporting
    /// as `node`. Fails when the proc root cannot be opened.
    pub fn new(proc_root: impl Into<PathBuf>, node: impl Into<String>) -> Result<Self> {
        Ok(Self {
            root: ProcRoot::open(proc_root)?,
            node: node.into(),
            probe: Fionread,
        })
    }
}

impl<Q: QueueProbe> Scanner<Q> {
    /// Replaces the queue probe (fixture trees have no real pipes behind their fd links).
    pub fn with_probe<P: QueueProbe>(self, probe: P) -> Scanner<P> {
        Scanner {
            root: self.root,
            node: self.node,
            probe,
        }
    }

    /// The proc root being scanned.
    pub fn proc_root(&self) -> &ProcRoot {
        &self.root
    }

    /// Runs one scan. Only an unreadable proc root is an error; everything per-process or
    /// per-mount ends up in the reports or the stats.
    pub fn scan(&self) -> Result<Scan> {
        let pids = self.root.pids()?;
        let mut stats = ScanStats {
            processes: pids.len(),
            ..ScanStats::default()
        };
        let mut namespaces = self.group_by_mount_namespace(&pids, &mut stats);
        stats.mount_namespaces = namespaces.len();
        for ns in namespaces.values_mut() {
            ns.lines = self.autofs_lines(&ns.pids, &mut stats);
        }
        // Namespaces without autofs mounts only need attribution: one cgroup read each.
        let mut all_namespaces: Vec<NamespaceInfo> = namespaces
            .iter()
            .filter(|(_, ns)| ns.lines.is_empty())
            .map(|(&mnt_ns, ns)| {
                let owner_pid = ns.pids[0];
                let attribution = self.attribution(owner_pid);
                NamespaceInfo {
                    mnt_ns,
                    owner_pid,
                    container_id: attribution.container_id,
                    pod_uid: attribution.pod_uid,
                    pids: ns.pids.clone(),
                    autofs_mounts: 0,
                }
            })
            .collect();
        namespaces.retain(|_, ns| !ns.lines.is_empty());

        let parsed: Vec<_> = namespaces
            .iter()
            .flat_map(|(&mnt_ns, ns)| ns.lines.iter().map(move |line| (mnt_ns, line)))
            .map(|(mnt_ns, line)| {
                let options = line
                    .as_ref()
                    .ok()
                    .map(|m| AutofsOptions::parse(&m.super_options));
                (mnt_ns, line, options)
            })
            .collect();
        let wanted: HashSet<u64> = parsed
            .iter()
            .filter_map(|(_, _, o)| match o {
                Some(Ok(AutofsOptions {
                    pipe_ino: Some(PipeIno::Ino(ino)),
                    ..
                })) => Some(*ino),
                _ => None,
            })
            .collect();
        let pipes = PipeIndex::build(&self.root, &pids, &wanted);
        stats.fds = pipes.fds_seen();
        stats.unreadable += pipes.unreadable().len();

        let mut table = ProcessTable::new(&self.root);
        let mut owners = BTreeMap::new();
        for (&mnt_ns, ns) in &namespaces {
            let owner = namespace_owner(&mut table, &ns.pids);
            let attribution = owner.map(|pid| self.attribution(pid)).unwrap_or_default();
            all_namespaces.push(NamespaceInfo {
                mnt_ns,
                owner_pid: owner.unwrap_or(0),
                container_id: attribution.container_id.clone(),
                pod_uid: attribution.pod_uid.clone(),
                pids: ns.pids.clone(),
                autofs_mounts: ns.lines.len(),
            });
            owners.insert(mnt_ns, (owner, attribution));
        }

        let mut reports = Vec::with_capacity(parsed.len());
        for (mnt_ns, line, options) in parsed {
            let (owner, attribution) = &owners[&mnt_ns];
            let mut report = self.base_report(mnt_ns, line, *owner, attribution);
            match (line, options) {
                (Err((_, why)), _) => {
                    set_error(&mut report, Reason::MalformedMountinfo, why.clone());
                }
                (Ok(_), Some(Err(e))) => {
                    let reason = if e.is_missing() {
                        Reason::MissingOption
                    } else {
                        Reason::InvalidOption
                    };
                    set_error(&mut report, reason, e.to_string());
                }
                (Ok(_), Some(Ok(options))) => {
                    let mut facts = Facts {
                        table: &mut table,
                        pipes: &pipes,
                        probe: &self.probe,
                        owner: *owner,
                    };
                    judge(&mut report, &options, &mut facts);
                }
                (Ok(_), None) => unreachable!("options are parsed for every parsed line"),
            }
            reports.push(report);
        }
        all_namespaces.sort_unstable_by_key(|n| n.mnt_ns);
        Ok(Scan {
            reports,
            namespaces: all_namespaces,
            stats,
        })
    }

    fn attribution(&self, pid: i32) -> Attribution {
        self.root
            .read_to_string(pid, "cgroup")
            .map(|text| Attribution::from_cgroup(&text))
            .unwrap_or_default()
    }

    fn group_by_mount_namespace(
        &self,
        pids: &[i32],
        stats: &mut ScanStats,
    ) -> BTreeMap<u64, Namespace> {
        let mut namespaces: BTreeMap<u64, Namespace> = BTreeMap::new();
        for &pid in pids {
            match self.root.read_link(pid, "ns/mnt") {
                Ok(target) => {
                    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str());
                    if let Some(ino) = parse_ns_link(bytes, "mnt") {
                        namespaces
                            .entry(ino)
                            .or_insert_with(|| Namespace {
                                pids: Vec::new(),
                                lines: Vec::new(),
                            })
                            .pids
                            .push(pid);
                    }
                }
                Err(e) => match ReadFailure::of(&e) {
                    ReadFailure::Vanished => stats.vanished += 1,
                    _ => stats.unreadable += 1,
                },
            }
        }
        namespaces
    }

    /// Reads the namespace's mountinfo through the first member still alive and keeps the
    /// autofs lines: parsed, or the raw line with why it could not be parsed.
    fn autofs_lines(
        &self,
        pids: &[i32],
        stats: &mut ScanStats,
    ) -> Vec<Result<MountInfo, (String, String)>> {
        for &pid in pids {
            let text = match self.root.read_to_string(pid, "mountinfo") {
                Ok(text) => text,
                Err(e) => {
                    match ReadFailure::of(&e) {
                        ReadFailure::Vanished => stats.vanished += 1,
                        _ => stats.unreadable += 1,
                    }
                    continue;
                }
            };
            let mut lines = Vec::new();
            for line in text.lines() {
                match MountInfo::parse(line) {
                    Ok(m) if m.fstype == "autofs" => lines.push(Ok(m)),
                    Ok(_) => {}
                    Err(e) if looks_like_autofs(line) => {
                        lines.push(Err((line.to_owned(), e.to_string())))
                    }
                    Err(_) => stats.ignored_lines += 1,
                }
            }
            return lines;
        }
        Vec::new()
    }

    fn base_report(
        &self,
        mnt_ns: u64,
        line: &Result<MountInfo, (String, String)>,
        owner: Option<i32>,
        attribution: &Attribution,
    ) -> MountReport {
        let mut report = MountReport {
            node: self.node.clone(),
            mount_id: 0,
            parent_id: 0,
            mount_point: String::new(),
            source: String::new(),
            major: 0,
            minor: 0,
            criu_s_dev: 0,
            mnt_ns,
            state: MountState::Error,
            reason: Reason::MalformedMountinfo,
            message: String::new(),
            entry: None,
            pipe_ino: 0,
            host_pgrp: 0,
            pending_bytes: 0,
            pending_packets: 0,
            read_end_pid: 0,
            read_end_fd: -1,
            write_end_held: false,
            strictexpire: false,
            ignore: false,
            container_id: attribution.container_id.clone(),
            pod_uid: attribution.pod_uid.clone(),
            owner_pid: owner.unwrap_or(0),
            criu_notes: Vec::new(),
            options: String::new(),
            proto_version: 0,
            timeout: 0,
            dumpable: false,
        };
        match line {
            Ok(m) => {
                report.mount_id = m.mount_id;
                report.parent_id = m.parent_id;
                report.mount_point = m.mount_point.clone();
                report.source = m.source.clone();
                report.major = m.major;
                report.minor = m.minor;
                report.criu_s_dev = m.criu_s_dev();
                report.options = m.super_options.clone();
            }
            Err((raw, _)) => {
                // Keep what can be salvaged so the operator can find the mount.
                let mut fields = raw.split(' ');
                report.mount_id = fields.next().and_then(|t| t.parse().ok()).unwrap_or(0);
                report.options = raw.clone();
            }
        }
        report
    }
}

fn set_error(report: &mut MountReport, reason: Reason, message: String) {
    report.state = MountState::Error;
    report.reason = reason;
    report.message = message;
    report.dumpable = false;
}
