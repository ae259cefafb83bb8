//! Compiles `proto/` with protox (pure Rust, no protoc) and tonic-prost-build, and writes the
//! encoded descriptor set that the agent serves through gRPC reflection.

use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &["autofs/v1/autofs.proto", "criu/autofs.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTOS)?;
    // compile_fds does not write a descriptor file itself; reflection needs one.
    fs::write(
        out_dir.join("autofs_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Consumers bring their own channel; keeps tonic's transport out of this crate.
        .build_transport(false)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
