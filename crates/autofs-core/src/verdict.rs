//! The decision for one autofs mount: CRIU's checks (reference §3), in CRIU's order, on the
//! facts of one scan, plus what CRIU cannot see (who holds the pipe, how much is queued).

use crate::id_map::INVALID_ID;
use crate::options::{AutofsOptions, MountMode, PipeIno};
use crate::pipes::{PipeEnd, PipeIndex, QueueProbe};
use crate::process::{ProcessTable, Unavailable};
use crate::report::{AutofsEntry, MountReport, MountState, Reason};
use crate::view::View;

/// Size of one request packet as the kernel writes it for protocol `version`
/// (reference §7.4): `autofs_v5_packet` is 304 bytes on 64-bit, 300 on 32-bit; v3/v4 272.
pub fn packet_size(version: u32) -> u64 {
    match version {
        5.. if cfg!(target_pointer_width = "64") => 304,
        5.. => 300,
        _ => 272,
    }
}

/// Whether CRIU's probe (reference §3.6) can reach a mount's root, as far as the mount
/// namespace decides it: the mount table and `/dev/autofs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReach {
    /// The mount CRIU's probe goes through: the mount of the same superblock that its
    /// `dump_one_fs()` calls `autofs_dump()` on ([`crate::dumped_from`]), this mount or another
    /// mount of the superblock's root. Every field below is about that mount.
    pub mount_id: u32,
    /// That mount's mount namespace (inode): CRIU enters it to probe.
    pub mnt_ns: u64,
    /// Host pid of the task whose pid namespace CRIU's probe forks into (`ns_pid` of that
    /// mount namespace: the task that discovered it in the dumped tree, the tree's root for
    /// its own namespace); `None` when not known, when the namespace's owner stands in.
    pub prober: Option<i32>,
    /// That mount's mount point, escaped as [`MountReport::mount_point`] is.
    pub mount_point: String,
    /// Another mount sits on the mount's root (the open would land in it).
    pub covered: bool,
    /// A mount on the path to the mount point (on an ancestor directory, or on the root of a
    /// mount on the way) that hides the mount from a lookup by path, with its mount point as
    /// mountinfo shows it: `AUTOFS_DEV_IOCTL_OPENMOUNT` resolves the path into that mount and
    /// finds no autofs mount there.
    pub shadowed_by: Option<(u32, String)>,
    /// Whether the namespace's `/dev/autofs` is the autofs device (CRIU opens it after
    /// entering the namespace); `Err` with why it could not be told.
    pub dev_autofs: Result<DevAutofs, String>,
}

/// What CRIU finds at `/dev/autofs` in a mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevAutofs {
    /// The autofs misc device (character device 10:235): `OPENMOUNT` can work.
    Usable,
    /// Nothing usable, and why: no such path, or something else than the device (a regular
    /// file, another device), on which the open or the ioctl fails.
    Unusable(String),
}

/// Everything a verdict may consult.
pub struct Facts<'t, 'r> {
    /// Process facts of this scan.
    pub table: &'t mut ProcessTable<'r>,
    /// The pipe census of this scan.
    pub pipes: &'t PipeIndex,
    /// How queued bytes are measured.
    pub probe: &'t dyn QueueProbe,
    /// Host pid owning the mount's namespace: the root of the process tree CRIU dumps.
    pub owner: Option<i32>,
    /// What the inspector can see; when restricted, no verdict rests on an absence.
    pub view: &'t View,
    /// Whether CRIU's probe could reach this mount's root.
    pub reach: &'t ProbeReach,
    /// The complete `mountinfo` of the namespace CRIU's probe enters (the probed mount's,
    /// [`ProbeReach::mnt_ns`]) as read, which CRIU reads again after its probe.
    pub mount_table: &'t [u8],
}

