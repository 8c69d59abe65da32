//! Compiles proto/troupe/v1/*.proto with protox (pure Rust: these machines have no protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "troupe/v1/common.proto",
        "troupe/v1/head.proto",
        "troupe/v1/node.proto",
        "troupe/v1/worker.proto",
        "troupe/v1/jobs.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
