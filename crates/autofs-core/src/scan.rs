//! One scan of a node: processes grouped by mount namespace, one complete `mountinfo` read
//! per namespace, one pipe census, the view judged, one verdict per autofs mount. Nothing here
//! opens or stats a mount point, and nothing reads from a pipe.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use nix::sys::stat::SFlag;
use serde::Serialize;

use crate::attribution::Attribution;
use crate::dumped_from;
use crate::error::Result;
use crate::escape::escape;
use crate::holders::{Candidates, HolderMemo};
use crate::mountinfo::{MountInfo, MountLine, looks_like_autofs};
use crate::options::{AutofsOptions, MountMode, PipeIno};
use crate::pipes::{Fionread, PipeIndex, QueueProbe};
use crate::proc_root::{ProcRoot, ReadFailure};
use crate::process::ProcessTable;
use crate::report::{MountReport, MountState, Reason};
use crate::tree::{ForestMemo, namespace_owner};
use crate::verdict::{DevAutofs, Facts, ProbeReach, judge};
use crate::view::{SelfFacts, View};

/// Scans one proc root. Keeps, across scans, where the read ends of orphan candidates were
/// found ([`HolderMemo`]) and the process forests of namespaces with autofs mounts
/// ([`ForestMemo`], on procfs), so that repeated scans stay cheap on busy nodes; a kept
/// scanner answers as a fresh one would, except that a pipe end received over a unix socket
/// after a census found nobody holding the pipe is found up to 30 s later on CRIU's probe
/// path, and not at all elsewhere, where the verdict is not dumpable either way and only the
/// holder it names differs ([`HolderMemo`]).
#[derive(Debug)]
pub struct Scanner<Q = Fionread> {
    root: ProcRoot,
    node: String,
    probe: Q,
    holders: Mutex<HolderMemo>,
    forests: Mutex<ForestMemo>,
}

/// The result of one scan.
#[derive(Debug, Clone, Serialize)]
pub struct Scan {
    /// One report per autofs mount per mount namespace, by namespace then mount id; plus one
    /// ERROR report (`mount_id` 0, reason `MOUNT_TABLE_UNREADABLE`) per namespace whose mount
    /// table could not be read completely.
    pub reports: Vec<MountReport>,
    /// Every mount namespace seen, with the container that owns it (so a workload without
    /// autofs mounts is known to exist and to have nothing blocking).
    pub namespaces: Vec<NamespaceInfo>,
    /// What the scan could see. When restricted, namespaces may be missing altogether and
    /// verdicts that would rest on an absence are ERROR.
    pub view: View,
    /// What the scan looked at.
    pub stats: ScanStats,
    /// Host pids between each live mount's leader and the owner of its namespace (the owner
    /// included, the leader not), and above each leader outside its namespace's tree, ascending:
    /// one of them exiting re-parents the leader out of the tree CRIU dumps, or into it
    /// ([`crate::changes::tree_paths`]).
    pub tree_paths: Vec<i32>,
    /// Host pids named by the `pgrp=` of live mounts that did not exist at the scan, ascending:
    /// a process that takes one of them (pids are reused) is the leader CRIU would find
    /// ([`crate::changes::gone_leaders`]).
    pub gone_leaders: Vec<i32>,
    /// Processes whose mount namespace could not be read (counted in
    /// [`View::unknown_namespaces`]), with the workload each belongs to: a workload with such
    /// a process may have mount namespaces the scan does not show.
    pub unknown_processes: Vec<UnknownProcess>,
}

/// The `mountinfo` files a scan read, left open ([`Scanner::scan_keeping_tables`]).
#[derive(Debug, Default)]
pub struct OpenTables {
    /// One per namespace kept.
    pub tables: Vec<KeptTable>,
    /// Namespaces whose table is not among them: past the budget, or not read completely.
    pub not_kept: usize,
}

/// One namespace's mount table as a scan read it, still open.
#[derive(Debug)]
pub struct KeptTable {
    /// Mount namespace inode.
    pub mnt_ns: u64,
    /// Host pid of the process it was read through.
    pub reader: i32,
    /// The open `mountinfo`. It holds the namespace: while it is open, the kernel keeps the
    /// namespace and its mounts even after its last process exits (a holder should close it
    /// when the reader exits; see [`Self::reader`]).
    pub table: OwnedFd,
}

/// The tables a scan keeps open, at most `budget`: past it, one of a namespace with autofs
/// mounts replaces one of a namespace without (a change where autofs mounts are is the one a
/// verdict most likely rests on), else it is closed.
struct TableKeeper {
    budget: usize,
    kept: Vec<(KeptTable, bool)>,
    not_kept: usize,
}

impl TableKeeper {
    fn new(budget: usize) -> Self {
        Self {
            budget,
            kept: Vec::new(),
            not_kept: 0,
        }
    }

    /// Offers the table of `mnt_ns` read through `reader` (`None`: not kept open).
    fn offer(&mut self, mnt_ns: u64, reader: i32, table: Option<OwnedFd>, has_autofs: bool) {
        let Some(table) = table else {
            self.not_kept += 1;
            return;
        };
        let kept = KeptTable {
            mnt_ns,
            reader,
            table,
        };
        if self.kept.len() < self.budget {
            self.kept.push((kept, has_autofs));
            return;
        }
        self.not_kept += 1;
        if has_autofs && let Some(slot) = self.kept.iter_mut().find(|k| !k.1) {
            *slot = (kept, true);
        }
    }

    fn finish(self) -> OpenTables {
        OpenTables {
            tables: self.kept.into_iter().map(|(kept, _)| kept).collect(),
            not_kept: self.not_kept,
        }
    }
}

/// A process whose `ns/mnt` could not be read, and whose container and pod it belongs to,
/// from its `cgroup` (which any reader may read: `proc_cgroup_show` checks no ptrace access).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnknownProcess {
    /// Host pid.
    pub pid: i32,
    /// What failed, e.g. `cannot read /proc/42/ns/mnt: Permission denied (os error 13)`.
    pub why: String,
    /// Whether the read was refused (`EACCES`, `EPERM`) rather than failing otherwise.
    pub denied: bool,
    /// Its container and pod; `None` when its `cgroup` could not be read either (it may belong
    /// to any workload).
    pub attribution: Option<Attribution>,
}

/// One mount namespace and who owns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceInfo {
    /// Mount namespace inode.
    pub mnt_ns: u64,
    /// Host pid of the owner: the root of the process tree CRIU dumps (the container init);
    /// 0 when it could not be read. Read only for a namespace with autofs mounts (or whose
    /// mount table could not be read: [`NamespaceInfo::owner_read`]); for the others it is
    /// the lowest member, which only attributes the namespace (its `cgroup` gives the
    /// container and pod): [`crate::tasks::dump_roots`] reads their owners when a workload's
    /// tasks are looked at.
    pub owner_pid: i32,
    /// Container owning the namespace, if any.
    pub container_id: String,
    /// Pod owning the namespace, if any.
    pub pod_uid: String,
    /// Host pids of the processes in the namespace.
    pub pids: Vec<i32>,
    /// Number of autofs mounts in the namespace.
    pub autofs_mounts: usize,
    /// Why the namespace's mount table could not be read completely, if it could not.
    pub mount_table_error: Option<String>,
    /// Host pid whose `mountinfo` gave the complete table (its root is the namespace root);
    /// 0 when none did.
    pub table_reader: i32,
}

