//! Generated protobuf and gRPC types of the autofs-inspector API (`autofs.v1`) and CRIU's
//! `autofs_entry` (`criu`), plus the encoded descriptor set served through gRPC reflection.

/// CRIU's image messages (proto2, CRIU's field numbers).
#[allow(missing_docs, clippy::all)]
pub mod criu {
    tonic::include_proto!("criu");
}

/// The public API, package `autofs.v1` (nested so generated `super::super::criu` paths resolve).
pub mod autofs {
    /// Package `autofs.v1`.
    #[allow(clippy::all)]
    pub mod v1 {
        tonic::include_proto!("autofs.v1");
    }
}

pub use autofs::v1;

/// Encoded `FileDescriptorSet` of every proto in `proto/`, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("autofs_descriptor");

/// Major version of the API package (`autofs.v1`).
pub const API_MAJOR: u32 = 1;

impl v1::MountState {
    /// Short name without the enum prefix: `ACTIVE`, `INTERIM`, …
    pub fn short_name(self) -> &'static str {
        self.as_str_name()
            .strip_prefix("MOUNT_STATE_")
            .unwrap_or("UNSPECIFIED")
    }
}

impl v1::Reason {
    /// Short name without the enum prefix: `PIPE_NOT_EMPTY`, …
    pub fn short_name(self) -> &'static str {
        self.as_str_name()
            .strip_prefix("REASON_")
            .unwrap_or("UNSPECIFIED")
    }
}
