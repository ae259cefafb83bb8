//! The decision for one autofs mount: CRIU's checks (reference §3), in CRIU's order, on the
//! facts of one scan, plus what CRIU cannot see (who holds the pipe, how much is queued).

use crate::options::{AutofsOptions, MountMode, PipeIno};
use crate::pipes::{PipeEnd, PipeIndex, QueueProbe};
use crate::process::{ProcessTable, Unavailable};
use crate::report::{AutofsEntry, MountReport, MountState, Reason};

/// Size of one request packet as the kernel writes it for protocol `version`
/// (reference §7.4): `autofs_v5_packet` is 304 bytes on 64-bit, 300 on 32-bit; v3/v4 272.
pub fn packet_size(version: u32) -> u64 {
    match version {
        5.. if cfg!(target_pointer_width = "64") => 304,
        5.. => 300,
        _ => 272,
    }
}

/// Everything a verdict may consult.
pub struct Facts<'t, 'r> {
    /// Process facts of this scan.
    pub table: &'t mut ProcessTable<'r>,
    /// The pipe census of this scan.
    pub pipes: &'t PipeIndex,
    /// How queued bytes are measured.
    pub probe: &'t dyn QueueProbe,
    /// Host pid owning the mount's namespace.
    pub owner: Option<i32>,
}

/// Fills state, reason, message, entry and pipe details of `report` for a mount whose options
/// parsed, following CRIU's order: catatonic fast path, read end in the leader, emptiness,
/// write end, pgrp virtualisation.
pub fn judge(report: &mut MountReport, options: &AutofsOptions, facts: &mut Facts<'_, '_>) {
    report.host_pgrp = options.pgrp;
    report.strictexpire = options.strictexpire;
    report.ignore = options.ignore;
    report.proto_version = options.proto_version();
    report.timeout = u64::try_from(options.timeout).unwrap_or(0);
    let mut entry = base_entry(options);

    let ino = match options.pipe_ino {
        None => {
            report.entry = Some(entry);
            return set(
                report,
                MountState::Unsupported,
                Reason::NoPipeIno,
                "Failed to find pipe_ino option (old kernel?)".into(),
            );
        }
        Some(_) if options.fd == -1 => {
            // CRIU: "we don't care about virtual pgrp in case of catatonic mounts".
            report.entry = Some(entry);
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
            report.entry = Some(entry);
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
        report.entry = Some(entry);
        return set(
            report,
            MountState::Error,
            Reason::PgrpNotVisible,
            format!(
                "pgrp={pgrp}: the master's process group is not visible from the inspector's pid namespace (run it in the host pid namespace)"
            ),
        );
    }

    let ends = facts.pipes.ends(ino);
    // Like CRIU, the pgrp number is used as a pid: whatever process has it is searched.
    let leader_alive = match facts.table.info(pgrp) {
        Ok(_) => true,
        Err(Unavailable::Vanished) => false,
        Err(Unavailable::Failed(why)) => {
            report.entry = Some(entry);
            return set(report, MountState::Error, Reason::ProcUnreadable, why);
        }
    };
    if let Some(denied) = facts.pipes.is_unreadable(pgrp) {
        report.entry = Some(entry);
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
        report.entry = Some(entry);
        return orphaned(report, options, ino, leader_alive, ends, facts);
    };

    report.read_end_pid = read_end.pid;
    report.read_end_fd = read_end.fd;
    if !measure(report, &read_end, ino, facts) {
        report.entry = Some(entry);
        return;
    }

    let criu_sees_write_end = report.write_end_held && ino <= i32::MAX as u64;
    if report.write_end_held && !criu_sees_write_end {
        report.criu_notes.push(format!(
            "pipe_ino {ino} exceeds INT_MAX: CRIU's write-end check truncates it, records read_fd although the write end is held, and the restored fd= may differ"
        ));
    }
    if !criu_sees_write_end {
        entry.read_fd = Some(read_end.fd);
    }

    let virtual_pgrp = facts
        .owner
        .and_then(|owner| facts.table.translate(pgrp, owner));
    if let Some(vpgrp) = virtual_pgrp {
        entry.pgrp = vpgrp;
    }
    report.entry = Some(entry);

    if report.pending_bytes > 0 {
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
    if virtual_pgrp.is_none() {
        let owner = facts
            .owner
            .map_or_else(|| "unknown".to_owned(), |o| o.to_string());
        return set(
            report,
            MountState::Orphaned,
            Reason::MasterOutsidePidNs,
            format!(
                "failed to find pstree item with pid {pgrp}. Non-catatonic mount without master? (the master is outside the pid namespace of the mount namespace's owner, pid {owner})"
            ),
        );
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
}

/// The leader holds no read end: delegated, leader gone with its group alive, or hidden
/// catatonic. CRIU fails on all of them (or, for an uncovered direct mount, turns it catatonic
/// with its probe).
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
            holders.push((info.pgrp != pgrp, *end, info.pgrp, info.comm.clone()));
        }
    }
    holders.sort_by_key(|(other_group, end, _, _)| (*other_group, end.pid, end.fd));
    if let Some((_, holder, holder_pgrp, comm)) = holders.into_iter().next() {
        report.read_end_pid = holder.pid;
        report.read_end_fd = holder.fd;
        measure(report, &holder, ino, facts);
        let who = format!(
            "pid {} ({comm}, pgrp {holder_pgrp}) fd {}",
            holder.pid, holder.fd
        );
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

    // The state is certain either way (the leader holds no read end, so CRIU fails); only
    // the reason is, when some processes' fds could not be read, a best effort.
    let caveat = match facts.pipes.unreadable() {
        [] => String::new(),
        unreadable => format!(
            " (the fds of {} process(es) could not be read, e.g. {}; one of them might hold it)",
            unreadable.len(),
            unreadable[0].message
        ),
    };
    if leader_alive {
        report.criu_notes.push(match options.mode {
            MountMode::Indirect => format!(
                "CRIU's probe cannot trigger an indirect root: it would fail with \"Autofs {} is alive, but unreachable.\"",
                report.mount_id
            ),
            MountMode::Direct | MountMode::Offset => "CRIU's probe would make this mount catatonic by touching its root (if uncovered) and then dump it".into(),
        });
    }
    let message = if leader_alive {
        format!(
            "{criu_says} No process holds a read end: the mount is hidden catatonic (the next lookup makes it catatonic){caveat}"
        )
    } else {
        format!(
            "{criu_says}: the daemon is gone and no process holds a read end: the mount is hidden catatonic (the next lookup makes it catatonic){caveat}"
        )
    };
    set(
        report,
        MountState::Orphaned,
        Reason::HiddenCatatonic,
        message,
    );
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

fn base_entry(o: &AutofsOptions) -> AutofsEntry {
    AutofsEntry {
        fd: o.fd,
        pgrp: o.pgrp,
        timeout: o.timeout,
        minproto: o.minproto,
        maxproto: o.maxproto,
        mode: o.mode.criu_code(),
        uid: o.uid,
        gid: o.gid,
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
    fn packet_sizes_follow_the_protocol_version() {
        assert_eq!(packet_size(5), 304);
        assert_eq!(packet_size(4), 272);
        assert_eq!(packet_size(3), 272);
    }
}
