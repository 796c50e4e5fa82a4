//! The Druid HTTP client the drift engine reads every site with: SQL (object results),
//! `sys.segments`, supervisor list and status, through each site's Router.
//!
//! It only reads. It never logs or returns the site's password, and every failure is a typed
//! [`DruidError`] that names the site.

mod client;

pub use client::DruidClient;
// The response types, error model and time formats live in their own crate (no I/O), which
// the fuzz targets build alone.
pub use lockstep_druid::*;
