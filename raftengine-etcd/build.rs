//! Generates the gRPC code of `proto/transport.proto` (see `raftengine-protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    raftengine_protoc::compile("proto/transport.proto")
}