/// Fills state, reason, message, entry and pipe details of `report` for a mount whose options
/// parsed, following CRIU's order: option conversion, catatonic fast path, read end in the
/// leader, emptiness, probe, write end, pgrp virtualisation.
pub fn judge(report: &mut MountReport, options: &AutofsOptions, facts: &mut Facts<'_, '_>) {
    report.host_pgrp = options.pgrp;
    report.strictexpire = options.strictexpire;
    report.ignore = options.ignore;
    report.proto_version = options.proto_version();
    report.timeout = options.timeout;
    note_negative_minproto(report, options);
    // CRIU's mountinfo parse rewrites uid=/gid= before its autofs code sees them.
    let ids = match criu_ids(report, options, facts) {
        Ok(ids) => ids,
        Err(why) => return set(report, MountState::Error, Reason::ProcUnreadable, why),
    };

    // CRIU's parse_options() converts every number before it looks at any of them.
    let timeout = match options.criu_timeout() {
        Ok(timeout) => timeout,
        Err(criu_says) => {
            return set(
                report,
                MountState::Unsupported,
                Reason::OptionOutOfIntRange,
                format!(
                    "{criu_says}: CRIU cannot parse timeout={} (the kernel prints an unsigned long, CRIU's xatoi wants an int) and the dump fails",
                    options.timeout
                ),
            );
        }
    };
    if let Some(what) = options.criu_unseen() {
        return set(
            report,
            MountState::Unsupported,
            Reason::OptionOutOfIntRange,
            format!(
                "Failed to find {what} option: the kernel shows {what}={} (a value of 2^31 given at mount, kept in an int), which is INT_MIN, the marker CRIU's parse_options() starts every option at (AUTOFS_OPT_UNKNOWN), so CRIU takes it for absent and the dump fails",
                i32::MIN
            ),
        );
    }
    // CRIU's entry as its option parse made it; the read end and the master refine it below.
    report.entry = Some(base_entry(options, timeout, ids));

    let ino = match options.pipe_ino {
        None => {
            return set(
                report,
                MountState::Unsupported,
                Reason::NoPipeIno,
                "Failed to find pipe_ino option (old kernel?)".into(),
            );
        }
        Some(_) if options.fd == -1 => {
            // CRIU: "we don't care about virtual pgrp in case of catatonic mounts".
            return set(
                report,
                MountState::Catatonic,
                Reason::Catatonic,
                format!(
                    "Catatonic mount (fd=-1): the kernel gave up on the daemon; CRIU dumps it with the raw pgrp {}",
                    options.pgrp
                ),
            );
        }
        Some(PipeIno::None) => {
            return set(
                report,
                MountState::Error,
                Reason::InvalidOption,
                format!(
                    "inconsistent autofs options: fd={} but pipe_ino=-1",
                    options.fd
                ),
            );
        }
        Some(PipeIno::Ino(ino)) => ino,
    };
    report.pipe_ino = ino;
    if ino > u64::from(u32::MAX) {
        report.criu_notes.push(format!(
            "overflow: pipe_ino > UINT32_MAX: CRIU's mountinfo parse rejects pipe_ino {ino} and the whole dump fails"
        ));
    }

    let pgrp = options.pgrp;
    if pgrp <= 0 {
        return set(
            report,
            MountState::Error,
            Reason::PgrpNotVisible,
            format!(
                "pgrp={pgrp}: the master's process group is not visible from the inspector's pid namespace (run it in the host pid namespace)"
            ),
        );
    }
    if facts.view.foreign_pid_namespace {
        return set(
            report,
            MountState::Error,
            Reason::PgrpNotVisible,
            format!(
                "pgrp={pgrp} is a pid of the agent's pid namespace, not the pid namespace its proc root shows: it names no known process there (run the agent in the pid namespace of its proc root)"
            ),
        );
    }

    let ends = facts.pipes.ends(ino);
    // Like CRIU, the pgrp number is used as a pid: whatever process has it is searched.
    let leader_alive = match facts.table.check_exists(pgrp) {
        Ok(_) => true,
        Err(Unavailable::Vanished) => false,
        Err(Unavailable::Failed(why)) => {
            return set(report, MountState::Error, Reason::ProcUnreadable, why);
        }
    };
    if let Some(denied) = facts.pipes.is_unreadable(pgrp) {
        return set(
            report,
            MountState::Error,
            Reason::ProcUnreadable,
            denied.message.clone(),
        );
    }

    // Write end: CRIU stats /proc/<pgrp>/fd/<fd=> and wants the same FIFO opened O_WRONLY.
    report.write_end_held = leader_alive
        && ends
            .iter()
            .any(|e| e.pid == pgrp && e.fd == options.fd && e.is_write_end());

    let leader_read = leader_alive
        .then(|| ends.iter().find(|e| e.pid == pgrp && e.is_read_end()))
        .flatten()
        .copied();

    let Some(read_end) = leader_read else {
        return orphaned(report, options, ino, leader_alive, ends, facts);
    };

    report.read_end_pid = read_end.pid;
    report.read_end_fd = read_end.fd;
    if !measure(report, &read_end, ino, facts) {
        return;
    }

    let criu_sees_write_end = report.write_end_held && ino <= i32::MAX as u64;
    if report.write_end_held && !criu_sees_write_end {
        report.criu_notes.push(format!(
            "pipe_ino {ino} exceeds INT_MAX: CRIU's write-end check truncates it, records read_fd although the write end is held, and the restored fd= may differ"
        ));
    }
    if !criu_sees_write_end && let Some(entry) = report.entry.as_mut() {
        entry.read_fd = Some(read_end.fd);
    }

    // CRIU's pid_to_virt(): the master must be a task of the dumped tree.
    let master = facts
        .owner
        .ok_or_else(|| {
            Unavailable::Failed(format!(
                "the owner of mount namespace {} (the root of the process tree CRIU dumps) could not be read",
                report.mnt_ns
            ))
        })
        .and_then(|owner| dumped_tree_membership(facts.table, pgrp, owner));
    if let Ok(Membership::Inside(vpgrp)) = master
        && let Some(entry) = report.entry.as_mut()
    {
        entry.pgrp = vpgrp;
    }

    if report.pending_bytes > 0 {
        note_waiting_requesters(
            report,
            "the dump succeeds only after the daemon has read its queue",
        );
        return set(
            report,
            MountState::Interim,
            Reason::PipeNotEmpty,
            format!(
                "Process {pgrp} autofs pipe fd {} is not empty. Try again later. ({} bytes queued: {} request packet(s))",
                read_end.fd, report.pending_bytes, report.pending_packets
            ),
        );
    }
    match master {
        Err(why) => {
            return set(
                report,
                MountState::Error,
                Reason::ProcUnreadable,
                format!(
                    "cannot tell whether master {pgrp} is in the process tree CRIU dumps: {why}"
                ),
            );
        }
        Ok(Membership::Inside(_)) => {}
        Ok(outside) => {
            let (reason, why) = outside_message(facts, pgrp, &outside);
            let criu_says = format!(
                "failed to find pstree item with pid {pgrp}. Non-catatonic mount without master? ({why})"
            );
            if facts.view.restricted {
                return restricted(report, &criu_says, facts.view);
            }
            return set(report, MountState::Orphaned, reason, criu_says);
        }
    }
    let write = if criu_sees_write_end {
        format!("and its write end fd {}", options.fd)
    } else if report.write_end_held {
        // The truth is "held"; only CRIU's int-truncated inode check misses it (§3.10 #1).
        format!(
            "and its write end fd {}, but CRIU's truncated inode check misses it: read_fd {} is recorded",
            options.fd, read_end.fd
        )
    } else {
        format!(
            "but not its write end fd {}: read_fd {} is recorded",
            options.fd, read_end.fd
        )
    };
    set(
        report,
        MountState::Active,
        Reason::MasterHoldsPipe,
        format!(
            "Master {pgrp} holds the read end fd {} of pipe {ino} {write}; the pipe is empty",
            read_end.fd
        ),
    );
    if let Some(owner) = facts.owner {
        note_nested_pid_namespace(facts.table, report, pgrp, owner);
    }
}

