//! `launcher-lab`: a cluster of VMs in a network namespace that PXE-boot from a seed and join.
//!
//! [`plan`] decides everything from the options (addresses, MACs, clocks, command lines, the
//! cluster file); [`runner`] applies it and watches the seed's status; [`state`] remembers what
//! was started so that `down` stops exactly that.

pub mod etcd;
pub mod plan;
pub mod runner;
pub mod state;
pub mod watch;

use std::path::PathBuf;

/// Finds `tool` on PATH or in the sbin directories.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
        .map(|dir| PathBuf::from(dir).join(tool))
        .find(|candidate| candidate.is_file())
}
