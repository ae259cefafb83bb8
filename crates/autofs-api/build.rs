//! Compiles the repository's `proto/` with protox (pure Rust, no protoc) and tonic-prost-build,
//! and writes the encoded descriptor set that the agent serves through gRPC reflection.
//!
//! The messages a program reads as JSON (`scan --json`, the controller's `--output json`) get
//! serde derives here, so their JSON shape is the proto's: field names as declared, enums as
//! their value names without the enum's prefix (`src/json.rs`), `bytes` as base64. The gRPC
//! client and server code is generated only with the `grpc` feature.

use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &["autofs/v1/autofs.proto", "criu/autofs.proto"];

/// The messages that have a JSON shape: every answer the API gives.
const JSON_MESSAGES: &[&str] = &[
    ".autofs.v1.MountReport",
    ".autofs.v1.MountEvent",
    ".autofs.v1.CheckMigratableResponse",
    ".autofs.v1.WaitMigratableResponse",
    ".autofs.v1.TaskBlocker",
    ".autofs.v1.GetNodeInfoResponse",
    ".criu.autofs_entry",
];

/// Fields whose JSON is not serde's default for their Rust type.
const JSON_FIELDS: &[(&str, &str)] = &[
    (".autofs.v1.MountReport.state", "crate::json::mount_state"),
    (".autofs.v1.MountReport.reason", "crate::json::reason"),
    (
        ".autofs.v1.MountReport.mount_point_bytes",
        "crate::json::base64",
    ),
    (".autofs.v1.MountReport.source_bytes", "crate::json::base64"),
    (".autofs.v1.MountReport.root_bytes", "crate::json::base64"),
    (
        ".autofs.v1.MountEvent.kind",
        "crate::json::mount_event_kind",
    ),
    (
        ".autofs.v1.WaitMigratableResponse.outcome",
        "crate::json::outcome",
    ),
    (".autofs.v1.TaskBlocker.reason", "crate::json::task_reason"),
];

/// CRIU's optional `autofs_entry` fields are left out when absent, as CRIU's image leaves them.
const OMITTED_WHEN_ABSENT: &[&str] = &[
    ".criu.autofs_entry.uid",
    ".criu.autofs_entry.gid",
    ".criu.autofs_entry.read_fd",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The protos live at the repository root (buf lint runs there), two levels up.
    let proto_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let grpc = env::var_os("CARGO_FEATURE_GRPC").is_some();

    let mut compiler = protox::Compiler::new([&proto_dir])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTOS)?;
    // compile_fds does not write a descriptor file itself; reflection needs one.
    fs::write(
        out_dir.join("autofs_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    let mut builder = tonic_prost_build::configure()
        .build_server(grpc)
        .build_client(grpc)
        // Consumers bring their own channel; keeps tonic's transport out of this crate.
        .build_transport(false)
        // Streams that sit idle keep a small encoding buffer (src/codec.rs).
        .codec_path("crate::codec::StreamCodec");
    for message in JSON_MESSAGES {
        builder = builder.message_attribute(
            message,
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        );
    }
    for (field, module) in JSON_FIELDS {
        builder = builder.field_attribute(field, format!("#[serde(with = \"{module}\")]"));
    }
    for field in OMITTED_WHEN_ABSENT {
        builder =
            builder.field_attribute(field, "#[serde(skip_serializing_if = \"Option::is_none\")]");
    }
    builder.compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
