//! Compiles `proto/modelpub/v1/*.proto` (the protocol specification) with
//! protox, a pure-Rust protobuf compiler, so building needs no `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/modelpub/v1/tensor.proto",
        "proto/modelpub/v1/envelope.proto",
        "proto/modelpub/v1/federation.proto",
        "proto/modelpub/v1/peering.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    // Type names give every message `prost::Name`, which envelopes use as `kind`.
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure().compile_fds_with_config(fds, config)?;
    Ok(())
}
