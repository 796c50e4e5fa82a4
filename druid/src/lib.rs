//! lockstep-druid: Druid's HTTP API as lockstep reads it, without the transport: the
//! response types of SQL, `sys.segments` and the supervisor endpoints (`types`), stream
//! partitions as Druid keys them (`partition`), what drift needs from a supervisor spec
//! (`spec`), the error model that classifies every answer ([`DruidError`]), and Druid's time
//! formats.
//!
//! Every decode rule follows Apache Druid's documentation or sources; each cites the file
//! (paths in the apache/druid repository) next to the rule.
//!
//! It does no I/O: drift's HTTP client (`lockstep_drift::druid`) sends the requests and
//! hands the answers here. Kept apart so that this parsing, which faces whatever a site (or a
//! proxy in front of it) sends, can be fuzzed on its own (`fuzz/`), without building the
//! client and its transport.

mod error;
mod partition;
mod spec;
mod time;
mod types;

pub use error::{DruidError, ErrorBody};
pub use partition::{Offsets, StreamPartition};
pub use spec::{granularity_name, SpecError, SpecSummary};
pub use time::{format_time, parse_time, sql_timestamp};
pub use types::*;
