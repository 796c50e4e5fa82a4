//! Compiles `lockstep.proto` with protox, a pure-Rust protobuf compiler, so that a plain
//! `cargo build` needs no `protoc` on the machine.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=lockstep.proto");
    let fds = protox::compile(["lockstep.proto"], ["."])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