impl NamespaceInfo {
    /// Whether [`NamespaceInfo::owner_pid`] is the owner read from the namespace's process
    /// forest (a namespace with autofs mounts, or whose mount table could not be read, whose
    /// mounts are judged), not its lowest member.
    pub fn owner_read(&self) -> bool {
        self.autofs_mounts > 0 || self.mount_table_error.is_some()
    }
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
    /// fd links read: the leaders' (their whole tables) and, when a census ran, every
    /// process's.
    pub fds: usize,
    /// Pipes that needed a whole-node census this scan (0 in the steady state).
    pub census_pipes: usize,
    /// Mountinfo lines that were not autofs and could not be parsed (ignored).
    pub ignored_lines: usize,
}

/// An autofs line: parsed, or its raw bytes with why it could not be parsed.
type AutofsLine = std::result::Result<MountInfo, (Vec<u8>, String)>;

/// The processes of one mount namespace and what its mount table says.
#[derive(Default)]
struct Namespace {
    pids: Vec<i32>,
    table: Option<Table>,
    table_error: Option<String>,
}

/// A mount on `/`, `/dev` or `/dev/autofs`.
struct DevPathMount {
    mount_id: u32,
    device: (u32, u32),
    /// Length of its mount point: the deepest holds `/dev/autofs`.
    depth: usize,
    /// Mounted `nodev`: no device node on it can be opened (EACCES).
    nodev: bool,
}

/// The parts of one complete mount table the verdicts need.
struct Table {
    /// Pid whose `mountinfo` (and root) gave the complete view.
    reader: i32,
    autofs: Vec<AutofsLine>,
    /// Mount ids whose root another mount sits on.
    covered: HashSet<u32>,
    /// Autofs mount ids that a mount on the path to them hides from a lookup by path: that
    /// mount's id and (escaped) mount point.
    shadowed: HashMap<u32, (u32, String)>,
    /// An autofs mount at `/`, `/dev` or `/dev/autofs`: looking up `/dev/autofs` would walk
    /// onto it.
    autofs_on_dev_path: bool,
    /// The mounts on `/`, `/dev` and `/dev/autofs`, in table order: which one `/dev/autofs`
    /// lies on, and whether it allows devices.
    dev_path: Vec<DevPathMount>,
    /// The whole table as read, when it has direct or offset mounts: what CRIU re-reads after
    /// its probe ([`crate::revisit`]); empty otherwise.
    text: Vec<u8>,
}

