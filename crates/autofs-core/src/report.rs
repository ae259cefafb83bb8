//! What a scan says about each mount, and its one conversion to the wire (`autofs.v1`). The
//! proto is the only schema: value names come from it, and these types serialize as their
//! `autofs.v1` message does ([`autofs_api::json`]), so the CLI's JSON and the gRPC messages
//! read the same.

use autofs_api::{ShortName as _, v1};
use serde::Serialize;

/// What CRIU's autofs dump stage would do with a mount right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MountState {
    /// A live master holds the read end and the pipe is empty: CRIU dumps it.
    Active,
    /// `fd=-1`: the kernel gave up on the daemon; CRIU dumps it with the raw pgrp.
    Catatonic,
    /// A kernel request is queued in the pipe: CRIU refuses ("Try again later.").
    Interim,
    /// Not catatonic and no master holds the read end: CRIU refuses.
    Orphaned,
    /// No `pipe_ino` option (kernel < 4.6 or no CONFIG_CHECKPOINT_RESTORE).
    Unsupported,
    /// Inspecting the mount failed; the scan went on.
    Error,
}

impl MountState {
    /// Every state, in API order.
    pub const ALL: [Self; 6] = [
        Self::Active,
        Self::Catatonic,
        Self::Interim,
        Self::Orphaned,
        Self::Unsupported,
        Self::Error,
    ];

    /// The API's name of the state without its prefix (`ACTIVE`, …).
    pub fn as_str(self) -> &'static str {
        v1::MountState::from(self).short_name()
    }
}

impl From<MountState> for v1::MountState {
    fn from(s: MountState) -> Self {
        match s {
            MountState::Active => Self::Active,
            MountState::Catatonic => Self::Catatonic,
            MountState::Interim => Self::Interim,
            MountState::Orphaned => Self::Orphaned,
            MountState::Unsupported => Self::Unsupported,
            MountState::Error => Self::Error,
        }
    }
}

impl TryFrom<v1::MountState> for MountState {
    type Error = v1::MountState;

    /// The core state of an API value.
    ///
    /// # Errors
    ///
    /// `UNSPECIFIED`, which no report carries.
    fn try_from(s: v1::MountState) -> Result<Self, v1::MountState> {
        Self::ALL
            .into_iter()
            .find(|c| v1::MountState::from(*c) == s)
            .ok_or(s)
    }
}

impl std::fmt::Display for MountState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Machine-readable cause of a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// ACTIVE: the process-group leader holds the read end and the pipe is empty.
    MasterHoldsPipe,
    /// CATATONIC: `fd=-1`.
    Catatonic,
    /// INTERIM: bytes are queued in the pipe.
    PipeNotEmpty,
    /// ORPHANED: the leader is gone; the read end lives on in another member of its group.
    LeaderGone,
    /// ORPHANED: the leader holds no read end; a process of another group does.
    ReadEndDelegated,
    /// ORPHANED: nobody holds a read end; the next lookup makes the mount catatonic (unless a
    /// request is already pending: CRIU's probe then waits for it forever).
    HiddenCatatonic,
    /// ORPHANED: the master is outside the pid namespace CRIU would dump.
    MasterOutsidePidNs,
    /// ORPHANED: the master is in the owner's pid namespace but not in the process tree CRIU
    /// dumps (the owner and its descendants): a `--pid=host` container, a shared pod pid
    /// namespace, `--pid=container:X`.
    MasterOutsideTree,
    /// CATATONIC: the leader is alive but nobody holds a read end of this uncovered direct or
    /// offset mount; CRIU's probe (reference §3.6) makes it catatonic and CRIU dumps it so,
    /// leaving it catatonic.
    ProbeMakesCatatonic,
    /// UNSUPPORTED: an option the kernel printed does not fit CRIU's int (`timeout=`), or is
    /// `INT_MIN`, CRIU's marker for an option not seen (`minproto=-2147483648`), and CRIU's
    /// `parse_options()` fails.
    OptionOutOfIntRange,
    /// ERROR: no complete mount table of the namespace could be read (one report stands for
    /// the whole namespace, `mount_id` 0).
    MountTableUnreadable,
    /// UNSUPPORTED: no `pipe_ino`.
    NoPipeIno,
    /// ERROR: a required option is missing.
    MissingOption,
    /// ERROR: an option value is malformed or out of range.
    InvalidOption,
    /// ERROR: the mountinfo line is malformed.
    MalformedMountinfo,
    /// ERROR: /proc data the verdict depends on could not be read.
    ProcUnreadable,
    /// ERROR: `pgrp=0`: the master is invisible from the inspector's pid namespace.
    PgrpNotVisible,
}

