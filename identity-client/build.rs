//! Compiles the service's `.proto` contract (`../proto/identity/v1/*.proto`) into tonic clients
//! with protox (pure Rust, no system protoc). Servers are not generated: this crate only calls.

use std::{error::Error, fs, path::PathBuf};

const INCLUDE: &str = "../proto";
const PACKAGE_DIR: &str = "../proto/identity/v1";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={INCLUDE}");
    let mut files: Vec<PathBuf> =
        fs::read_dir(PACKAGE_DIR)?.map(|entry| entry.map(|entry| entry.path())).collect::<Result<_, _>>()?;
    files.retain(|path| path.extension().is_some_and(|ext| ext == "proto"));
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let file_descriptors = protox::compile(&files, [INCLUDE])?;
    tonic_prost_build::configure().build_server(false).compile_fds(file_descriptors)?;
    Ok(())
}