impl Scanner<Fionread> {
    /// A scanner of `proc_root` (normally `/proc`, or `/host/proc` in a container) reporting
    /// as `node`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::ProcRoot`] when the proc root cannot be opened.
    pub fn new(proc_root: impl Into<PathBuf>, node: impl Into<String>) -> Result<Self> {
        Ok(Self {
            root: ProcRoot::open(proc_root)?,
            node: node.into(),
            probe: Fionread,
            holders: Mutex::default(),
            forests: Mutex::default(),
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
            holders: self.holders,
            forests: self.forests,
        }
    }

    /// The proc root being scanned.
    pub fn proc_root(&self) -> &ProcRoot {
        &self.root
    }

    /// Runs one scan. Only an unreadable proc root is an error; everything per-process or
    /// per-mount ends up in the reports, the view or the stats.
    ///
    /// # Errors
    ///
    /// [`crate::Error::ProcRoot`] when the proc root cannot be listed.
    pub fn scan(&self) -> Result<Scan> {
        self.scan_keeping_tables(0).map(|(scan, _)| scan)
    }

    /// Runs one scan, as [`Self::scan`], and keeps open the `mountinfo` it read of up to
    /// `budget` mount namespaces whose table it could read, those with autofs mounts first
    /// (then by inode). Polled, each reports every change of its table since before the scan
    /// read it, so a watch that adopts them (the agent's mount-table watcher) misses no change
    /// the scan did not see, where a table opened after the scan would miss those made in
    /// between.
    ///
    /// # Errors
    ///
    /// As [`Self::scan`].
    pub fn scan_keeping_tables(&self, budget: usize) -> Result<(Scan, OpenTables)> {
        let listing = self.root.pid_entries()?;
        let pids: Vec<i32> = listing.iter().map(|&(pid, _)| pid).collect();
        let mut stats = ScanStats {
            processes: pids.len(),
            ..ScanStats::default()
        };
        let mut unknown_processes = Vec::new();
        let mut namespaces =
            self.group_by_mount_namespace(&pids, &mut stats, &mut unknown_processes);
        let mut denied: Vec<String> = unknown_processes.iter().map(|p| p.why.clone()).collect();
        stats.mount_namespaces = namespaces.len();
        let mut keeper = TableKeeper::new(budget);
        for (&mnt_ns, ns) in &mut namespaces {
            match self.mount_table(&ns.pids, &mut stats, budget > 0) {
                Ok((table, open)) => {
                    keeper.offer(mnt_ns, table.reader, open, !table.autofs.is_empty());
                    ns.table = Some(table);
                }
                Err(why) => {
                    keeper.not_kept += 1;
                    ns.table_error = Some(why);
                }
            }
        }
        let open_tables = keeper.finish();
        let needs_verdicts = |ns: &Namespace| {
            ns.table_error.is_some() || ns.table.as_ref().is_some_and(|t| !t.autofs.is_empty())
        };

        // Namespaces without autofs mounts only need attribution: one cgroup read each.
        let mut table = ProcessTable::with_listing(&self.root, &pids);
        let mut all_namespaces: Vec<NamespaceInfo> = namespaces
            .iter()
            .filter(|(_, ns)| !needs_verdicts(ns))
            .map(|(&mnt_ns, ns)| {
                let owner_pid = ns.pids[0];
                let attribution = table.attribution(owner_pid).clone();
                NamespaceInfo {
                    mnt_ns,
                    owner_pid,
                    container_id: attribution.container_id,
                    pod_uid: attribution.pod_uid,
                    pids: ns.pids.clone(),
                    autofs_mounts: 0,
                    mount_table_error: None,
                    table_reader: ns.table.as_ref().map_or(0, |t| t.reader),
                }
            })
            .collect();
        namespaces.retain(|_, ns| needs_verdicts(ns));

        let parsed: Vec<_> = namespaces
            .iter()
            .flat_map(|(&mnt_ns, ns)| {
                ns.table
                    .iter()
                    .flat_map(|t| t.autofs.iter())
                    .map(move |line| (mnt_ns, line))
            })
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
        // CRIU's lookup first: each distinct leader's fds, once, with its leftover ends in
        // packet mode. Then only the pipes whose leader holds no read end are looked for
        // elsewhere (see `holders`).
        let mut leaders: BTreeMap<i32, Vec<(u64, i32)>> = BTreeMap::new();
        for (_, _, o) in &parsed {
            if let Some(Ok(o)) = o
                && o.fd != -1
                && o.pgrp > 0
            {
                let own = leaders.entry(o.pgrp).or_default();
                if let Some(PipeIno::Ino(ino)) = o.pipe_ino {
                    own.push((ino, o.fd));
                }
            }
        }
        let mut pipes = PipeIndex::default();
        pipes.scan_leaders(&self.root, &leaders, &wanted);
        // Orphan candidates: pipes whose leader holds no read end. Of those, the probe path:
        // direct and offset mounts whose leader lives, where "nobody reads" makes the verdict
        // dumpable. Only their "nobody" answers are checked again later, and only for them
        // are threads' own fd tables searched.
        let mut candidates: HashSet<u64> = HashSet::new();
        let mut probe_path: HashSet<u64> = HashSet::new();
        for (_, _, o) in &parsed {
            let Some(Ok(AutofsOptions {
                fd,
                pgrp,
                mode,
                pipe_ino: Some(PipeIno::Ino(ino)),
                ..
            })) = o
            else {
                continue;
            };
            let leader_reads = || {
                pipes
                    .ends(*ino)
                    .iter()
                    .any(|e| e.pid == *pgrp && e.is_read_end())
            };
            if *fd == -1 || *pgrp <= 0 || leader_reads() {
                continue;
            }
            candidates.insert(*ino);
            // The leader lives as the verdict tells it (`/proc` lists thread-group leaders
            // only: a `pgrp=` naming a thread is found by its `stat`).
            if *mode != MountMode::Indirect
                && (pids.binary_search(pgrp).is_ok() || table.check_exists(*pgrp).is_ok())
            {
                probe_path.insert(*ino);
            }
        }
        if !candidates.is_empty() {
            // Every leader's ends of those pipes, as a complete listing gives them: the
            // listings that stopped early go on from their stop, for these pipes alone.
            let leaders: Vec<i32> = leaders.keys().copied().collect();
            pipes.scan(&self.root, &leaders, &candidates);
        }
        {
            let mut holders = self.holders.lock().unwrap_or_else(PoisonError::into_inner);
            holders.retain(&wanted);
            stats.census_pipes = holders.locate(
                &self.root,
                &self.probe,
                &pids,
                &mut pipes,
                Candidates {
                    pipes: &candidates,
                    probe_path: &probe_path,
                },
                std::time::Instant::now(),
            );
        }
        stats.fds = pipes.fds_seen();
        stats.unreadable += pipes.unreadable().len();

        let unknown_namespaces = denied.len();
        denied.extend(pipes.unreadable().iter().map(|u| u.message.clone()));
        let mut view = View::judge(
            &SelfFacts::read(&self.root),
            pids.contains(&1),
            (&denied, denied.len()),
        );
        view.unknown_namespaces = unknown_namespaces;

        let mut owners = BTreeMap::new();
        let mut reports = Vec::with_capacity(parsed.len());
        let mut forests = self.forests.lock().unwrap_or_else(PoisonError::into_inner);
        // The inode numbers of the listing tell processes apart only on procfs.
        let mut forest = self.root.is_procfs().then(|| forests.begin(&listing));
        for (&mnt_ns, ns) in &namespaces {
            let owner = match forest.as_mut() {
                Some(forest) => forest.owner(&mut table, &ns.pids),
                None => namespace_owner(&mut table, &ns.pids),
            };
            let attribution = owner
                .map(|pid| table.attribution(pid).clone())
                .unwrap_or_default();
            all_namespaces.push(NamespaceInfo {
                mnt_ns,
                owner_pid: owner.unwrap_or(0),
                container_id: attribution.container_id.clone(),
                pod_uid: attribution.pod_uid.clone(),
                pids: ns.pids.clone(),
                autofs_mounts: ns.table.as_ref().map_or(0, |t| t.autofs.len()),
                mount_table_error: ns.table_error.clone(),
                table_reader: ns.table.as_ref().map_or(0, |t| t.reader),
            });
            if let Some(why) = &ns.table_error {
                let mut report = self.base_report(mnt_ns, None, owner, &attribution);
                report.message =
                    format!("cannot list the autofs mounts of mount namespace {mnt_ns}: {why}");
                report.reason = Reason::MountTableUnreadable;
                reports.push(report);
            }
            owners.insert(mnt_ns, (owner, attribution));
        }
        // Forgets the processes no namespace with autofs mounts has any more.
        drop(forest);
        drop(forests);

        let rooted = rooted_superblocks(parsed.iter().map(|(ns, line, _)| (*ns, *line)), &owners);
        let exempt = exempt_pipes(
            parsed.iter().filter_map(|(ns, _, o)| match o {
                Some(Ok(AutofsOptions {
                    pipe_ino: Some(PipeIno::Ino(ino)),
                    ..
                })) => Some((*ns, *ino)),
                _ => None,
            }),
            &owners,
        );
        let mut leftovers: HashMap<(i32, i32, bool), LeftoverCheck> = HashMap::new();
        let mut dev_autofs: HashMap<u64, std::result::Result<DevAutofs, String>> = HashMap::new();
        // CRIU probes a superblock through one of its mounts (dumped_from), in any namespace
        // of the same dump.
        let probed: HashSet<u64> = parsed
            .iter()
            .filter_map(|(ns, _, o)| match o {
                Some(Ok(AutofsOptions {
                    pipe_ino: Some(PipeIno::Ino(ino)),
                    ..
                })) if probe_path.contains(ino) => Some(*ns),
                _ => None,
            })
            .collect();
        let probe_paths = probe_paths(&mut table, &namespaces, &owners, &probed);
        for (mnt_ns, line, options) in parsed {
            let (owner, attribution) = &owners[&mnt_ns];
            let mut report = self.base_report(mnt_ns, Some(line), *owner, attribution);
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
                (Ok(m), Some(Ok(options))) => {
                    let (probed_ns, probed) = probe_paths
                        .from
                        .get(&(mnt_ns, m.mount_id))
                        .copied()
                        .unwrap_or((mnt_ns, m.mount_id));
                    let Some(probed_table) = namespaces[&probed_ns].table.as_ref() else {
                        unreachable!("probed mounts come from a namespace's table")
                    };
                    // CRIU names the mount it probes by its mount point ("failed to access
                    // autofs <point>").
                    let probed_point = if probed == m.mount_id {
                        report.mount_point.clone()
                    } else {
                        probed_table
                            .autofs
                            .iter()
                            .filter_map(|l| l.as_ref().ok())
                            .find(|l| l.mount_id == probed)
                            .map_or_else(|| report.mount_point.clone(), |l| escape(&l.mount_point))
                    };
                    let reach = ProbeReach {
                        mount_id: probed,
                        mnt_ns: probed_ns,
                        prober: probe_paths.prober.get(&probed_ns).copied(),
                        mount_point: probed_point,
                        covered: probed_table.covered.contains(&probed),
                        shadowed_by: probed_table.shadowed.get(&probed).cloned(),
                        dev_autofs: if options.mode == MountMode::Indirect {
                            // Never consulted: indirect roots are never probed.
                            Ok(DevAutofs::Unusable("not looked up".into()))
                        } else {
                            // CRIU enters the probed mount's namespace to open it.
                            dev_autofs
                                .entry(probed_ns)
                                .or_insert_with(|| self.dev_autofs(probed_table))
                                .clone()
                        },
                    };
                    let mut facts = Facts {
                        table: &mut table,
                        pipes: &pipes,
                        probe: &self.probe,
                        owner: *owner,
                        view: &view,
                        reach: &reach,
                        mount_table: &probed_table.text,
                    };
                    judge(&mut report, &options, &mut facts);
                }
                (Ok(_), None) => unreachable!("options are parsed for every parsed line"),
            }
            if let Ok(m) = line {
                note_parse_stage(&mut report, m);
            }
            if let Ok(m) = line
                && !rooted.contains(&dump_group(mnt_ns, *owner, m))
            {
                note_rootless_superblock(&mut report, m, owner.is_some());
            }
            // A raw pgrp names a process of the proc root only in the agent's pid namespace.
            // Any mount's leader (its whole fd table was listed), and for a catatonic one,
            // whose leader may be gone, its whole group.
            if report.host_pgrp > 0
                && !view.foreign_pid_namespace
                && let Some(owner) = *owner
            {
                let catatonic = report.reason == Reason::Catatonic;
                let check = leftovers
                    .entry((report.host_pgrp, owner, catatonic))
                    .or_insert_with(|| {
                        // The processes of every namespace with autofs mounts dumped with
                        // this one.
                        let mut dumped: Vec<i32> = Vec::new();
                        if catatonic {
                            dumped = owners
                                .iter()
                                .filter(|(_, (o, _))| *o == Some(owner))
                                .flat_map(|(ns, _)| namespaces[ns].pids.iter().copied())
                                .collect();
                            dumped.sort_unstable();
                            dumped.dedup();
                        }
                        self.leftover_packet_ends(
                            &mut table,
                            &pipes,
                            report.host_pgrp,
                            owner,
                            catatonic.then_some(dumped.as_slice()),
                            &exempt,
                        )
                    });
                note_leftover_packet_ends(&mut report, check);
            }
            reports.push(report);
        }
        // Stable: within a namespace, mountinfo order (its placeholder, if any, first).
        reports.sort_by_key(|r| r.mnt_ns);
        all_namespaces.sort_unstable_by_key(|n| n.mnt_ns);
        let tree_paths = crate::changes::tree_paths(&mut table, &reports)
            .into_iter()
            .collect();
        let gone_leaders = crate::changes::gone_leaders(&mut table, &reports)
            .into_iter()
            .collect();
        let scan = Scan {
            reports,
            namespaces: all_namespaces,
            view,
            stats,
            tree_paths,
            gone_leaders,
            unknown_processes,
        };
        Ok((scan, open_tables))
    }