/// A master of the dumped tree in a pid namespace nested below its owner's (it is in the tree,
/// so a pid namespace other than the owner's is one below it): CRIU's `generate_ns_id()` takes
/// the pid namespace of the tree's root task only and refuses any other ("Can't dump nested
/// pid namespace for N", `criu/namespaces.c`), so the dump fails whatever the mount's state.
/// Checked where the master is known to be in the dumped tree (the ACTIVE path); an INTERIM
/// mount is refused anyway, and a catatonic one's pgrp is not looked up (reference §3.3). One
/// `ns/pid` link each (cached); said only when both could be read.
fn note_nested_pid_namespace(
    table: &mut ProcessTable<'_>,
    report: &mut MountReport,
    pgrp: i32,
    owner: i32,
) {
    let (Ok(master), Ok(root)) = (table.pid_ns(pgrp), table.pid_ns(owner)) else {
        return;
    };
    if master != root {
        report.criu_notes.push(format!(
            "master {pgrp} is in a pid namespace nested below the one of pid {owner}, the root of the tree CRIU dumps; CRIU dumps only the root task's pid namespace and fails before its autofs stage, naming the first task of that namespace it meets (the master or an ancestor of it): Can't dump nested pid namespace for <pid>"
        ));
        report.dumpable = false;
        // CRIU refuses the namespace whatever it does with the mount: external or not.
        report.blocks_when_external = true;
    }
}

/// Where a master stands relative to the process tree CRIU dumps.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Membership {
    /// A task of the tree; its pid in the owner's pid namespace.
    Inside(i32),
    /// Not even visible in the owner's pid namespace.
    OutsidePidNs { owner: i32 },
    /// In the owner's pid namespace, but not the owner nor a descendant of it.
    OutsideTree { owner: i32 },
    /// A thread other than its process's main thread (`pgrp=` accepts any pid at mount):
    /// CRIU's `pid_to_virt()` looks up processes (pstree items) by pid, never threads.
    Thread { tgid: i32, owner: i32 },
}

fn dumped_tree_membership(
    table: &mut ProcessTable<'_>,
    pgrp: i32,
    owner: i32,
) -> Result<Membership, Unavailable> {
    let tgid = table.tgid(pgrp)?;
    if tgid != pgrp {
        return Ok(Membership::Thread { tgid, owner });
    }
    let Some(vpgrp) = table.translate(pgrp, owner)? else {
        return Ok(Membership::OutsidePidNs { owner });
    };
    Ok(if table.descends_from(pgrp, owner)? {
        Membership::Inside(vpgrp)
    } else {
        Membership::OutsideTree { owner }
    })
}

