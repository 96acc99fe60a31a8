//! Compiles the `.proto` contract with protox (pure Rust, so no system protoc is needed) and
//! writes the descriptor set that server reflection serves.

use std::{env, error::Error, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/identity/v1/types.proto",
    "proto/identity/v1/auth_service.proto",
    "proto/identity/v1/token_service.proto",
    "proto/identity/v1/user_service.proto",
    "proto/identity/v1/event_service.proto",
    "proto/identity/v1/admin_service.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    let file_descriptors = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("identity_descriptor.bin"), file_descriptors.encode_to_vec())?;
    // Requests that do not decode are the caller's fault: see src/rpc/codec.rs.
    tonic_prost_build::configure()
        .codec_path("crate::rpc::codec::StrictCodec")
        .compile_fds(file_descriptors)?;
    Ok(())
}
