//! Generates the exitnet.v1 code and a descriptor set for gRPC reflection.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The vendored protoc: no system protoc needed on a newcomer's machine.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts run single-threaded; tonic-prost-build reads PROTOC.
    unsafe_set_protoc(&protoc);
    let include = protoc_bin_vendored::include_path()?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let files = [
        "exitnet/v1/common.proto",
        "exitnet/v1/node.proto",
        "exitnet/v1/federation.proto",
        "exitnet/v1/invitation.proto",
        "exitnet/v1/admin.proto",
        "exitnet/v1/consent.proto",
        "exitnet/v1/referral.proto",
        "exitnet/v1/audit.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("exitnet_descriptor.bin"))
        .compile_protos(&files.map(PathBuf::from), &[PathBuf::from("."), include])?;
    Ok(())
}

#[allow(unsafe_code)]
fn unsafe_set_protoc(path: &std::path::Path) {
    // SAFETY: the build script has a single thread at this point.
    unsafe { std::env::set_var("PROTOC", path) };
}
