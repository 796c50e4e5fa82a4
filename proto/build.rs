//! Compiles `lockstep.proto` with protox, a pure-Rust protobuf compiler, so that a plain
//! `cargo build` needs no `protoc` on the machine. Every generated client and server uses
//! [`LockstepCodec`](src/codec.rs).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=lockstep.proto");
    let fds = protox::compile(["lockstep.proto"], ["."])?;
    // Our codec: tonic-prost's, with malformed requests refused as INVALID_ARGUMENT rather than
    // INTERNAL (src/codec.rs).
    tonic_prost_build::configure()
        .codec_path("crate::codec::LockstepCodec")
        .compile_fds(fds)?;
    Ok(())
}
