//! Core reports → `autofs.v1` messages. Field for field; the JSON contract test keeps the
//! names in step.

use autofs_api::criu::AutofsEntry as PbEntry;
use autofs_api::v1;
use autofs_core::{AutofsEntry, MountReport, MountState, Reason};

/// The API enum value of a core state.
pub fn state(s: MountState) -> v1::MountState {
    match s {
        MountState::Active => v1::MountState::Active,
        MountState::Catatonic => v1::MountState::Catatonic,
        MountState::Interim => v1::MountState::Interim,
        MountState::Orphaned => v1::MountState::Orphaned,
        MountState::Unsupported => v1::MountState::Unsupported,
        MountState::Error => v1::MountState::Error,
    }
}

/// The core state of an API enum value (`None` for UNSPECIFIED).
pub fn core_state(s: v1::MountState) -> Option<MountState> {
    MountState::ALL.into_iter().find(|c| state(*c) == s)
}

/// The API enum value of a core reason.
pub fn reason(r: Reason) -> v1::Reason {
    v1::Reason::from_str_name(&format!("REASON_{}", r.as_str())).unwrap_or(v1::Reason::Unspecified)
}

fn entry(e: &AutofsEntry) -> PbEntry {
    PbEntry {
        fd: e.fd,
        pgrp: e.pgrp,
        timeout: e.timeout,
        minproto: e.minproto,
        maxproto: e.maxproto,
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        read_fd: e.read_fd,
    }
}

/// One core report as an API message.
pub fn report(r: &MountReport) -> v1::MountReport {
    v1::MountReport {
        node: r.node.clone(),
        mount_id: r.mount_id,
        parent_id: r.parent_id,
        mount_point: r.mount_point.clone(),
        source: r.source.clone(),
        major: r.major,
        minor: r.minor,
        criu_s_dev: r.criu_s_dev,
        mnt_ns: r.mnt_ns,
        state: state(r.state).into(),
        reason: reason(r.reason).into(),
        message: r.message.clone(),
        entry: r.entry.as_ref().map(entry),
        pipe_ino: r.pipe_ino,
        host_pgrp: r.host_pgrp,
        pending_bytes: r.pending_bytes,
        pending_packets: r.pending_packets,
        read_end_pid: r.read_end_pid,
        read_end_fd: r.read_end_fd,
        write_end_held: r.write_end_held,
        strictexpire: r.strictexpire,
        ignore: r.ignore,
        container_id: r.container_id.clone(),
        pod_uid: r.pod_uid.clone(),
        owner_pid: r.owner_pid,
        criu_notes: r.criu_notes.clone(),
        options: r.options.clone(),
        proto_version: r.proto_version,
        timeout: r.timeout,
        dumpable: r.dumpable,
        mount_point_bytes: r.mount_point_bytes.clone(),
        source_bytes: r.source_bytes.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_and_reason_maps_to_a_specified_api_value() {
        for s in MountState::ALL {
            assert_ne!(state(s), v1::MountState::Unspecified);
            assert_eq!(core_state(state(s)), Some(s));
        }
        assert_eq!(core_state(v1::MountState::Unspecified), None);
        for r in [
            Reason::MasterHoldsPipe,
            Reason::Catatonic,
            Reason::PipeNotEmpty,
            Reason::LeaderGone,
            Reason::ReadEndDelegated,
            Reason::HiddenCatatonic,
            Reason::MasterOutsidePidNs,
            Reason::NoPipeIno,
            Reason::MissingOption,
            Reason::InvalidOption,
            Reason::MalformedMountinfo,
            Reason::ProcUnreadable,
            Reason::PgrpNotVisible,
            Reason::MasterOutsideTree,
            Reason::ProbeMakesCatatonic,
            Reason::OptionOutOfIntRange,
            Reason::MountTableUnreadable,
        ] {
            assert_ne!(reason(r), v1::Reason::Unspecified, "{r}");
        }
    }
}
