//! The image definition as written: serde structs that refuse unknown fields, with spans kept for
//! the values checked in the second stage.

use serde::Deserialize;
use toml::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefinition {
    pub name: S<String>,
    pub platform: Option<S<String>>,
    pub source_date_epoch: Option<S<i64>>,
    pub base: RawBase,
    #[serde(default)]
    pub kernel: RawKernel,
    pub bundle: RawBundle,
    #[serde(default)]
    pub images: Vec<RawImage>,
    pub firstboot: RawFirstboot,
    pub overlay: Option<RawOverlay>,
    #[serde(default)]
    pub disk: RawDisk,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBase {
    pub tarball: Option<RawTarball>,
    pub mmdebstrap: Option<RawMmdebstrap>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarball {
    pub path: S<String>,
    pub sha256: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMmdebstrap {
    pub suite: S<String>,
    pub variant: S<String>,
    pub mirror: S<String>,
    pub packages: Vec<S<String>>,
    #[serde(default)]
    pub dpkg_options: Vec<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKernel {
    #[serde(default)]
    pub cmdline: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBundle {
    pub version: S<String>,
    pub standins: Option<bool>,
    pub kubectl: Option<S<String>>,
    pub kubectl_sha256: Option<S<String>>,
    pub dir: Option<S<String>>,
    pub sha256: Option<RawBundleSums>,
    /// `kubernetes-server-linux-amd64.tar.gz` as published.
    pub server: Option<RawArchive>,
    /// `kubernetes-node-linux-amd64.tar.gz` as published.
    pub node: Option<RawArchive>,
    /// The cri-tools release archive (`crictl-vX.Y.Z-linux-amd64.tar.gz`).
    pub crictl: Option<RawArchive>,
    /// The CNI plugins release archive (`cni-plugins-linux-amd64-vX.Y.Z.tgz`).
    pub cni: Option<RawArchive>,
}

/// A release archive and its sha256, as its publisher lists it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArchive {
    pub archive: S<String>,
    pub sha256: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBundleSums {
    pub kubeadm: S<String>,
    pub kubelet: S<String>,
    pub kubectl: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawImage {
    pub archive: S<String>,
    pub sha256: S<String>,
    pub name: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFirstboot {
    pub seed_url: S<String>,
    pub ntp: S<String>,
    pub ca_pin: S<String>,
    pub binary: Option<S<String>>,
    pub unit: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOverlay {
    pub dir: S<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub file_mode: Option<S<String>>,
    pub dir_mode: Option<S<String>>,
    #[serde(default)]
    pub entries: Vec<RawOverlayEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOverlayEntry {
    pub path: S<String>,
    pub mode: Option<S<String>>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDisk {
    pub free_mib: Option<u64>,
}