    fn group_by_mount_namespace(
        &self,
        pids: &[i32],
        stats: &mut ScanStats,
        unknown: &mut Vec<UnknownProcess>,
    ) -> BTreeMap<u64, Namespace> {
        let mut namespaces: BTreeMap<u64, Namespace> = BTreeMap::new();
        for &pid in pids {
            match self.root.mount_namespace(pid) {
                Ok(ino) => namespaces.entry(ino).or_default().pids.push(pid),
                // A link that names no mount namespace (a malformed tree): no member.
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {}
                Err(e) => match ReadFailure::of(&e) {
                    ReadFailure::Vanished => stats.vanished += 1,
                    failure => {
                        // A task reaped between the lookup and the read makes the kernel refuse
                        // the link (EACCES from `proc_ns_get_link`): gone, not hidden, when its
                        // `cgroup` is gone too.
                        let attribution = Attribution::read(&self.root, pid);
                        if attribution
                            .as_ref()
                            .is_err_and(|e| ReadFailure::of(e) == ReadFailure::Vanished)
                        {
                            stats.vanished += 1;
                            continue;
                        }
                        stats.unreadable += 1;
                        unknown.push(UnknownProcess {
                            pid,
                            why: format!(
                                "cannot read {}: {e}",
                                self.root.pid_path(pid, "ns/mnt").display()
                            ),
                            denied: failure == ReadFailure::Denied,
                            attribution: attribution.ok(),
                        });
                    }
                },
            }
        }
        namespaces
    }

    /// Reads one complete view of the namespace's mount table: through a member whose root is
    /// the namespace root (`mountinfo` only shows what the reader's root can reach, so a
    /// chrooted member hides every mount outside its root), never accepting an empty table.
    ///
    /// With `keep`, the file the table was read from comes back open.
    ///
    /// Returns why no member gave a complete view (each member tried, and what was wrong).
    fn mount_table(
        &self,
        pids: &[i32],
        stats: &mut ScanStats,
        keep: bool,
    ) -> std::result::Result<(Table, Option<OwnedFd>), String> {
        let mut tried = Vec::new();
        let mut rootless = Vec::new();
        for &pid in pids {
            match self.root.read_link(pid, "root") {
                Ok(root) if root.as_encoded_bytes() == b"/" => {}
                Ok(root) => {
                    note_attempt(
                        &mut tried,
                        pid,
                        format!(
                            "its root is {} (chrooted: a partial view)",
                            escape(root.as_encoded_bytes())
                        ),
                    );
                    continue;
                }
                // A tree shaped like /proc without `root` links, or with a directory in their
                // place (a live process always has the link): whether the view is complete
                // cannot be checked; tried last.
                Err(e)
                    if ReadFailure::of(&e) == ReadFailure::Vanished
                        || e.raw_os_error() == Some(nix::libc::EINVAL) =>
                {
                    rootless.push(pid);
                    continue;
                }
                Err(e) => {
                    stats.unreadable += 1;
                    note_attempt(&mut tried, pid, format!("root: {e}"));
                    continue;
                }
            }
            match self.read_mountinfo(pid, stats, keep) {
                Ok((text, open)) => return Ok((parse_table(pid, text, stats), open)),
                Err(why) => note_attempt(&mut tried, pid, why),
            }
        }
        for pid in rootless {
            match self.read_mountinfo(pid, stats, keep) {
                Ok((text, open)) => return Ok((parse_table(pid, text, stats), open)),
                Err(why) => note_attempt(&mut tried, pid, why),
            }
        }
        Err(format!(
            "no member gave a complete mount table ({}{})",
            tried.join("; "),
            if pids.len() > tried.len() {
                format!("; {} member(s) in all", pids.len())
            } else {
                String::new()
            }
        ))
    }

    /// `mountinfo` of `pid`, never empty (every namespace has a root mount); with `keep`, and
    /// the file it was read from, still open.
    fn read_mountinfo(
        &self,
        pid: i32,
        stats: &mut ScanStats,
        keep: bool,
    ) -> std::result::Result<(Vec<u8>, Option<OwnedFd>), String> {
        let read = if keep {
            self.root
                .read_keeping_open(pid, "mountinfo")
                .map(|(text, fd)| (text, Some(fd)))
        } else {
            self.root.read(pid, "mountinfo").map(|text| (text, None))
        };
        match read {
            Ok((text, _)) if text.iter().all(u8::is_ascii_whitespace) => {
                Err("mountinfo: empty".to_owned())
            }
            Ok(read) => Ok(read),
            Err(e) => {
                match ReadFailure::of(&e) {
                    ReadFailure::Vanished => stats.vanished += 1,
                    ReadFailure::Denied => stats.unreadable += 1,
                    ReadFailure::Other => {}
                }
                Err(format!("mountinfo: {e}"))
            }
        }
    }