/// Reason and explanation for a master outside the dumped tree: who the master is, which
/// container it belongs to, and which tree CRIU dumps.
fn outside_message(facts: &mut Facts<'_, '_>, pgrp: i32, outside: &Membership) -> (Reason, String) {
    let (reason, owner, place) = match *outside {
        Membership::Thread { tgid, owner } => (
            Reason::MasterOutsideTree,
            owner,
            format!(
                "pgrp {pgrp} names a thread of pid {tgid}, not a process, and CRIU's pid_to_virt() finds only the processes of the tree it dumps"
            ),
        ),
        Membership::OutsidePidNs { owner } => (
            Reason::MasterOutsidePidNs,
            owner,
            "the master is outside the pid namespace of the mount namespace's owner".to_owned(),
        ),
        Membership::OutsideTree { owner } => (
            Reason::MasterOutsideTree,
            owner,
            "the master is not in the process tree CRIU dumps for this mount namespace".to_owned(),
        ),
        Membership::Inside(_) => unreachable!("only called for masters outside the tree"),
    };
    let who = |facts: &mut Facts<'_, '_>, pid: i32| {
        let (comm, tgid) = facts
            .table
            .info(pid)
            .map_or_else(|_| ("?".into(), pid), |i| (i.comm(), i.tgid));
        let attribution = facts.table.attribution(pid);
        let home = if !attribution.container_id.is_empty() {
            format!("container {}", short_id(&attribution.container_id))
        } else if !attribution.pod_uid.is_empty() {
            format!("pod {}", attribution.pod_uid)
        } else {
            "the host".to_owned()
        };
        if tgid == pid {
            format!("pid {pid} ({comm}) of {home}")
        } else {
            format!("thread {pid} ({comm}) of pid {tgid} of {home}")
        }
    };
    let master = who(facts, pgrp);
    let root = who(facts, owner);
    (
        reason,
        format!("{place}: the master is {master}; CRIU dumps the tree rooted at {root}"),
    )
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// An ORPHANED verdict that rests on something being absent, in a view where absent may mean
/// hidden: ERROR instead, saying what CRIU would do if the absence is real.
fn restricted(report: &mut MountReport, criu_says: &str, view: &View) {
    set(
        report,
        MountState::Error,
        Reason::ProcUnreadable,
        format!(
            "cannot tell a live master from a gone one: {}. If nothing is hidden, CRIU would fail: {criu_says}",
            view.summary()
        ),
    );
}

/// The `uid` and `gid` of an `autofs_entry` (`None`: the option is not shown).
type CriuIds = (Option<i32>, Option<i32>);

/// The `uid` and `gid` CRIU records (reference §2): `sb_opt_cb()` reads `uid=`/`gid=` with
/// `sscanf("%d")`, maps the host id with `userns_uid()`/`userns_gid()` into the user namespace
/// of the root of the tree it dumps (the namespace's owner) through that task's
/// `uid_map`/`gid_map`, and prints it back with `%d`; notes where that changes the value. The
/// maps are read only for a mount that shows `uid=` or `gid=`.
///
/// # Errors
///
/// Why the maps could not be read (the owner unknown, or its map unreadable or malformed).
fn criu_ids(
    report: &mut MountReport,
    options: &AutofsOptions,
    facts: &mut Facts<'_, '_>,
) -> Result<CriuIds, String> {
    let mut ids = [None, None];
    for (slot, (name, file, raw)) in [
        ("uid", "uid_map", options.uid),
        ("gid", "gid_map", options.gid),
    ]
    .into_iter()
    .enumerate()
    {
        let Some(raw) = raw else { continue };
        let owner = facts.owner.ok_or_else(|| {
            format!(
                "the owner of mount namespace {} could not be read: CRIU records {name}={raw} as the user namespace of the tree it dumps, rooted there, sees it",
                report.mnt_ns
            )
        })?;
        let map = facts
            .table
            .id_map(owner, file)
            .map_err(|why| format!("{why}: it gives the {name} CRIU records for {name}={raw}"))?;
        let mapped = map.criu_map(raw);
        let criu = i32::from_ne_bytes(mapped.to_ne_bytes());
        let restore_fails = format!(
            "its restore then mounts with {name}={criu}, which the kernel rejects (EINVAL), so the restore fails"
        );
        if criu == i32::MIN {
            // parse_options() starts the field at INT_MIN (AUTOFS_OPT_UNKNOWN) and sets
            // has_uid/has_gid only for another value (autofs_create_entry()).
            report.criu_notes.push(format!(
                "{name}={raw}: CRIU's rewrite of the option (sscanf(\"%d\"), then the user-namespace mapping of the tree of pid {owner}) gives {criu}, which is INT_MIN, the marker of an option its parse_options() has not seen, so it records no {name}; its restore mounts without {name}= and the mount's root belongs to the restorer's {name} instead"
            ));
            continue;
        }
        if mapped == INVALID_ID && raw != INVALID_ID {
            report.criu_notes.push(format!(
                "{name}={raw} is outside the {name}_map of pid {owner}, the root of the tree CRIU dumps: CRIU records {name} {criu} (INVALID_ID); {restore_fails}"
            ));
        } else if mapped != raw {
            let tail = if criu < 0 {
                format!("; {restore_fails}")
            } else {
                String::new()
            };
            report.criu_notes.push(format!(
                "{name}={raw} is a host id: CRIU maps it into the user namespace of pid {owner}, the root of the tree it dumps, and records {name} {criu}{tail}"
            ));
        } else if criu < 0 {
            report.criu_notes.push(format!(
                "{name}={raw} exceeds INT_MAX: CRIU reads it with sscanf(\"%d\") and records {name} {criu}; {restore_fails}"
            ));
        }
        ids[slot] = Some(criu);
    }
    Ok((ids[0], ids[1]))
}

/// Notes what CRIU's restore makes of a negative `minproto=` (reference §3.2, §4, §7.1): the
/// kernel prints the `u32` given at mount as an `int`, CRIU's `xatoi` takes the negative value
/// into the image, and its restore mounts with it, which the kernel's `u32` parser refuses.
/// `INT_MIN` is left to [`AutofsOptions::criu_unseen`]: CRIU's dump fails on it first.
fn note_negative_minproto(report: &mut MountReport, options: &AutofsOptions) {
    if options.minproto < 0 && options.minproto != i32::MIN {
        report.criu_notes.push(format!(
            "minproto={}: the kernel shows a minproto of 2^31 or more as a negative int; CRIU records minproto {} and its restore mounts with minproto={}, which the kernel rejects (EINVAL), so the restore fails",
            options.minproto, options.minproto, options.minproto
        ));
    }
}

/// The leader holds no read end: delegated, leader gone with its group alive, hidden
/// catatonic, or (direct and offset mounts) saved by CRIU's probe.
fn orphaned(
    report: &mut MountReport,
    options: &AutofsOptions,
    ino: u64,
    leader_alive: bool,
    ends: &[PipeEnd],
    facts: &mut Facts<'_, '_>,
) {
    let pgrp = options.pgrp;
    let criu_says = if leader_alive {
        format!(
            "Master {pgrp} doesn't have a read end of the pipe with inode {ino} opened. Abandoned mount or control was delegated to child?"
        )
    } else {
        format!("Failed to find read pipe fd (ino {ino}) in process {pgrp}")
    };

    // Ends of a process that has exited since the fd census (the leader included: it counts as
    // gone) are stale: such a process holds nothing any more. A surviving member of the
    // leader's own group is preferred as the holder to name, then the lowest pid.
    let mut holders = Vec::new();
    for end in ends.iter().filter(|e| e.is_read_end()) {
        if let Ok(info) = facts.table.info(end.pid) {
            // An end found in a thread's own fd table is held under the thread's id.
            let name = if info.tgid == end.pid {
                format!("pid {}", end.pid)
            } else {
                format!(
                    "thread {} of pid {} (in an fd table of its own)",
                    end.pid, info.tgid
                )
            };
            holders.push((info.pgrp != pgrp, *end, info.pgrp, info.comm(), name));
        }
    }
    holders.sort_by_key(|(other_group, end, ..)| (*other_group, end.pid, end.fd));
    if let Some((_, holder, holder_pgrp, comm, name)) = holders.into_iter().next() {
        report.read_end_pid = holder.pid;
        report.read_end_fd = holder.fd;
        measure(report, &holder, ino, facts);
        let who = format!("{name} ({comm}, pgrp {holder_pgrp}) fd {}", holder.fd);
        if !leader_alive && facts.view.restricted {
            return restricted(report, &criu_says, facts.view);
        }
        if !leader_alive && holder_pgrp == pgrp {
            report.criu_notes.push(
                "CRIU searches only the process-group leader's fds, so it misses the group member that holds the read end".into(),
            );
            return set(
                report,
                MountState::Orphaned,
                Reason::LeaderGone,
                format!(
                    "{criu_says}: the process-group leader {pgrp} is gone; the read end lives on in {who}"
                ),
            );
        }
        // CRIU probes only when the leader is alive but lacks the read end; when the leader
        // is gone, opendir of its fd dir fails first and the dump just fails.
        if leader_alive {
            report.criu_notes.push(
                "CRIU's hidden-catatonic probe would send a real request that the delegate may never answer, stalling the dump".into(),
            );
        }
        return set(
            report,
            MountState::Orphaned,
            Reason::ReadEndDelegated,
            format!(
                "{criu_says}{} The read end is held by {who}",
                if leader_alive { "" } else { "." }
            ),
        );
    }

    if !leader_alive {
        let message = format!(
            "{criu_says}: the daemon is gone and no process holds a read end: the mount is hidden catatonic (the next lookup makes it catatonic)"
        );
        if facts.view.restricted {
            return restricted(report, &message, facts.view);
        }
        return set(
            report,
            MountState::Orphaned,
            Reason::HiddenCatatonic,
            message,
        );
    }
    let hidden = format!(
        "{criu_says} No process holds a read end: the mount is hidden catatonic (the next lookup makes it catatonic)"
    );
    if options.mode == MountMode::Indirect {
        // Certain whoever else holds what: CRIU's probe cannot trigger an indirect root.
        report.criu_notes.push(format!(
            "CRIU's probe cannot trigger an indirect root: it fails with \"Autofs {} is alive, but unreachable.\"",
            facts.reach.mount_id
        ));
        // The state is certain (the leader holds no read end); only the reason is a best
        // effort when some processes' fds could not be read.
        let caveat = match facts.pipes.unreadable() {
            [] => String::new(),
            unreadable => format!(
                " (the fds of {} process(es) could not be read, e.g. {}; one of them might hold it)",
                unreadable.len(),
                unreadable[0].message
            ),
        };
        return set(
            report,
            MountState::Orphaned,
            Reason::HiddenCatatonic,
            format!("{hidden}{caveat}"),
        );
    }
    probe(report, options, ino, &criu_says, &hidden, facts);
}

/// CRIU's `parse_options` of the options token its re-read found (reference §3.2): raw, so
/// `uid=`/`gid=` are not the mapped and `%d`-wrapped values of its normal path (§3.10 #6) but
/// go through `xatoi` like every number, which refuses what does not fit an int. Returns the
/// `uid` and `gid` it records.
fn reparse(token: &[u8]) -> Result<CriuIds, String> {
    let fails = |why: String| format!("CRIU's parse of the options it read again fails: {why}");
    let options = AutofsOptions::parse(token).map_err(|e| fails(e.to_string()))?;
    options.criu_timeout().map_err(fails)?;
    for (key, value) in [("uid", options.uid), ("gid", options.gid)] {
        if let Some(v) = value.filter(|&v| i32::try_from(v).is_err()) {
            return Err(fails(format!(
                "{key}={v}: value {v:#x} ({v}) is out of int range"
            )));
        }
    }
    let raw = |id: Option<u32>| id.and_then(|v| i32::try_from(v).ok());
    Ok((raw(options.uid), raw(options.gid)))
}

/// CRIU's probe of a direct or offset mount whose live leader holds no read end and for
/// which nobody else holds one either (reference §3.6, §3.10 #2, #3): CRIU opens the root
/// from the owner's pid namespace, the kernel's request finds no reader, the mount turns
/// catatonic and is dumped so — unless the open cannot reach the kernel (CRIU fails, whoever
/// holds a read end), or a request already waits in the pipe (CRIU's probe joins it and hangs).
fn probe(
    report: &mut MountReport,
    options: &AutofsOptions,
    ino: u64,
    criu_says: &str,
    hidden: &str,
    facts: &mut Facts<'_, '_>,
) {
    let pgrp = options.pgrp;
    let probed = facts.reach.mount_id;
    let unreachable = format!("Autofs {probed} is alive, but unreachable.");
    // Whether the probe reaches the kernel rests on the mount table, /dev/autofs and pid
    // namespaces, not on who holds a read end: when it cannot, CRIU fails whoever does.
    let reach = reach(report, pgrp, facts);
    let blocked = |report: &mut MountReport, caveat: &str, why: &str| {
        note_probed_through(report, facts.reach);
        set(
            report,
            MountState::Orphaned,
            Reason::HiddenCatatonic,
            format!("{hidden}{caveat}. CRIU's probe cannot reach it ({why}): {unreachable}"),
        );
    };
    if facts.view.restricted {
        if let Reach::Blocked(why) = &reach {
            let caveat = format!(
                " (as far as the agent can see: {}; a hidden process holding one would not change CRIU's outcome)",
                facts.view.summary()
            );
            return blocked(report, &caveat, why);
        }
        // A hidden reader would answer the probe's request: the outcome rests on absence.
        // (The leader is seen alive: `restricted`'s "live or gone" is not the question.)
        return set(
            report,
            MountState::Error,
            Reason::ProcUnreadable,
            format!(
                "{hidden}. Whether CRIU's probe turns it catatonic (no reader anywhere) or fails (a reader answers) depends on processes hidden from the agent: {}",
                facts.view.summary()
            ),
        );
    }
    // The census names holders it can see; the kernel's reader count, through any end the
    // census did see, also counts read ends it cannot (unreadable fd tables, fds in flight).
    let through = facts.pipes.ends(ino).first().copied();
    let readers = through.map(|end| {
        let path = facts
            .table
            .root()
            .pid_path(end.pid, &format!("fd/{}", end.fd));
        facts.probe.has_readers(&path, ino)
    });
    let unreadable = facts.pipes.unreadable();
    let unknown = |why: String| {
        format!(
            "{hidden}. Whether CRIU's probe turns it catatonic (no reader anywhere) or fails (a reader answers) depends on the fds of {} process(es) that could not be read, e.g. {}{why}",
            unreadable.len(),
            unreadable.first().map_or("?", |u| u.message.as_str())
        )
    };
    let readers_unknown = match readers {
        Some(Ok(Some(false))) => None,
        Some(Ok(Some(true))) => {
            let example = unreadable
                .first()
                .map(|u| format!(" (fds the agent could not read: e.g. {})", u.message))
                .unwrap_or_else(|| " (an fd in flight or outside every fd table)".into());
            return set(
                report,
                MountState::Orphaned,
                Reason::ReadEndDelegated,
                format!(
                    "{criu_says} A read end is held where the agent cannot see it, but the kernel counts a reader{example}: CRIU's probe request would go to it"
                ),
            );
        }
        // Without the kernel's count the census decides, if it is complete.
        Some(Ok(None)) | None if unreadable.is_empty() => None,
        Some(Err(e)) if unreadable.is_empty() => Some(format!(
            "{hidden}. The pipe's reader count could not be read: {e}"
        )),
        Some(Err(e)) => Some(unknown(format!(
            "; the pipe's reader count could not be read either: {e}"
        ))),
        Some(Ok(None)) | None => Some(unknown(String::new())),
    };
    if let Some(message) = readers_unknown {
        if let Reach::Blocked(why) = &reach {
            let caveat = match unreadable {
                [] => String::new(),
                [first, ..] => format!(
                    " (the fds of {} process(es) could not be read, e.g. {}; one of them might hold it)",
                    unreadable.len(),
                    first.message
                ),
            };
            return blocked(report, &caveat, why);
        }
        return set(report, MountState::Error, Reason::ProcUnreadable, message);
    }
    let prober = match reach {
        Reach::Blocked(why) => return blocked(report, "", &why),
        Reach::Unknown(why) => {
            note_probed_through(report, facts.reach);
            return set(
                report,
                MountState::Error,
                Reason::ProcUnreadable,
                format!("{hidden}. Whether CRIU's probe can reach it is unknown: {why}"),
            );
        }
        Reach::Reaches(prober) => prober,
    };
    note_probed_through(report, facts.reach);
    if let Some(end) = through
        && pending_request(report, end, ino, hidden, facts)
    {
        return;
    }
    // The probe makes the mount catatonic; CRIU then reads the options again, still
    // inside its probe (a failure there is "failed to access autofs <point>"), and
    // parses them after it (a failure there is the parse's own message, nothing more:
    // autofs_create_entry()).
    let token = match crate::revisit::revisit(facts.mount_table, probed) {
        Ok(token) => token,
        Err(why) => {
            let point = &facts.reach.mount_point;
            return set(
                report,
                MountState::Orphaned,
                Reason::HiddenCatatonic,
                format!(
                    "{hidden}. CRIU's probe makes it catatonic, but reading the mount table again fails ({why}): failed to access autofs {point}"
                ),
            );
        }
    };
    let (uid, gid) = match reparse(&token) {
        Ok(ids) => ids,
        Err(why) => {
            return set(
                report,
                MountState::Orphaned,
                Reason::HiddenCatatonic,
                format!("{hidden}. CRIU's probe makes it catatonic, but {why}"),
            );
        }
    };
    let normal = report
        .entry
        .unwrap_or_else(|| base_entry(options, 0, (None, None)));
    // has_uid/has_gid stay as the first parse set them (autofs_create_entry()): the
    // raw value is recorded only where that parse recorded one.
    let (uid, gid) = (normal.uid.and(uid), normal.gid.and(gid));
    for (name, normal, raw) in [("uid", normal.uid, uid), ("gid", normal.gid, gid)] {
        if let Some(raw) = raw.filter(|&raw| Some(raw) != normal) {
            report.criu_notes.push(format!(
                    "CRIU's probe path records the raw host {name} {raw} instead: the options it reads again skip the user-namespace mapping of its normal path"
                ));
        }
    }
    report.entry = Some(AutofsEntry {
        fd: -1,
        read_fd: None,
        uid,
        gid,
        ..normal
    });
    // What the kernel keeps and /proc does not show: a request's wait lasts until an answer
    // or catatonic mode, and the probe's lookup would join it (see `pending_request`).
    let unseen = if through.is_some() {
        "Unless the daemon read a request and never answered it (died or stopped mid-request): that request's wait stays in the kernel, CRIU's probe joins it and the dump hangs; /proc shows no such request"
    } else {
        "Unless a request is pending (queued, or read and never answered: the daemon died mid-request): its wait stays in the kernel, CRIU's probe joins it and the dump hangs; with no end of the pipe left to measure it through, /proc shows no such request"
    };
    report.criu_notes.push(
            "the dump leaves this mount catatonic: CRIU's probe makes the kernel give up on the daemon, and the mount never triggers again on this node until it is remounted".into(),
        );
    set(
        report,
        MountState::Catatonic,
        Reason::ProbeMakesCatatonic,
        format!(
            "{hidden}. CRIU's probe opens the uncovered root from the pid namespace of pid {prober}; the request finds no reader, the mount turns catatonic and CRIU dumps it so (fd -1, pgrp {pgrp}). {unseen}"
        ),
    )
}

/// Whether a request is already queued in the pipe nobody reads, measured through `end`
/// (reference §7.3, `fs/autofs/waitq.c`): the kernel keeps a pending request's wait until the
/// daemon answers it or the mount turns catatonic, and a lookup of the same name — every
/// lookup of a direct or offset root names the root — joins that wait instead of writing
/// again. CRIU's probe then writes nothing, gets no EPIPE, and its child waits for an answer
/// nobody will give: `waitpid` never returns and the dump hangs, its tasks frozen. Returns
/// true after setting the verdict when a request is queued or the queue cannot be measured.
fn pending_request(
    report: &mut MountReport,
    end: PipeEnd,
    ino: u64,
    hidden: &str,
    facts: &mut Facts<'_, '_>,
) -> bool {
    let path = facts
        .table
        .root()
        .pid_path(end.pid, &format!("fd/{}", end.fd));
    let bytes = match facts.probe.queued_bytes_unread(&path, ino) {
        Ok(None | Some(0)) => return false,
        Ok(Some(bytes)) => bytes,
        Err(e) => {
            set(
                report,
                MountState::Error,
                Reason::ProcUnreadable,
                format!(
                    "{hidden}. Whether a request is already queued (CRIU's probe would then wait for it forever) is unknown: cannot measure pipe {ino} through {}: {e}",
                    path.display()
                ),
            );
            return true;
        }
    };
    report.pending_bytes = bytes;
    report.pending_packets = bytes / packet_size(report.proto_version);
    let queued = format!(
        "{bytes} bytes ({} request(s)) are queued in pipe {ino}, which nobody reads",
        report.pending_packets
    );
    let others = superblocks_sharing(facts.mount_table, ino, (report.major, report.minor));
    if others > 0 {
        set(
            report,
            MountState::Error,
            Reason::ProcUnreadable,
            format!(
                "{hidden}. {queued} and {others} other autofs superblock(s) share: if a request is this mount's, CRIU's probe joins it and waits forever (the dump hangs); if not, the probe's own request turns the mount catatonic. Which mount a request is for cannot be read without reading the pipe"
            ),
        );
        return true;
    }
    set(
        report,
        MountState::Orphaned,
        Reason::HiddenCatatonic,
        format!(
            "{hidden}, except that {queued}: CRIU's probe joins the pending request instead of writing its own, gets no EPIPE, and waits for an answer nobody will give: the dump hangs with its tasks frozen instead of failing"
        ),
    );
    note_waiting_requesters(
        report,
        "the dump hangs in the probe once no requester is left in the tree (a real CRIU 4.2.1 stays in autofs_mnt_open)",
    );
    true
}

/// Each queued request has a requester asleep in the kernel's autofs wait (killable: state
/// D) until the daemon answers; it must see the daemon's pid namespace for the request to be
/// written at all (reference §7.3), so in a container it is in the tree CRIU dumps, and
/// CRIU's freeze (compel's seize) gives up on it before the autofs stage runs. A real CRIU
/// 4.2.1 fails so. `otherwise` says what happens when no requester is in the tree.
/// The mount then blocks even as an external bind ([`MountReport::blocks_when_external`]):
/// the freeze comes before CRIU looks at any mount (a requester outside the tree, which
/// `/proc` cannot tell apart without reading the pipe, would not stop it: the cautious answer).
fn note_waiting_requesters(report: &mut MountReport, otherwise: &str) {
    // The freeze fails whatever CRIU would do with the mount: external or not.
    report.blocks_when_external = true;
    report.criu_notes.push(format!(
        "each queued request's requester waits in the kernel (state D) until the daemon answers; when one is in the process tree CRIU dumps, as a process of the container is, CRIU's freeze fails first, after its --timeout (10 s by default), with: Unseizable non-zombie <requester pid> found, state D; otherwise {otherwise}"
    ));
}

/// How many autofs superblocks other than `own` (major, minor) show pipe `ino` in `table`
/// (a namespace's `mountinfo`): the real automount mounts all direct mounts of a map with
/// one pipe. Lines that do not parse count for nothing here (their own reports say why).
fn superblocks_sharing(table: &[u8], ino: u64, own: (u32, u32)) -> usize {
    let mut others: Vec<(u32, u32)> = table
        .split(|&b| b == b'\n')
        .filter_map(|line| crate::mountinfo::MountLine::parse(line).ok())
        .filter(|l| l.is_autofs() && (l.major, l.minor) != own)
        .filter(|l| {
            AutofsOptions::parse(l.super_options)
                .is_ok_and(|o| o.pipe_ino == Some(PipeIno::Ino(ino)))
        })
        .map(|l| (l.major, l.minor))
        .collect();
    others.sort_unstable();
    others.dedup();
    others.len()
}

/// Notes, on a mount that is not the one CRIU's probe goes through (`probed`), that the
/// probe of that other mount of the same root decides for this one too.
fn note_probed_through(report: &mut MountReport, reach: &ProbeReach) {
    let probed = reach.mount_id;
    if probed == report.mount_id {
        return;
    }
    report.criu_notes.push(if reach.mnt_ns == report.mnt_ns {
        format!(
            "CRIU dumps this superblock from mount {probed}, another mount of its root (its dump_one_fs() reaches that one first: the last in the mount table, or else the first), and probes it through that mount; the outcome holds for every mount of the superblock"
        )
    } else {
        format!(
            "CRIU dumps this superblock from mount {probed} of mount namespace {}, another mount of its root in a namespace dumped with this one (its dump_one_fs() reaches that one first: it walks the namespaces from the one it discovered last in the dumped tree, and the superblock's bind ring from its last mount there), and probes it through that mount, in that namespace; the outcome holds for every mount of the superblock",
            reach.mnt_ns
        )
    });
}

/// Whether CRIU's probe of a mount reaches the kernel (reference §3.6, §3.10 #2, #3).
enum Reach {
    /// It cannot, and why: CRIU ends in "Autofs N is alive, but unreachable.".
    Blocked(String),
    /// A fact it rests on could not be read, and which.
    Unknown(String),
    /// It can, from the pid namespace of this task (host pid, [`ProbeReach::prober`]).
    Reaches(i32),
}

/// Whether CRIU's probe of the mount of `report`, whose leader is `pgrp`, reaches the kernel:
/// an open that lands in a covering mount, a path lookup hidden by another mount, a devid
/// CRIU encodes wrongly, no `/dev/autofs`, or a requester the daemon's pid namespace cannot
/// see all keep the kernel from writing a request, whoever holds a read end.
fn reach(report: &MountReport, pgrp: i32, facts: &mut Facts<'_, '_>) -> Reach {
    if facts.reach.covered {
        return Reach::Blocked(
            "another mount covers its root, so CRIU's open lands in that mount".into(),
        );
    }
    if let Some((id, point)) = &facts.reach.shadowed_by {
        return Reach::Blocked(format!(
            "mount {id} on {point} hides the path to it, so AUTOFS_DEV_IOCTL_OPENMOUNT looks it up in that mount and finds no such autofs mount"
        ));
    }
    if report.minor >= 256 {
        return Reach::Blocked(format!(
            "minor {} ≥ 256: CRIU passes the MKKDEV s_dev to AUTOFS_DEV_IOCTL_OPENMOUNT, which decodes it differently and finds no such mount",
            report.minor
        ));
    }
    match &facts.reach.dev_autofs {
        Ok(DevAutofs::Usable) => {}
        Ok(DevAutofs::Unusable(why)) => return Reach::Blocked(why.clone()),
        Err(why) => return Reach::Unknown(why.clone()),
    }
    let Some(owner) = facts.owner else {
        return Reach::Unknown(format!(
            "the owner of mount namespace {} could not be read",
            report.mnt_ns
        ));
    };
    // The kernel writes a request only for a requester visible in the daemon's pid
    // namespace; CRIU's requester lives in that of the task that discovered the probed
    // mount's namespace (`ns_pid`).
    let prober = facts.reach.prober.unwrap_or(owner);
    match facts.table.translate(prober, pgrp) {
        Err(why) => Reach::Unknown(why.to_string()),
        Ok(None) => Reach::Blocked(format!(
            "the leader {pgrp} lives in a pid namespace nested below that of pid {prober}, where CRIU's requester runs, so the kernel writes no request"
        )),
        Ok(Some(_)) => Reach::Reaches(prober),
    }
}

/// Measures the queue behind `end`. Returns false (after setting an ERROR verdict) when it
/// cannot be measured.
fn measure(report: &mut MountReport, end: &PipeEnd, ino: u64, facts: &mut Facts<'_, '_>) -> bool {
    let path = facts
        .table
        .root()
        .pid_path(end.pid, &format!("fd/{}", end.fd));
    match facts.probe.queued_bytes(&path, ino) {
        Ok(bytes) => {
            report.pending_bytes = bytes;
            report.pending_packets = bytes / packet_size(report.proto_version);
            true
        }
        Err(e) => {
            set(
                report,
                MountState::Error,
                Reason::ProcUnreadable,
                format!(
                    "cannot measure the queue of pipe {ino} through {}: {e}",
                    path.display()
                ),
            );
            false
        }
    }
}

fn base_entry(o: &AutofsOptions, timeout: i32, (uid, gid): CriuIds) -> AutofsEntry {
    AutofsEntry {
        fd: o.fd,
        pgrp: o.pgrp,
        timeout,
        minproto: o.minproto,
        maxproto: o.maxproto,
        mode: o.mode.criu_code(),
        uid,
        gid,
        read_fd: None,
    }
}

fn set(report: &mut MountReport, state: MountState, reason: Reason, message: String) {
    report.state = state;
    report.reason = reason;
    report.message = message;
    report.dumpable = matches!(state, MountState::Active | MountState::Catatonic)
        && report.pipe_ino <= u64::from(u32::MAX);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblocks_sharing_a_pipe_are_counted_once_each_without_the_own_one() {
        let opts = |ino: &str| {
            format!("rw,fd=14,pgrp=7,timeout=60,minproto=5,maxproto=5,direct,pipe_ino={ino}")
        };
        let table = [
            "22 1 8:2 / / rw - ext4 /dev/sda2 rw".to_string(),
            format!("40 22 0:43 / /mnt/a rw - autofs map {}", opts("900")),
            // A bind of the own superblock's root, and a second superblock with two mounts.
            format!("41 22 0:43 / /mnt/a2 rw - autofs map {}", opts("900")),
            format!("42 22 0:44 / /mnt/b rw - autofs map {}", opts("900")),
            format!("43 22 0:44 / /mnt/b2 rw - autofs map {}", opts("900")),
            format!("44 22 0:45 / /mnt/c rw - autofs map {}", opts("901")),
            "45 22 0:46 / /mnt/d rw - tmpfs tmpfs rw,pipe_ino=900".to_string(),
            String::new(),
        ]
        .join("\n");
        assert_eq!(superblocks_sharing(table.as_bytes(), 900, (0, 43)), 1);
        assert_eq!(superblocks_sharing(table.as_bytes(), 901, (0, 45)), 0);
        assert_eq!(superblocks_sharing(table.as_bytes(), 900, (0, 45)), 2);
    }

    #[test]
    fn packet_sizes_follow_the_protocol_version() {
        assert_eq!(packet_size(5), 304);
        assert_eq!(packet_size(4), 272);
        assert_eq!(packet_size(3), 272);
    }

    #[test]
    fn the_re_read_options_are_parsed_raw_as_criu_does() {
        let token = |extra: &str| {
            format!(
                "rw,fd=-1,pgrp=1234,timeout=300,minproto=5,maxproto=5,direct{extra},pipe_ino=-1"
            )
        };
        assert_eq!(reparse(token("").as_bytes()), Ok((None, None)));
        assert_eq!(
            reparse(token(",uid=1000,gid=2147483647").as_bytes()),
            Ok((Some(1000), Some(i32::MAX)))
        );
        // Raw uid/gid beyond INT_MAX: xatoi refuses them (the normal path wraps them first).
        let err = reparse(token(",uid=4294967294").as_bytes()).unwrap_err();
        assert!(
            err.contains("uid=4294967294") && err.contains("out of int range"),
            "{err}"
        );
        assert!(reparse(token(",gid=2147483648").as_bytes()).is_err());
        // A token cut short is CRIU's parse failing too.
        assert!(reparse(b"rw,fd=-1,pgrp=1234").is_err());
    }
}
