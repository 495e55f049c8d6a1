//! The library behind `launcher-firstboot`, so that integration tests drive the code the binary runs.
//!
//! Phases (see [`run`]): identify → time → enroll → materialize → storage → preload → etcd →
//! install → done, each journaled after it succeeded.

pub mod agent;
pub mod cli;
pub mod config;
pub mod fsutil;
pub mod hostkey;
pub mod identify;
pub mod journal;
pub mod keys;
pub mod kubeconfig;
pub mod materialize;
pub mod node;
pub mod os;
pub mod podlogs;
pub mod preload;
pub mod registered;
pub mod run;
pub mod seed;
pub mod storage;
pub mod time;
pub mod tls;
pub mod vip;

#[cfg(test)]
#[path = "../tests/common/plan.rs"]
mod test_plan;