    /// What the namespace has at `/dev/autofs`, looked up through the table's reader (whose
    /// root is the namespace root, as CRIU's after `setns`) — but only when no autofs mount
    /// sits on the way, so the lookup can never trigger one. On procfs only the autofs misc
    /// device (character device 10:235, `MISC_MAJOR`/`AUTOFS_MINOR`) is usable; a symbolic
    /// link is not followed (its target would resolve against the inspector's root), so what
    /// it leads to is unknown. A fixture tree cannot hold device nodes: any file stands for
    /// the device there.
    fn dev_autofs(&self, table: &Table) -> std::result::Result<DevAutofs, String> {
        if table.autofs_on_dev_path {
            return Err(
                "an autofs mount sits on /, /dev or /dev/autofs, so /dev/autofs is not looked up (that could trigger it)"
                    .into(),
            );
        }
        let found = self
            .root
            .lstat_in_root(table.reader, "dev/autofs")
            .map_err(|e| {
                format!(
                    "cannot look up /dev/autofs through {}: {e}",
                    self.root.pid_path(table.reader, "root").display()
                )
            })?;
        let Some(st) = found else {
            // ENOENT from a reader that has exited is no answer about /dev.
            if self
                .root
                .read_link(table.reader, "root")
                .is_err_and(|e| ReadFailure::of(&e) == ReadFailure::Vanished)
            {
                return Err(format!(
                    "pid {} exited while /dev/autofs was looked up through it",
                    table.reader
                ));
            }
            return Ok(DevAutofs::Unusable(
                "the mount namespace has no /dev/autofs".into(),
            ));
        };
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        let device = (
            nix::sys::stat::major(st.st_rdev),
            nix::sys::stat::minor(st.st_rdev),
        );
        // The mount the node lies on: of those on its path with its file system, the deepest
        // (the last of a stack). A `nodev` one refuses to open any device on it.
        let on = (
            nix::sys::stat::major(st.st_dev),
            nix::sys::stat::minor(st.st_dev),
        );
        let holder = table
            .dev_path
            .iter()
            .filter(|m| (u64::from(m.device.0), u64::from(m.device.1)) == on)
            .max_by_key(|m| m.depth);
        if let Some(m) = holder.filter(|m| m.nodev && kind == SFlag::S_IFCHR) {
            return Ok(DevAutofs::Unusable(format!(
                "/dev/autofs lies on mount {} mounted nodev, where no device can be opened",
                m.mount_id
            )));
        }
        Ok(match kind {
            SFlag::S_IFCHR if device == (10, 235) => DevAutofs::Usable,
            _ if !self.root.is_procfs() && kind != SFlag::S_IFLNK => DevAutofs::Usable,
            SFlag::S_IFLNK => {
                return Err(
                    "/dev/autofs is a symbolic link, which is not followed: whether it leads to the autofs device is unknown"
                        .into(),
                );
            }
            SFlag::S_IFCHR => DevAutofs::Unusable(format!(
                "/dev/autofs is character device {}:{}, not the autofs device 10:235",
                device.0, device.1
            )),
            _ => DevAutofs::Unusable(
                "/dev/autofs is not a device, so CRIU's AUTOFS_DEV_IOCTL_OPENMOUNT on it fails"
                    .into(),
            ),
        })
    }

    /// What CRIU's pipe dump makes of the process group `pgrp`, the raw process group of a
    /// mount of the namespace owned by `owner`: the ends of pipes in packet mode that no
    /// autofs mount of the dump exempts (`exempt`, by owner) held by a member of the group in
    /// the tree CRIU dumps (reference §1.4). A daemon that keeps the write end of a mount that
    /// turned catatonic or was unmounted holds such an end, and so does a child that inherited
    /// it, after the daemon is gone too: the kernel let the pipe go, the `O_DIRECT` it set
    /// stays. A leader whose whole table `pipes` listed ([`PipeIndex::scan_leaders`]) is
    /// answered from that listing.
    ///
    /// The group is `pgrp` itself (CRIU takes the number as a pid) and, for a catatonic mount,
    /// whose leader may be gone, the processes of `members` (sorted pids of the namespaces
    /// with autofs mounts that `owner` owns; `None` for a live mount) whose `stat` says
    /// `pgrp`; a member that left the group (`setsid`, `setpgid`) or lives in a mount
    /// namespace without autofs mounts or of another owner is not looked at. One `stat` read
    /// per member (shared with the rest of the scan). A live mount's leader is answered from
    /// `pipes` alone. An end found decides; otherwise a group whose `stat`, parent chain or
    /// fds could not be read is `Unknown`.
    fn leftover_packet_ends(
        &self,
        table: &mut ProcessTable<'_>,
        pipes: &PipeIndex,
        pgrp: i32,
        owner: i32,
        members: Option<&[i32]>,
        exempt: &HashMap<i32, HashSet<u64>>,
    ) -> LeftoverCheck {
        let mut unknown = None;
        let mut group = vec![pgrp];
        for &pid in members.unwrap_or_default() {
            match table.pgrp(pid) {
                Ok(g) if g == pgrp && pid != pgrp => group.push(pid),
                Ok(_) | Err(crate::process::Unavailable::Vanished) => {}
                Err(crate::process::Unavailable::Failed(why)) => {
                    unknown.get_or_insert(why);
                }
            }
        }
        let none = HashSet::new();
        let exempt = exempt.get(&owner).unwrap_or(&none);
        let mut found = Vec::new();
        for pid in group {
            let listed = pipes.leader_packet_mode_ends(pid);
            // Nothing to place in or out of the tree (a leader without such ends, as a rule;
            // a live mount's leader not listed: its fds could not be read, which its verdict
            // already says, or no mount shows a pipe inode to tell its own from): no parent
            // chain is read.
            if matches!(listed, Some(Ok(ends)) if ends.is_empty())
                || (listed.is_none() && members.is_none())
            {
                continue;
            }
            match table.descends_from(pid, owner) {
                Ok(true) => {}
                Ok(false) | Err(crate::process::Unavailable::Vanished) => continue,
                Err(crate::process::Unavailable::Failed(why)) => {
                    unknown.get_or_insert(why);
                    continue;
                }
            }
            let ends = match listed {
                Some(Ok(ends)) => ends.clone(),
                Some(Err(why)) => {
                    unknown.get_or_insert_with(|| why.clone());
                    continue;
                }
                None => match crate::pipes::packet_mode_ends(&self.root, pid, exempt) {
                    Ok(ends) => ends,
                    Err(e) if ReadFailure::of(&e) == ReadFailure::Vanished => continue,
                    Err(e) => {
                        unknown.get_or_insert(format!(
                            "cannot read the fds of pid {pid}: {}: {e}",
                            self.root.pid_path(pid, "fd").display()
                        ));
                        continue;
                    }
                },
            };
            if !ends.is_empty() {
                let comm = table.info(pid).map(|i| i.comm()).unwrap_or_default();
                found.extend(ends.into_iter().map(|e| (pid, comm.clone(), e)));
            }
        }
        match unknown {
            Some(why) if found.is_empty() => LeftoverCheck::Unknown(why),
            _ => LeftoverCheck::Ends(found),
        }
    }

    fn base_report(
        &self,
        mnt_ns: u64,
        line: Option<&AutofsLine>,
        owner: Option<i32>,
        attribution: &Attribution,
    ) -> MountReport {
        let mut report = MountReport {
            node: self.node.clone(),
            mount_id: 0,
            parent_id: 0,
            mount_point: String::new(),
            mount_point_bytes: Vec::new(),
            source: String::new(),
            source_bytes: Vec::new(),
            root: String::new(),
            root_bytes: Vec::new(),
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
            // Until its line is read, nothing says whether CRIU would skip it.
            blocks_when_external: true,
        };
        match line {
            Some(Ok(m)) => {
                // Skipped as external unless its verdict or CRIU's parse stage says otherwise.
                report.blocks_when_external = false;
                report.mount_id = m.mount_id;
                report.parent_id = m.parent_id;
                report.mount_point = escape(&m.mount_point);
                report.mount_point_bytes = m.mount_point.clone();
                report.source = escape(&m.source);
                report.source_bytes = m.source.clone();
                report.root = escape(&m.root);
                report.root_bytes = m.root.clone();
                report.major = m.major;
                report.minor = m.minor;
                report.criu_s_dev = m.criu_s_dev();
                report.options = escape(&m.super_options);
            }
            Some(Err((raw, _))) => {
                // Keep what can be salvaged so the operator can find the mount.
                let mut fields = raw.split(|&b| b == b' ');
                report.mount_id = fields
                    .next()
                    .and_then(|t| std::str::from_utf8(t).ok()?.parse().ok())
                    .unwrap_or(0);
                if let Some(point) = fields.nth(3) {
                    let point = crate::mountinfo::unescape(point);
                    report.mount_point = escape(&point);
                    report.mount_point_bytes = point;
                }
                report.options = escape(raw);
            }
            None => {}
        }
        report
    }
}

