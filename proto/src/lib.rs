//! The gRPC contract between lockstep workers, coordinators and the CLI.
//!
//! `lockstep.proto` is the source of truth; this crate only re-exports what tonic and prost
//! generate from it. The package is versioned (`lockstep.v1`): a breaking change gets `v2`
//! beside it, never an edit in place.

/// Generated types and services of `lockstep.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("lockstep.v1");
}

pub use v1::*;
