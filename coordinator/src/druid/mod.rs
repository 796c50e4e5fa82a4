//! The Druid HTTP client the drift engine reads every site with: SQL (object results),
//! `sys.segments`, supervisor list and status, through each site's Router.
//!
//! It only reads. It never logs or returns the site's password, and every failure is a typed
//! [`DruidError`] that names the site.

mod client;
mod error;
mod time;
mod types;

pub use client::DruidClient;
pub use error::{DruidError, ErrorBody};
pub use time::{format_time, parse_time, sql_timestamp};
pub use types::*;
