//! `manifest.json`: every input and output with its size and sha256, the definition's hash and
//! the versions of the components baked in.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileRecord {
    pub role: String,
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub image: String,
    pub definition: FileRecord,
    pub source_date_epoch: u64,
    pub platform: &'static str,
    pub kubernetes: Kubernetes,
    /// The seed the image enrolls with and trusts, as `firstboot.toml` in it says.
    pub firstboot: Seed,
    pub components: BTreeMap<String, String>,
    pub kernel_cmdline: BTreeMap<String, String>,
    pub identifiers: BTreeMap<String, String>,
    pub inputs: Vec<FileRecord>,
    pub outputs: Vec<FileRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Kubernetes {
    pub version: String,
    /// True when kubeadm and kubelet are the project's stand-ins, not Kubernetes' binaries.
    pub standins: bool,
    /// The control-plane images in `kubernetes-images.tar`, as kubeadm pulls them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Seed {
    pub seed_url: String,
    pub ntp: String,
    pub ca_pin: String,
}

/// Size and sha256 of a file.
pub fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let size = io::copy(&mut file, &mut hasher)?;
    Ok((size, hex::encode(hasher.finalize())))
}

pub fn record(role: &str, path: &Path, shown: &str) -> io::Result<FileRecord> {
    let (size, sha256) = hash_file(path)?;
    Ok(FileRecord {
        role: role.into(),
        path: shown.into(),
        size,
        sha256,
    })
}

/// Versions of the packages that matter, read from a dpkg status file.
pub fn package_versions(status: &str) -> BTreeMap<String, String> {
    const WANTED: [&str; 7] = [
        "systemd",
        "containerd",
        "etcd-server",
        "chrony",
        "runc",
        "libc6",
        "iproute2",
    ];
    let mut out = BTreeMap::new();
    for para in status.split("\n\n") {
        let field = |name: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        let (Some(pkg), Some(version)) = (field("Package:"), field("Version:")) else {
            continue;
        };
        let installed = field("Status:")
            .is_some_and(|s| s.ends_with("installed") && !s.contains("not-installed"));
        if installed && (WANTED.contains(&pkg) || pkg.starts_with("linux-image-")) {
            out.insert(pkg.to_string(), version.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_installed_packages() {
        let status = "Package: systemd\nStatus: install ok installed\nVersion: 252.38-1~deb12u1\n\n\
                      Package: chrony\nStatus: deinstall ok config-files\nVersion: 4.3-2\n\n\
                      Package: linux-image-6.1.0-50-cloud-amd64\nStatus: install ok installed\nVersion: 6.1.158-1\n";
        let v = package_versions(status);
        assert_eq!(
            v.get("systemd").map(String::as_str),
            Some("252.38-1~deb12u1")
        );
        assert!(!v.contains_key("chrony"));
        assert!(v.contains_key("linux-image-6.1.0-50-cloud-amd64"));
    }
}
