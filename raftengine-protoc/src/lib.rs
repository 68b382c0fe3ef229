//! The build step every raftengine crate with a gRPC service shares: one
//! `.proto` file compiled into tonic client and server code and prost
//! messages (with `bytes::Bytes` for every `bytes` field, so payloads are
//! not copied), using the protoc binary shipped in `protoc-bin-vendored`,
//! so a fresh machine needs no system protoc.
//!
//! ```no_run
//! // build.rs
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     raftengine_protoc::compile("proto/transport.proto")
//! }
//! ```

/// Compiles `proto` (a path under the crate's `proto/` directory, which is
/// also the include path) into `OUT_DIR`, and asks Cargo to rerun the build
/// script when it changes. Call it from a build script only.
///
/// # Errors
///
/// The vendored protoc is missing for this platform, or protoc refused the
/// file.
pub fn compile(proto: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.bytes(["."]);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &[proto], &["proto"])?;
    println!("cargo:rerun-if-changed={proto}");
    Ok(())
}
