//! The Kafka record headers lockstep writes on every mirrored record: the one definition of
//! their names, written by the mirror (`workers/src/kafka/headers.rs`) and read back by the
//! mirror's resume and by drift's offset map (`drift/src/offsets.rs`).
//!
//! They live here, beside the worker <-> coordinator task contract ([`crate::TaskConfig`]),
//! because this is the one crate both ends depend on that carries no I/O and no gRPC: the
//! names only, no encoding or parsing.

/// The record's offset in the source partition (decimal ASCII): the offset map used for
/// resuming and for drift tracking.
pub const SRC_OFFSET: &str = "lockstep.src.offset";

/// The source's name (the flow's `source`), so a tail read ignores records of another hop.
pub const SRC_CLUSTER: &str = "lockstep.src.cluster";

/// Where the record was first produced (kept when already present), so active-active flows
/// never loop.
pub const ORIGIN: &str = "lockstep.origin";
