//! The Kubernetes version a cluster runs, and which kubeadm config API renders it.

use std::fmt;
use std::str::FromStr;

use crate::text::ValueError;

/// The oldest minor this project renders (kubeadm v1beta3 arrived in 1.22).
pub const MIN_MINOR: u32 = 22;
/// The newest minor whose kubeadm image tags this project knows.
pub const MAX_MINOR: u32 = 35;

/// A Kubernetes release `vMAJOR.MINOR.PATCH`, major 1, minor 22 to 35.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KubeVersion {
    major: u32,
    minor: u32,
    patch: u32,
}

/// The kubeadm config API a version is rendered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KubeadmApi {
    /// `kubeadm.k8s.io/v1beta3`, Kubernetes 1.22-1.30.
    V1Beta3,
    /// `kubeadm.k8s.io/v1beta4`, Kubernetes 1.31 and later.
    V1Beta4,
}

impl KubeadmApi {
    pub fn api_version(self) -> &'static str {
        match self {
            KubeadmApi::V1Beta3 => "kubeadm.k8s.io/v1beta3",
            KubeadmApi::V1Beta4 => "kubeadm.k8s.io/v1beta4",
        }
    }
}

impl KubeVersion {
    pub fn major(&self) -> u32 {
        self.major
    }

    pub fn minor(&self) -> u32 {
        self.minor
    }

    pub fn patch(&self) -> u32 {
        self.patch
    }

    pub fn kubeadm_api(&self) -> KubeadmApi {
        if self.minor >= 31 {
            KubeadmApi::V1Beta4
        } else {
            KubeadmApi::V1Beta3
        }
    }

    /// True from the given minor on (`v.at_least(29)` for 1.29+).
    pub fn at_least(&self, minor: u32) -> bool {
        self.minor >= minor
    }
}

impl FromStr for KubeVersion {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let malformed = || {
            ValueError(format!(
                "{s:?} is not a version: expected vMAJOR.MINOR.PATCH like v1.33.4"
            ))
        };
        let rest = s.strip_prefix('v').ok_or_else(malformed)?;
        let parts: Vec<&str> = rest.split('.').collect();
        let [major, minor, patch] = parts.as_slice() else {
            return Err(malformed());
        };
        let num = |p: &str| -> Result<u32, ValueError> {
            let ok = !p.is_empty()
                && p.chars().all(|c| c.is_ascii_digit())
                && (p == "0" || !p.starts_with('0'));
            if ok {
                p.parse().map_err(|_| malformed())
            } else {
                Err(malformed())
            }
        };
        let v = KubeVersion {
            major: num(major)?,
            minor: num(minor)?,
            patch: num(patch)?,
        };
        if v.major != 1 || v.minor < MIN_MINOR {
            return Err(ValueError(format!(
                "{s} cannot be rendered: kubeadm config v1beta3 needs v1.{MIN_MINOR}.0 or later"
            )));
        }
        if v.minor > MAX_MINOR {
            return Err(ValueError(format!(
                "{s} is newer than this project knows: its kubeadm image tags are known up to v1.{MAX_MINOR}"
            )));
        }
        Ok(v)
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

serde_via_str!(KubeVersion);
