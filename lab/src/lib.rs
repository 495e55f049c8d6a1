//! `launcher-lab`: a cluster of VMs in a network namespace that PXE-boot from a seed and join.
//!
//! [`plan`] decides everything from the options (addresses, MACs, clocks, command lines, the
//! cluster file); [`runner`] applies it (a `running` lab: what was started) and [`progress`] watches it come up, reading the seed's
//! status over its admin API ([`seed_api`]) and deciding with [`ready`]; [`state`] remembers what
//! was started, by pid and start time ([`procs`]), so that `down` stops exactly that; [`trusted`]
//! checks the trusted iPXE a lab may boot with.

pub mod etcd;
pub mod guest;
pub mod host;
pub mod plan;
pub mod procs;
pub mod progress;
pub mod ready;
pub mod runner;
mod running;
pub mod seed_api;
pub mod state;
pub mod trusted;
pub mod vip;
pub mod watch;

/// Finds a tool on PATH or in the sbin directories, as the tests do.
pub use testkit::which;
