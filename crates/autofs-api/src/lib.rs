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
    ///
    /// # Errors
    ///
    /// Every RPC method of the client (`autofs_inspector_client::AutofsInspectorClient`, with
    /// the `grpc` feature) returns the `tonic::Status` the agent refused the call with (e.g.
    /// `INVALID_ARGUMENT` for a malformed request, `NOT_FOUND` for an absent workload,
    /// `PERMISSION_DENIED`, `UNAVAILABLE` when no scan can answer, `RESOURCE_EXHAUSTED` past a
    /// stream budget; autofs-agent's `service::status` maps the core's errors), the status of
    /// a transport failure, or `UNKNOWN` ("Service was not ready") when the channel cannot
    /// become ready. A stream that fails later ends with a status among its items instead.
    // Generated code: its docs come from the proto's comments, which stay free of Rust
    // headings, so the client's errors are documented once above instead of per method.
    #[allow(clippy::all, clippy::missing_errors_doc)]
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

/// Initial metadata of `ListMounts` (and `CheckMigratable`): the age in milliseconds, counted
/// from its start, of the scan the answer comes from.
pub const SCAN_AGE_HEADER: &str = "autofs-scan-age-ms";
/// Initial metadata of `ListMounts` (and `CheckMigratable`), set to `true` when the answer
/// comes from the last good scan because the current one has stalled.
pub const STALE_HEADER: &str = "autofs-scan-stale";
