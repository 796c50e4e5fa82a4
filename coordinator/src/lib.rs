//! lockstep coordinator: one active per region (leader election among coordinators that
//! share a state store: `cas`, `election`, `leadership`; standbys redirect to the leader). Owns desired state (flows × sites -> tasks),
//! worker membership and leases, sticky assignment with two-phase hand-over, the durable
//! state store, and the gRPC and HTTP APIs.
//!
//! It never touches Kafka or object-store data itself: workers do. Drift tracking (reading
//! every site's Druid) is the `lockstep-drift` crate; the coordinator runs its poller while
//! leading, serves its report (`/api/v1/drift`, the status page) and exports its metrics.
//! While leading it also asks the other regions' coordinators for their status (`peers`,
//! PeerService) and answers theirs, so that any region shows every region.

pub mod admission;
pub mod assign;
pub mod auth;
pub mod cas;
pub mod conn;
pub mod control;
pub mod election;
pub mod events;
pub mod grpc;
pub mod http;
pub mod identity;
pub mod leadership;
pub mod metrics;
pub mod page;
pub mod peers;
pub mod server;
pub mod shared;
pub mod state;
pub mod tasks;
pub mod tls;
pub mod views;

pub use server::{start, Bound, CoordinatorError};
