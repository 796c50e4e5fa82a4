//! lockstep coordinator: one active per region (leader election among coordinators that
//! share a state store: `cas`, `election`, `leadership`; standbys redirect to the leader). Owns desired state (flows × sites -> tasks),
//! worker membership and leases, sticky assignment with two-phase hand-over, the durable
//! state store, and the gRPC and HTTP APIs.
//!
//! It never touches Kafka or object-store data itself: workers do. Drift tracking (reading
//! every site's Druid) joins it in `drift/`.

pub mod admission;
pub mod assign;
pub mod auth;
pub mod cas;
pub mod conn;
pub mod control;
pub mod drift;
pub mod druid;
pub mod election;
pub mod events;
pub mod grpc;
pub mod http;
pub mod identity;
pub mod leadership;
pub mod metrics;
pub mod page;
pub mod server;
pub mod state;
pub mod tasks;
pub mod tls;

pub use server::{start, Bound, CoordinatorError};