/// Parses a complete mount table: its autofs lines, which mounts are covered or shadowed, and
/// whether an autofs mount lies on the path to `/dev/autofs`.
fn parse_table(reader: i32, text: Vec<u8>, stats: &mut ScanStats) -> Table {
    let mut autofs = Vec::new();
    // Mount points as the kernel escapes them (equal exactly when the paths are; `/` is never
    // escaped, so prefixes by component are too). Only autofs lines are copied.
    let mut probed: Vec<u32> = Vec::new();
    let mut autofs_points: Vec<&[u8]> = Vec::new();
    let mut all: Vec<(u32, (u32, &[u8]))> = Vec::new();
    let mut dev_path = Vec::new();
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let parsed = MountLine::parse(line);
        if let Ok(m) = &parsed
            && matches!(m.mount_point, b"/" | b"/dev" | b"/dev/autofs")
        {
            dev_path.push(DevPathMount {
                mount_id: m.mount_id,
                device: (m.major, m.minor),
                depth: m.mount_point.len(),
                nodev: m.mount_options.split(|&b| b == b',').any(|o| o == b"nodev"),
            });
        }
        match parsed {
            Ok(m) if m.is_autofs() => {
                // Only direct and offset roots are ever looked up by CRIU's probe.
                if m.super_options
                    .split(|&b| b == b',')
                    .any(|t| t == b"direct" || t == b"offset")
                {
                    probed.push(m.mount_id);
                }
                autofs_points.push(m.mount_point);
                all.push((m.mount_id, (m.parent_id, m.mount_point)));
                autofs.push(Ok(m.to_owned()));
            }
            Ok(m) if looks_like_autofs(line) => {
                autofs.push(Err((line.to_vec(), format!(
                    "malformed mountinfo line: it names autofs after a separator, but parses as a {} mount",
                    escape(m.fstype)
                ))));
            }
            Ok(m) => all.push((m.mount_id, (m.parent_id, m.mount_point))),
            Err(e) if looks_like_autofs(line) => autofs.push(Err((line.to_vec(), e.to_string()))),
            Err(_) => stats.ignored_lines += 1,
        }
    }
    let autofs_on_dev_path = autofs_points
        .iter()
        .any(|p| matches!(*p, b"/" | b"/dev" | b"/dev/autofs"));
    // What CRIU's probe would meet: only for tables with direct or offset mounts.
    let mut covered = HashSet::new();
    let mut shadowed = HashMap::new();
    if !probed.is_empty() {
        let mounts: HashMap<u32, (u32, &[u8])> = all.into_iter().collect();
        let reach = PathReach::new(&mounts);
        for &id in &probed {
            match reach.hidden_by(id) {
                Some(by) if mounts.get(&by).is_some_and(|&(parent, _)| parent == id) => {
                    covered.insert(id);
                }
                Some(by) => {
                    let point = mounts.get(&by).map_or(&b""[..], |&(_, point)| point);
                    shadowed.insert(id, (by, String::from_utf8_lossy(point).into_owned()));
                }
                None => {}
            }
        }
    }
    Table {
        reader,
        autofs,
        covered,
        shadowed,
        autofs_on_dev_path,
        dev_path,
        // Kept for CRIU's re-read after its probe, which only direct and offset mounts get.
        text: if probed.is_empty() { Vec::new() } else { text },
    }
}

/// The mounts of one table by `(parent id, mount point)`: which mount a lookup by path meets
/// where. A lookup walks from the namespace root down the path; where a mount sits on a
/// directory of the mount it is in (or on that mount's root), it continues in the mount on
/// top. A mount is reached by its path only if, at every step of its chain of parents, no
/// other mount sits on the way: not on the root of the mount the step starts from, nor on a
/// directory between that root and the next mount of the chain.
struct PathReach<'t> {
    mounts: &'t HashMap<u32, (u32, &'t [u8])>,
    /// `(parent, mount point)` → the mounts there, ascending.
    at: HashMap<(u32, &'t [u8]), Vec<u32>>,
}

impl<'t> PathReach<'t> {
    fn new(mounts: &'t HashMap<u32, (u32, &'t [u8])>) -> Self {
        let mut at: HashMap<(u32, &[u8]), Vec<u32>> = HashMap::with_capacity(mounts.len());
        for (&id, &(parent, point)) in mounts {
            // A namespace's root mount shows itself as its parent: it sits on nothing.
            if parent != id {
                at.entry((parent, point)).or_default().push(id);
            }
        }
        for ids in at.values_mut() {
            ids.sort_unstable();
        }
        Self { mounts, at }
    }

    /// A mount (other than `id`'s chain) that a lookup of `id`'s mount point meets first, if
    /// any: one on `id`'s root (it covers it), or one on the way from an ancestor's root to the
    /// next mount of the chain.
    fn hidden_by(&self, id: u32) -> Option<u32> {
        let &(_, point) = self.mounts.get(&id)?;
        if let Some(by) = self.other_at(id, point, id) {
            return Some(by);
        }
        let mut next = id;
        // A mount table's chain ends at a parent outside it (the root's parent) or at a root
        // that is its own parent; a cycle (a malformed table) is cut by the bound.
        for _ in 0..self.mounts.len() {
            let &(parent, next_point) = self.mounts.get(&next)?;
            if parent == next {
                return None;
            }
            let &(_, parent_point) = self.mounts.get(&parent)?;
            for prefix in path_prefixes(next_point, parent_point) {
                if let Some(by) = self.other_at(parent, prefix, next) {
                    return Some(by);
                }
            }
            next = parent;
        }
        None
    }

    /// The highest-numbered mount on `point` of `parent` other than `except`. Two mounts on
    /// the same place of the same parent (propagation can make them): which is on top is not
    /// in the table, so another one there is taken as hiding `except`.
    fn other_at(&self, parent: u32, point: &[u8], except: u32) -> Option<u32> {
        self.at
            .get(&(parent, point))?
            .iter()
            .rev()
            .copied()
            .find(|&other| other != except)
    }
}

/// `point` and its ancestor directories down to `down_to` (inclusive), by `/` components:
/// `/a/b/c` down to `/a` gives `/a/b/c`, `/a/b`, `/a`. Empty when `down_to` is no ancestor.
fn path_prefixes<'p>(point: &'p [u8], down_to: &'p [u8]) -> impl Iterator<Item = &'p [u8]> {
    let under = point == down_to
        || point.starts_with(down_to)
            && (down_to.ends_with(b"/") || point.get(down_to.len()) == Some(&b'/'));
    let mut rest = under.then_some(point);
    std::iter::from_fn(move || {
        let current = rest?;
        rest = if current.len() <= down_to.len() {
            None
        } else {
            match memchr::memrchr(b'/', current) {
                Some(0) => Some(&current[..1]),
                Some(i) => Some(&current[..i]),
                None => None,
            }
            .filter(|p| p.len() >= down_to.len())
        };
        Some(current)
    })
}

