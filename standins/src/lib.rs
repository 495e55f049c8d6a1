//! Stand-ins for Kubernetes' own `kubeadm` and `kubelet`, which cannot be downloaded here.
//!
//! They are named as what they are (`kubeadm-standin`, `kubelet-standin`; an image installs them
//! as `kubeadm`/`kubelet` only when no real Kubernetes bundle is given). They check exactly what
//! they are given (API versions, JSON schemas, files referred to), refuse anything else with a
//! clear message, and record what they received under `/var/lib/launcher/standin/`.
//!
//! `LAUNCHER_STANDIN_ROOT` places every path they read or write under another directory (tests).

pub mod docs;
pub mod kubeadm;
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

/// Writes `bytes` to the host path `host` under the root, making parent directories.
pub fn write(root: &Root, host: &str, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    let path = root.path(host);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp-standin");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    std::io::Write::write_all(&mut file, bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming into {}", path.display()))?;
    // The record outlives a power cut: the rename reaches the disk too.
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
    }
    Ok(())
}

/// Reads a host path under the root.
pub fn read(root: &Root, host: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    let path = root.path(host);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}
