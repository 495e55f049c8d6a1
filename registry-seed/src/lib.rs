//! The seed server's library: every subcommand of `launcher-seed` lives here so that integration
//! tests can drive the same code the binary runs.

pub mod generate;
pub mod members;
pub mod ntp;
pub mod oci;
pub mod serve;
