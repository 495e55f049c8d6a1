//! The shared model of a Launcher cluster. Everything here is pure: no disk, socket or clock.
//!
//! `cluster` decides, the binaries do: the seed, firstboot and the builder gather inputs, call
//! into this crate and apply its result.

pub mod api;
pub mod etcd;
pub mod firstboot;
pub mod kubeadm;
pub mod ntp;
pub mod pki;
pub mod plan;
pub mod spec;
pub mod text;
