//! Generated protobuf types of the autofs-inspector API (`autofs.v1`) and CRIU's
//! `autofs_entry` (`criu`), the one JSON shape of the API's answers ([`json`]), and the
//! encoded descriptor set served through gRPC reflection. The tonic client and server come with
//! the `grpc` feature.
//!
//! `proto/` is the only schema: the wire, `autofs-agent scan --json` and the controller's
//! `--output json` all serialize these types.

#[cfg(feature = "grpc")]
pub mod codec;
pub mod json;

/// CRIU's image messages (proto2, CRIU's field numbers).
#[allow(missing_docs, clippy::all)]
pub mod criu {
    include!(concat!(env!("OUT_DIR"), "/criu.rs"));
}

/// The public API, package `autofs.v1` (nested so generated `super::super::criu` paths resolve).
pub mod autofs {
    /// Package `autofs.v1`.
    #[allow(clippy::all)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/autofs.v1.rs"));
    }
}

pub use autofs::v1;
pub use json::ShortName;

/// Encoded `FileDescriptorSet` of every proto in `proto/`, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/autofs_descriptor.bin"));

/// Major version of the API package (`autofs.v1`).
pub const API_MAJOR: u32 = 1;
