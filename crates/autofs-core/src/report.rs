//! What a scan says about each mount. Field names match `autofs.v1.MountReport` exactly, so the
//! JSON of the CLI and the gRPC messages read the same.

use serde::Serialize;

/// What CRIU's autofs dump stage would do with a mount right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
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

    /// Upper-case name as in the API (`ACTIVE`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Catatonic => "CATATONIC",
            Self::Interim => "INTERIM",
            Self::Orphaned => "ORPHANED",
            Self::Unsupported => "UNSUPPORTED",
            Self::Error => "ERROR",
        }
    }
}

impl std::fmt::Display for MountState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Machine-readable cause of a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
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
    /// ORPHANED: nobody holds a read end; the next lookup makes the mount catatonic.
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
    /// UNSUPPORTED: an option the kernel printed does not fit CRIU's int (`timeout=`), and
    /// CRIU's `parse_options()` fails.
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
    /// Upper-case name as in the API without its prefix (`PIPE_NOT_EMPTY`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MasterHoldsPipe => "MASTER_HOLDS_PIPE",
            Self::Catatonic => "CATATONIC",
            Self::PipeNotEmpty => "PIPE_NOT_EMPTY",
            Self::LeaderGone => "LEADER_GONE",
            Self::ReadEndDelegated => "READ_END_DELEGATED",
            Self::HiddenCatatonic => "HIDDEN_CATATONIC",
            Self::MasterOutsidePidNs => "MASTER_OUTSIDE_PID_NS",
            Self::MasterOutsideTree => "MASTER_OUTSIDE_TREE",
            Self::ProbeMakesCatatonic => "PROBE_MAKES_CATATONIC",
            Self::OptionOutOfIntRange => "OPTION_OUT_OF_INT_RANGE",
            Self::MountTableUnreadable => "MOUNT_TABLE_UNREADABLE",
            Self::NoPipeIno => "NO_PIPE_INO",
            Self::MissingOption => "MISSING_OPTION",
            Self::InvalidOption => "INVALID_OPTION",
            Self::MalformedMountinfo => "MALFORMED_MOUNTINFO",
            Self::ProcUnreadable => "PROC_UNREADABLE",
            Self::PgrpNotVisible => "PGRP_NOT_VISIBLE",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// CRIU's `autofs_entry` (images/autofs.proto), fields 1–9 as CRIU would write them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AutofsEntry {
    /// 1: `fd=` (-1 when catatonic).
    pub fd: i32,
    /// 2: pgrp in the dumped pid namespace; the raw value when catatonic.
    pub pgrp: i32,
    /// 3: `timeout=` seconds.
    pub timeout: i32,
    /// 4: `minproto=`.
    pub minproto: i32,
    /// 5: `maxproto=`.
    pub maxproto: i32,
    /// 6: 0 direct, 1 indirect, 2 offset.
    pub mode: i32,
    /// 7: `uid=`, only when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<i32>,
    /// 8: `gid=`, only when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<i32>,
    /// 9: the master's read-end fd, only when it no longer holds the write end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_fd: Option<i32>,
}

/// One autofs mount as seen from one mount namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    #[serde(serialize_with = "base64_bytes")]
    pub mount_point_bytes: Vec<u8>,
    /// Mount source as a string (same convention as `mount_point`).
    pub source: String,
    /// Mount source, exact bytes.
    #[serde(serialize_with = "base64_bytes")]
    pub source_bytes: Vec<u8>,
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
    /// Host pid holding the read end CRIU would use, or the delegate holding one (0: none).
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
}

fn base64_bytes<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    use base64::Engine as _;
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
}

impl MountReport {
    /// Whether this mount blocks a CRIU dump of its mount namespace.
    pub fn blocks_dump(&self) -> bool {
        !self.dumpable
    }
}