impl Reason {
    /// The API's name of the reason without its prefix (`PIPE_NOT_EMPTY`, …).
    pub fn as_str(self) -> &'static str {
        v1::Reason::from(self).short_name()
    }
}

impl From<Reason> for v1::Reason {
    fn from(r: Reason) -> Self {
        match r {
            Reason::MasterHoldsPipe => Self::MasterHoldsPipe,
            Reason::Catatonic => Self::Catatonic,
            Reason::PipeNotEmpty => Self::PipeNotEmpty,
            Reason::LeaderGone => Self::LeaderGone,
            Reason::ReadEndDelegated => Self::ReadEndDelegated,
            Reason::HiddenCatatonic => Self::HiddenCatatonic,
            Reason::MasterOutsidePidNs => Self::MasterOutsidePidNs,
            Reason::MasterOutsideTree => Self::MasterOutsideTree,
            Reason::ProbeMakesCatatonic => Self::ProbeMakesCatatonic,
            Reason::OptionOutOfIntRange => Self::OptionOutOfIntRange,
            Reason::MountTableUnreadable => Self::MountTableUnreadable,
            Reason::NoPipeIno => Self::NoPipeIno,
            Reason::MissingOption => Self::MissingOption,
            Reason::InvalidOption => Self::InvalidOption,
            Reason::MalformedMountinfo => Self::MalformedMountinfo,
            Reason::ProcUnreadable => Self::ProcUnreadable,
            Reason::PgrpNotVisible => Self::PgrpNotVisible,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// CRIU's `autofs_entry` (images/autofs.proto, reproduced in `proto/criu/autofs.proto`), fields
/// 1–9 as CRIU would write them: 1 `fd=` (-1 when catatonic); 2 pgrp in the dumped pid
/// namespace, the raw value when catatonic; 3 `timeout=` seconds; 4 `minproto=`; 5
/// `maxproto=`; 6 mode, 0 direct, 1 indirect, 2 offset; 7 `uid=` and 8 `gid=`, only when
/// present; 9 the master's read-end fd, only when it no longer holds the write end.
pub use autofs_api::criu::AutofsEntry;

/// One autofs mount as seen from one mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountReport {
    /// Node name given to the scan.
    pub node: String,
    /// Mount id.
    pub mount_id: u32,
    /// Parent mount id.
    pub parent_id: u32,
    /// Mount point as a string: the unescaped bytes written with [`crate::escape`]'s lossless
    /// convention (invalid UTF-8 as `\xHH`, backslash as `\\`).
    pub mount_point: String,
    /// Mount point, exact bytes (base64 in JSON, as proto3's JSON mapping writes `bytes`).
    pub mount_point_bytes: Vec<u8>,
    /// Mount source as a string (same convention as `mount_point`).
    pub source: String,
    /// Mount source, exact bytes.
    pub source_bytes: Vec<u8>,
    /// The directory of the file system the mount shows (mountinfo's root field: `/` for an
    /// autofs file system's own mount, a sub-path for a bind of a directory inside it), as a
    /// string (same convention as `mount_point`).
    pub root: String,
    /// The root, exact bytes.
    pub root_bytes: Vec<u8>,
    /// Device major.
    pub major: u32,
    /// Device minor.
    pub minor: u32,
    /// `(major << 20) | minor`: the number in `autofs-<n>.img`.
    pub criu_s_dev: u32,
    /// Mount namespace inode.
    pub mnt_ns: u64,
    /// Verdict.
    pub state: MountState,
    /// Cause of the verdict.
    pub reason: Reason,
    /// Human message, phrased like CRIU's.
    pub message: String,
    /// The entry CRIU would write (absent when the options could not be parsed).
    pub entry: Option<AutofsEntry>,
    /// Pipe inode (0: none).
    pub pipe_ino: u64,
    /// pgrp as read from the proc root's pid namespace.
    pub host_pgrp: i32,
    /// Bytes queued in the pipe.
    pub pending_bytes: u64,
    /// Whole request packets queued.
    pub pending_packets: u64,
    /// Host pid holding the read end CRIU would use, or the delegate holding one (0: none); a
    /// thread id when the end is in a thread's own fd table (the message says so).
    pub read_end_pid: i32,
    /// That fd number (-1: none).
    pub read_end_fd: i32,
    /// Whether the leader still holds the write end `fd=`.
    pub write_end_held: bool,
    /// `strictexpire` (CRIU drops it).
    pub strictexpire: bool,
    /// `ignore` (CRIU drops it).
    pub ignore: bool,
    /// Container owning the mount namespace.
    pub container_id: String,
    /// Pod owning the mount namespace.
    pub pod_uid: String,
    /// Host pid of the mount namespace's owner (its container init), 0 if unknown.
    pub owner_pid: i32,
    /// Where CRIU's behaviour differs from the truth reported here.
    pub criu_notes: Vec<String>,
    /// Raw super options.
    pub options: String,
    /// Protocol version: `min(maxproto, 5)`.
    pub proto_version: u32,
    /// Expiry timeout in seconds.
    pub timeout: u64,
    /// Whether CRIU could dump this mount now.
    pub dumpable: bool,
    /// Whether the mount blocks a dump even when CRIU skips it as an external bind
    /// ([`crate::external`]): a failure of CRIU's mountinfo parse, which runs on every autofs
    /// mount first (`autofs_parse()`, reference §3.1), a packet-mode pipe end CRIU's pipe dump
    /// refuses (§1.4), a queued request whose requester may wait in the dumped tree (CRIU's
    /// freeze fails on it first), a master in a nested pid namespace (CRIU refuses the
    /// namespace), or a mountinfo line that could not be read.
    pub blocks_when_external: bool,
}

impl MountReport {
    /// Whether this mount blocks a CRIU dump of its mount namespace.
    pub fn blocks_dump(&self) -> bool {
        !self.dumpable
    }
}

impl From<&MountReport> for v1::MountReport {
    /// The report as the API sends it, field for field.
    fn from(r: &MountReport) -> Self {
        Self {
            node: r.node.clone(),
            mount_id: r.mount_id,
            parent_id: r.parent_id,
            mount_point: r.mount_point.clone(),
            mount_point_bytes: r.mount_point_bytes.clone(),
            source: r.source.clone(),
            source_bytes: r.source_bytes.clone(),
            root: r.root.clone(),
            root_bytes: r.root_bytes.clone(),
            major: r.major,
            minor: r.minor,
            criu_s_dev: r.criu_s_dev,
            mnt_ns: r.mnt_ns,
            state: v1::MountState::from(r.state).into(),
            reason: v1::Reason::from(r.reason).into(),
            message: r.message.clone(),
            entry: r.entry,
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
            blocks_when_external: r.blocks_when_external,
        }
    }
}

// The JSON of the core types is their wire message's: one shape, written in one place.

impl Serialize for MountState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Serialize for MountReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        v1::MountReport::from(self).serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_and_reason_has_a_specified_api_value_and_its_name() {
        for s in MountState::ALL {
            let api = v1::MountState::from(s);
            assert_ne!(api, v1::MountState::Unspecified);
            assert_eq!(MountState::try_from(api), Ok(s));
            assert_eq!(format!("MOUNT_STATE_{s}"), api.as_str_name());
        }
        assert!(MountState::try_from(v1::MountState::Unspecified).is_err());
        for r in [
            Reason::MasterHoldsPipe,
            Reason::Catatonic,
            Reason::PipeNotEmpty,
            Reason::LeaderGone,
            Reason::ReadEndDelegated,
            Reason::HiddenCatatonic,
            Reason::MasterOutsidePidNs,
            Reason::MasterOutsideTree,
            Reason::ProbeMakesCatatonic,
            Reason::OptionOutOfIntRange,
            Reason::MountTableUnreadable,
            Reason::NoPipeIno,
            Reason::MissingOption,
            Reason::InvalidOption,
            Reason::MalformedMountinfo,
            Reason::ProcUnreadable,
            Reason::PgrpNotVisible,
        ] {
            let api = v1::Reason::from(r);
            assert_ne!(api, v1::Reason::Unspecified, "{r:?}");
            assert_eq!(format!("REASON_{r}"), api.as_str_name());
        }
    }
}
