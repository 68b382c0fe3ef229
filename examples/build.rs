//! Generates the kv service's gRPC code with the protoc binary shipped in the
//! `protoc-bin-vendored` crate, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.bytes(["."]);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &["proto/kv.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/kv.proto");
    Ok(())
}