/// The mounts CRIU treats as one superblock when it dumps a namespace (reference §2): the
/// bind-mount ring of `search_bindmounts()` spans every mount namespace of the dump (the
/// namespaces with the same owner: a namespace made inside a container is dumped with it), and
/// `mounts_sb_equal()` wants the same device and source (and file system type: autofs here).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DumpGroup {
    /// The owner's host pid; the namespace itself when its owner could not be read.
    dump: std::result::Result<i32, u64>,
    major: u32,
    minor: u32,
    source: Vec<u8>,
}

/// Where CRIU's probe of each mount goes ([`crate::dumped_from`], [`crate::ns_order`]).
#[derive(Debug, Default)]
struct ProbePaths {
    /// For every autofs mount, the mount CRIU's `dump_one_fs()` dumps (and probes) its
    /// superblock from, among the mounts of every namespace dumped with it.
    from: HashMap<dumped_from::MountKey, dumped_from::MountKey>,
    /// For each namespace with autofs mounts, the task whose pid namespace CRIU's probe
    /// enters (`ns_pid`: the task that discovered the namespace); missing where unknown.
    prober: HashMap<u64, i32>,
}

/// The [`ProbePaths`] of every dump: the namespaces of one owner, or a namespace alone when
/// its owner is unknown. The namespaces' order matters only for a superblock mounted in more
/// than one of them, and a namespace's discoverer only when it is not the owner's own and one
/// of its mounts is on CRIU's probe path (`probed`: a live leader holds no read end): only then
/// are parents and children read ([`crate::ns_order`]), never in the scans of a healthy node. A
/// namespace whose members no longer descend from the owner is judged alone.
fn probe_paths(
    table: &mut ProcessTable<'_>,
    namespaces: &BTreeMap<u64, Namespace>,
    owners: &BTreeMap<u64, (Option<i32>, Attribution)>,
    probed: &HashSet<u64>,
) -> ProbePaths {
    let mut dumps: BTreeMap<std::result::Result<i32, u64>, Vec<dumped_from::NamespaceMounts<'_>>> =
        BTreeMap::new();
    for (&mnt_ns, ns) in namespaces {
        let Some(ns_table) = ns.table.as_ref() else {
            continue;
        };
        let lines: Vec<&MountInfo> = ns_table
            .autofs
            .iter()
            .filter_map(|l| l.as_ref().ok())
            .collect();
        if !lines.is_empty() {
            let dump = owners[&mnt_ns].0.ok_or(mnt_ns);
            dumps.entry(dump).or_default().push((mnt_ns, lines));
        }
    }
    let mut paths = ProbePaths::default();
    for (dump, group) in dumps {
        let Ok(owner) = dump else {
            paths.from.extend(dumped_from::dumped_from(&group));
            continue;
        };
        let owns = |mnt_ns: &u64| namespaces[mnt_ns].pids.binary_search(&owner).is_ok();
        let needs_order = dumped_from::spans_namespaces(&group)
            || group
                .iter()
                .any(|(mnt_ns, _)| !owns(mnt_ns) && probed.contains(mnt_ns));
        if !needs_order {
            paths.prober.extend(
                group
                    .iter()
                    .filter(|(mnt_ns, _)| owns(mnt_ns))
                    .map(|(mnt_ns, _)| (*mnt_ns, owner)),
            );
            paths.from.extend(dumped_from::dumped_from(&group));
            continue;
        }
        let members: Vec<(u64, &[i32])> = group
            .iter()
            .map(|(mnt_ns, _)| (*mnt_ns, namespaces[mnt_ns].pids.as_slice()))
            .collect();
        let order = crate::ns_order::discovery_order(table, owner, &members);
        paths.prober.extend(order.iter().copied());
        let (mut found, lost): (Vec<_>, Vec<_>) = group
            .into_iter()
            .partition(|(mnt_ns, _)| order.iter().any(|(o, _)| o == mnt_ns));
        found.sort_by_key(|(mnt_ns, _)| order.iter().position(|(o, _)| o == mnt_ns));
        paths.from.extend(dumped_from::dumped_from(&found));
        for alone in lost {
            paths.from.extend(dumped_from::dumped_from(&[alone]));
        }
    }
    paths
}

fn dump_group(mnt_ns: u64, owner: Option<i32>, m: &MountInfo) -> DumpGroup {
    DumpGroup {
        dump: owner.ok_or(mnt_ns),
        major: m.major,
        minor: m.minor,
        source: m.source.clone(),
    }
}

/// The superblocks that some mount of the same dump shows from their root (`fsroot_mounted()`:
/// root `/`): only from such a mount does CRIU's `dump_one_fs()` dump one.
fn rooted_superblocks<'a>(
    lines: impl IntoIterator<Item = (u64, &'a AutofsLine)>,
    owners: &BTreeMap<u64, (Option<i32>, Attribution)>,
) -> HashSet<DumpGroup> {
    lines
        .into_iter()
        .filter_map(|(mnt_ns, line)| {
            let m = line.as_ref().ok().filter(|m| m.root == b"/")?;
            Some(dump_group(mnt_ns, owners[&mnt_ns].0, m))
        })
        .collect()
}

/// A mount of a superblock no mount of the same dump shows from its root (a bind of a
/// directory inside an autofs mount whose own mount is gone, reference §2): CRIU's
/// `dump_one_fs()` finds no mount to call `autofs_dump()` on and the dump fails, whatever the
/// mount's state.
///
/// When the namespace's owner is unknown (`owner_known` false), so are the namespaces dumped
/// with it: only its own mounts are looked at, and the note says so.
fn note_rootless_superblock(report: &mut MountReport, m: &MountInfo, owner_known: bool) {
    let place = if owner_known {
        "in the mount namespaces CRIU dumps with this one"
    } else {
        "in this mount namespace (its owner, and so the namespaces CRIU dumps with it, could not be read)"
    };
    report.criu_notes.push(format!(
        "no mount of this autofs superblock ({}:{}, source {}) {place} shows its root (this one shows {}): CRIU's dump_one_fs() dumps a superblock only from a mount of its root, so the dump fails: Unable to dump a file system for {}:{}",
        m.major,
        m.minor,
        escape(&m.source),
        escape(&m.root),
        m.mount_id,
        escape(&m.mount_point),
    ));
    report.dumpable = false;
}

/// Whether CRIU's mountinfo parse (reference §3.1), which runs before any mount is skipped as
/// external, fails on this mount: then it blocks external or not. A failure no note names yet
/// (a catatonic mount returns before its pipe inode is looked at) gets CRIU's message.
fn note_parse_stage(report: &mut MountReport, m: &MountInfo) {
    match crate::options::criu_autofs_parse(&m.super_options) {
        Ok(()) => {}
        Err(criu_says) => {
            report.blocks_when_external = true;
            if report.dumpable {
                report.criu_notes.push(format!(
                    "{criu_says}: CRIU's mountinfo parse fails on this mount, and the whole dump with it"
                ));
                report.dumpable = false;
            }
        }
    }
}

