//! Stand-ins for Kubernetes' own `kubeadm`, `kubelet` and `kube-apiserver`, which cannot be
//! downloaded here.
//!
//! They are named as what they are (`kubeadm-standin`, `kubelet-standin`; an image installs them
//! as `kubeadm`/`kubelet` only when no real Kubernetes bundle is given). They check exactly what
//! they are given (API versions, JSON schemas, files referred to), refuse anything else with a
//! clear message, and record what they received under `/var/lib/launcher/standin/`.
//!
//! `LAUNCHER_STANDIN_ROOT` places every path they read or write under another directory (tests).
//!
//! `kube-apiserver-standin` ([`apiserver`]) is the stand-in for kube-apiserver: it takes the
//! flags of kubeadm's manifest and serves what kubelets and `kubectl get nodes` need;
//! `kube-controller-manager-standin` and `kube-scheduler-standin` ([`controller`]) elect their
//! leaders through it, and the controller-manager marks silent Nodes `Unknown`.

pub mod apiserver;
pub mod certs;
pub mod controller;
pub mod docs;
pub mod images;
pub mod kubeadm;
pub mod kubeclient;
pub mod kubelet;

use std::path::{Path, PathBuf};

/// Where the stand-ins record what they were given, under the root.
pub const RECORD_DIR: &str = "/var/lib/launcher/standin";

/// The directory host paths are placed under (`/` on a real host).
#[derive(Debug, Clone)]
pub struct Root(pub PathBuf);

impl Root {
    /// From `LAUNCHER_STANDIN_ROOT`, else `/`.
    pub fn from_env() -> Root {
        Root(
            std::env::var_os("LAUNCHER_STANDIN_ROOT")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/")),
        )
    }

    /// A host path under the root. Relative paths stay relative to the working directory.
    pub fn path(&self, host: &str) -> PathBuf {
        match Path::new(host).strip_prefix("/") {
            Ok(rel) => self.0.join(rel),
            Err(_) => PathBuf::from(host),
        }
    }
}

/// Writes `bytes` to the host path `host` under the root, making parent directories; the
/// record appears whole and outlives a power cut.
pub fn write(root: &Root, host: &str, bytes: &[u8]) -> anyhow::Result<()> {
    durable::write_atomic(&root.path(host), bytes, 0o644)?;
    Ok(())
}

/// Reads a host path under the root.
pub fn read(root: &Root, host: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    let path = root.path(host);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}
