//! The gRPC contract between lockstep workers, coordinators and the CLI, and its client side.
//!
//! `lockstep.proto` is the source of truth; this crate re-exports what tonic and prost
//! generate from it. The package is versioned (`lockstep.v1`): a breaking change gets `v2`
//! beside it, never an edit in place. Every client of a coordinator (workers, the CLI, other
//! regions' coordinators) connects with [`tls`] and finds the active coordinator of a region
//! with [`leader`].

pub mod codec;
pub mod leader;
pub mod tls;

/// Generated types and services of `lockstep.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("lockstep.v1");
}

pub use v1::*;

impl TaskProgress {
    /// The fencing mode(s) the task's partitions report ("leases", "transactions"; several
    /// joined by commas while they differ), None before any is reported. One summary for the
    /// status page and `lockstep status`.
    pub fn fencing_modes(&self) -> Option<String> {
        let mut modes: Vec<&str> = self
            .partitions
            .iter()
            .map(|q| q.fencing.as_str())
            .filter(|m| !m.is_empty())
            .collect();
        modes.sort_unstable();
        modes.dedup();
        (!modes.is_empty()).then(|| modes.join(","))
    }
}

/// gRPC metadata key a standby coordinator sets on its UNAVAILABLE answers: the advertised
/// gRPC address of the active coordinator (`http://HOST:PORT` or `https://...`). Workers and
/// the CLI follow it.
pub const LEADER_METADATA: &str = "lockstep-leader";

/// How a coordinator's refusal of a worker of another region begins (FAILED_PRECONDITION on
/// Join): the worker stops at once instead of retrying, since no retry can succeed.
pub const WRONG_REGION: &str = "wrong region";

/// Whether a refused Join says the worker called another region's coordinator.
pub fn is_wrong_region(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition && status.message().starts_with(WRONG_REGION)
}

/// The active coordinator's address a standby named in a refused call, if any.
pub fn leader_hint(status: &tonic::Status) -> Option<String> {
    if status.code() != tonic::Code::Unavailable {
        return None;
    }
    status
        .metadata()
        .get(LEADER_METADATA)?
        .to_str()
        .ok()
        .map(str::to_string)
        .filter(|s| s.starts_with("http://") || s.starts_with("https://"))
}
