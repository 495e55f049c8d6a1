//! The seed server's library: every subcommand of `launcher-seed` lives here so that integration
//! tests can drive the same code the binary runs.

pub mod boot;
pub mod client;
pub mod cluster_ca;
pub mod cluster_file;
pub mod commands;
pub mod enroll;
pub mod generate;
pub mod http;
pub mod ipxe;
pub mod jobs;
pub mod limits;
pub mod membership;
pub mod metrics;
pub mod ntp;
pub mod oci;
pub mod range;
pub mod refusals;
pub mod seal;
pub mod seed;
pub mod serve;
pub mod store;
pub mod tls;
pub mod views;