/// The pipe inodes CRIU's mountinfo parse exempts from its refusal of packet mode, by the
/// owner of the namespaces it dumps together: every `pipe_ino=` of their autofs mounts
/// (reference §3.1).
fn exempt_pipes(
    pipes: impl IntoIterator<Item = (u64, u64)>,
    owners: &BTreeMap<u64, (Option<i32>, Attribution)>,
) -> HashMap<i32, HashSet<u64>> {
    let mut exempt: HashMap<i32, HashSet<u64>> = HashMap::new();
    for (mnt_ns, ino) in pipes {
        if let Some(owner) = owners[&mnt_ns].0 {
            exempt.entry(owner).or_default().insert(ino);
        }
    }
    exempt
}

/// The leftover packet-mode pipe ends the members of a mount's process group hold in the dumped
/// tree.
#[derive(Debug, Clone)]
enum LeftoverCheck {
    /// `(pid, comm, end)` of each such end (none: nothing stops CRIU's pipe dump there).
    Ends(Vec<(i32, String, crate::pipes::PacketModeEnd)>),
    /// Why the fds could not be checked.
    Unknown(String),
}

/// Notes (and makes not dumpable) a mount whose process group keeps ends of pipes in packet
/// mode that no autofs mount of the dump shows: CRIU's `dump_one_pipe()` refuses them
/// (reference §1.4). When that could not be checked, a mount otherwise dumpable is ERROR
/// (`PROC_UNREADABLE`); one already not dumpable gets a note.
fn note_leftover_packet_ends(report: &mut MountReport, check: &LeftoverCheck) {
    match check {
        LeftoverCheck::Ends(ends) => {
            for (pid, comm, end) in ends {
                report.criu_notes.push(format!(
                    "pid {pid} ({comm}), which CRIU dumps, holds fd {} of pipe {}, in packet mode (O_DIRECT: the kernel set it on the write end of an autofs mount's pipe, and it stays once the kernel has let the pipe go, when the mount was unmounted or turned catatonic); no autofs mount of the dump shows that pipe, so CRIU's pipe dump refuses it and the dump fails: The packetized mode for pipes is not supported yet",
                    end.fd, end.ino
                ));
                report.dumpable = false;
                // The pipe dump is the task's, not the mount's: --external does not avoid it.
                report.blocks_when_external = true;
            }
        }
        // CATATONIC and dumpable would rest on an absence: what could not be seen decides
        // nothing.
        LeftoverCheck::Unknown(why) if report.dumpable => set_error(
            report,
            Reason::ProcUnreadable,
            format!(
                "{}, but whether its process group {} keeps a pipe end in packet mode in the tree CRIU dumps could not be checked: {why}. If it does, CRIU's pipe dump fails: The packetized mode for pipes is not supported yet",
                report.state,
                report.host_pgrp
            ),
        ),
        LeftoverCheck::Unknown(why) => report.criu_notes.push(format!(
            "whether the process group {} keeps a pipe end in packet mode, which CRIU's pipe dump would refuse, could not be checked: {why}",
            report.host_pgrp
        )),
    }
}

/// Keeps the first few failed attempts for the error message.
fn note_attempt(tried: &mut Vec<String>, pid: i32, why: String) {
    if tried.len() < 4 {
        tried.push(format!("pid {pid}: {why}"));
    }
}

fn set_error(report: &mut MountReport, reason: Reason, message: String) {
    report.state = MountState::Error;
    report.reason = reason;
    report.message = message;
    report.dumpable = false;
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTOFS: &str = "- autofs t rw,fd=5,pgrp=9,timeout=300,minproto=5,maxproto=5";

    fn table(lines: &[String]) -> Table {
        parse_table(1, lines.join("\n").into_bytes(), &mut ScanStats::default())
    }

    fn line(id: u32, parent: u32, point: &str, rest: &str) -> String {
        format!("{id} {parent} 0:{id} / {point} rw {rest}")
    }

    fn tmpfs(id: u32, parent: u32, point: &str) -> String {
        line(id, parent, point, "- tmpfs tmpfs rw")
    }

    fn autofs(id: u32, parent: u32, point: &str, mode: &str) -> String {
        line(id, parent, point, &format!("{AUTOFS},{mode},pipe_ino={id}"))
    }

    #[test]
    fn a_mount_on_the_path_to_a_probed_root_shadows_it_and_one_on_the_root_covers_it() {
        let t = table(&[
            tmpfs(1, 0, "/"),
            tmpfs(2, 1, "/work"),
            autofs(10, 2, "/work/a/b/m", "direct"),
            autofs(11, 2, "/work/a/c", "indirect"),
            tmpfs(12, 2, "/work/a"),
            autofs(20, 2, "/work/x", "offset"),
            tmpfs(21, 20, "/work/x"),
            autofs(30, 2, "/work/y/z", "direct"),
            tmpfs(31, 2, "/work/yy"),
            tmpfs(32, 2, "/work/y/z/deeper"),
            autofs(40, 2, "/work/p", "direct"),
            tmpfs(41, 40, "/work/p/inside"),
        ]);
        assert_eq!(t.shadowed.get(&10), Some(&(12, "/work/a".to_owned())));
        assert!(t.covered.contains(&20), "{:?}", t.covered);
        // A sibling whose name extends a component, a mount deeper than the root, and one
        // inside the autofs mount hide nothing; indirect roots are never looked up.
        for id in [30, 40, 11] {
            assert!(!t.shadowed.contains_key(&id), "{id}: {:?}", t.shadowed);
            assert!(!t.covered.contains(&id), "{id}");
        }
        assert_eq!(t.covered.len(), 1);
    }

    #[test]
    fn a_mount_covering_an_ancestors_root_shadows_everything_below_it() {
        let t = table(&[
            tmpfs(1, 0, "/"),
            tmpfs(2, 1, "/work"),
            autofs(10, 2, "/work/m", "direct"),
            tmpfs(3, 2, "/work"),
            // A stack is walked through: the chain's own mounts hide nothing.
            tmpfs(4, 1, "/srv"),
            tmpfs(5, 4, "/srv"),
            autofs(11, 5, "/srv/m", "direct"),
        ]);
        assert_eq!(t.shadowed.get(&10), Some(&(3, "/work".to_owned())));
        assert!(!t.shadowed.contains_key(&11), "{:?}", t.shadowed);
        assert!(t.covered.is_empty());
    }

    #[test]
    fn a_root_that_is_its_own_parent_hides_nothing_and_a_mount_never_hides_itself() {
        let t = table(&[
            tmpfs(1, 1, "/"),
            autofs(10, 1, "/mnt/x", "direct"),
            // Two mounts on the same place of the same parent: each is hidden by the other,
            // named the same way at every scan.
            autofs(20, 1, "/srv", "direct"),
            tmpfs(21, 1, "/srv"),
        ]);
        assert!(!t.shadowed.contains_key(&10), "{:?}", t.shadowed);
        assert!(t.covered.is_empty(), "{:?}", t.covered);
        assert_eq!(t.shadowed.get(&20), Some(&(21, "/srv".to_owned())));
    }

    #[test]
    fn path_prefixes_go_by_components_down_to_the_given_ancestor() {
        let all = |p: &'static str, to: &'static str| -> Vec<&[u8]> {
            path_prefixes(p.as_bytes(), to.as_bytes()).collect()
        };
        assert_eq!(all("/a/b/c", "/a"), [&b"/a/b/c"[..], b"/a/b", b"/a"]);
        assert_eq!(all("/a", "/"), [&b"/a"[..], b"/"]);
        assert_eq!(all("/", "/"), [&b"/"[..]]);
        assert!(all("/ab", "/a").is_empty(), "not an ancestor by components");
        assert!(all("/a", "/b").is_empty());
    }
}
