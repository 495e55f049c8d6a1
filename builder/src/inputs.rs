//! The definition's inputs besides the base: the firstboot binary and unit, the node binaries,
//! container images and the overlay. Each is recorded for the manifest, and a pinned one must
//! match its pin before anything is built.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::definition::{Bundle, BundleSource, Definition, Sha256Hex};
use crate::layout::{OverlayItem, Resolved};
use crate::manifest::{self, FileRecord};
use crate::release::{self, ReleaseImage};
use crate::stage;

/// Firstboot's own unit, used when the definition names none.
pub const DEFAULT_FIRSTBOOT_UNIT: &str =
    include_str!("../../firstboot/dist/launcher-firstboot.service");

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{what}: sha256 is {actual}, the definition pins {pinned}")]
    Mismatch {
        what: String,
        actual: String,
        pinned: String,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    Stage(#[from] stage::StageError),
    #[error(transparent)]
    Release(#[from] release::ReleaseError),
    #[error("{0}")]
    Input(String),
}

fn io_err(what: impl Into<String>, path: &Path) -> impl FnOnce(io::Error) -> InputError + '_ {
    let what = what.into();
    move |source| InputError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Checks `path` against its pin and returns its record.
pub fn pinned(role: &str, path: &Path, pin: &Sha256Hex) -> Result<FileRecord, InputError> {
    let rec = manifest::record(role, path, &path.display().to_string())
        .map_err(io_err(format!("reading {role}"), path))?;
    if rec.sha256 != pin.as_str() {
        return Err(InputError::Mismatch {
            what: format!("{role} {}", path.display()),
            actual: rec.sha256,
            pinned: pin.to_string(),
        });
    }
    Ok(rec)
}

/// The firstboot binary and unit, the node binaries, the container images and the overlay, each
/// recorded in `inputs` (pinned ones checked against their pin). Release archives are unpacked
/// under `cache`.
pub fn resolve(
    def: &Definition,
    bin_dir: &Path,
    cache: &Path,
    inputs: &mut Vec<FileRecord>,
) -> Result<Resolved, InputError> {
    let firstboot_binary = match &def.firstboot.binary {
        Some(p) => p.clone(),
        None => workspace_bin(bin_dir, "launcher-firstboot")?,
    };
    let firstboot_unit = match &def.firstboot.unit {
        Some(p) => fs::read_to_string(p).map_err(io_err("reading firstboot unit", p))?,
        None => DEFAULT_FIRSTBOOT_UNIT.to_string(),
    };
    let Binaries {
        files: [kubeadm, kubelet, kubectl],
        release_images,
    } = bundle(&def.bundle, bin_dir, cache, inputs)?;
    let tools = tools(&def.bundle, cache, inputs)?;
    let mut ours = |role: &str, path: &Path| -> Result<PathBuf, InputError> {
        let rec = record(role, path)?;
        let slim = without_debug(path, &rec.sha256, cache)?;
        inputs.push(rec);
        Ok(slim)
    };
    let firstboot_binary = ours("firstboot", &firstboot_binary)?;
    let (kubeadm, kubelet) = if matches!(def.bundle.source, BundleSource::Standins { .. }) {
        (
            ours("kubeadm (stand-in)", &kubeadm)?,
            ours("kubelet (stand-in)", &kubelet)?,
        )
    } else {
        (kubeadm, kubelet)
    };
    let mut images = Vec::new();
    for image in &def.images {
        inputs.push(pinned("container image", &image.archive, &image.sha256)?);
        images.push((image.name.clone(), image.archive.clone()));
    }
    let overlay: Vec<OverlayItem> = match &def.overlay {
        Some(o) => stage::scan_overlay(&o.dir)?,
        None => vec![],
    };
    Ok(Resolved {
        firstboot_binary,
        firstboot_unit,
        kubeadm,
        kubelet,
        kubectl,
        tools,
        release_images,
        images,
        overlay,
    })
}

/// `kubeadm`, `kubelet`, `kubectl`, and the control-plane images a server release carries.
struct Binaries {
    files: [PathBuf; 3],
    release_images: Vec<ReleaseImage>,
}

/// `kubeadm`, `kubelet` and `kubectl` of the bundle; the pinned ones (and the host's kubectl
/// beside the stand-ins) are checked and recorded in `inputs`. A release archive must be of the
/// version the definition names.
fn bundle(
    bundle: &Bundle,
    bin_dir: &Path,
    cache: &Path,
    inputs: &mut Vec<FileRecord>,
) -> Result<Binaries, InputError> {
    let binaries = |files| Binaries {
        files,
        release_images: vec![],
    };
    match &bundle.source {
        BundleSource::Standins {
            kubectl,
            kubectl_sha256,
        } => {
            inputs.push(match kubectl_sha256 {
                Some(pin) => pinned("kubectl", kubectl, pin)?,
                None => record("kubectl", kubectl)?,
            });
            Ok(binaries([
                workspace_bin(bin_dir, "kubeadm-standin")?,
                workspace_bin(bin_dir, "kubelet-standin")?,
                kubectl.clone(),
            ]))
        }
        BundleSource::Dir { dir, sums } => {
            let files = [
                dir.join("kubeadm"),
                dir.join("kubelet"),
                dir.join("kubectl"),
            ];
            let pins = [&sums.kubeadm, &sums.kubelet, &sums.kubectl];
            for (role, (path, pin)) in ["kubeadm", "kubelet", "kubectl"]
                .iter()
                .zip(files.iter().zip(pins))
            {
                inputs.push(pinned(role, path, pin)?);
            }
            Ok(binaries(files))
        }
        BundleSource::Release { kind, archive } => {
            let role = format!("kubernetes {} release", kind.field());
            inputs.push(pinned(&role, &archive.path, &archive.sha256)?);
            let r = release::kubernetes(*kind, &archive.path, archive.sha256.as_str(), cache)?;
            if r.version != bundle.version {
                return Err(InputError::Input(format!(
                    "bundle.version is {}, but the {role} archive {} is {} (its kubeadm says so): \
                     name the version the archive holds",
                    bundle.version,
                    archive.path.display(),
                    r.version
                )));
            }
            Ok(Binaries {
                files: [r.kubeadm, r.kubelet, r.kubectl],
                release_images: r.images,
            })
        }
    }
}

/// `crictl` and the CNI plugins from their release archives, as `(path in the image, file)`.
fn tools(
    bundle: &Bundle,
    cache: &Path,
    inputs: &mut Vec<FileRecord>,
) -> Result<Vec<(String, PathBuf)>, InputError> {
    let mut tools = Vec::new();
    if let Some(a) = &bundle.crictl {
        inputs.push(pinned("cri-tools release", &a.path, &a.sha256)?);
        let crictl = release::crictl(&a.path, a.sha256.as_str(), cache)?;
        tools.push(("/usr/bin/crictl".to_string(), crictl));
    }
    if let Some(a) = &bundle.cni {
        inputs.push(pinned("CNI plugins release", &a.path, &a.sha256)?);
        for (name, file) in release::cni_plugins(&a.path, a.sha256.as_str(), cache)? {
            tools.push((format!("/opt/cni/bin/{name}"), file));
        }
    }
    Ok(tools)
}

/// A binary of this project (firstboot, the stand-ins) as the image carries it: without its debug
/// sections (`objcopy --strip-debug`; the symbols stay, for backtraces), which a development
/// build has more of than code and every boot would download. Made once into the cache under
/// the original's sha256, beside its place and renamed into it whole. A file that is not ELF
/// (a script) goes in as it is. Release binaries are never rewritten: they go in as pinned.
pub fn without_debug(path: &Path, sha256: &str, cache: &Path) -> Result<PathBuf, InputError> {
    let mut magic = [0u8; 4];
    let is_elf = fs::File::open(path)
        .and_then(|mut f| io::Read::read_exact(&mut f, &mut magic))
        .map(|()| magic == *b"\x7fELF")
        .unwrap_or(false);
    if !is_elf {
        return Ok(path.to_path_buf());
    }
    let dir = cache.join("stripped");
    let out = dir.join(sha256);
    if out.is_file() {
        return Ok(out);
    }
    fs::create_dir_all(&dir).map_err(io_err("making", &dir))?;
    let partial = dir.join(format!("{sha256}.partial"));
    crate::tools::run(
        std::process::Command::new("objcopy")
            .arg("--strip-debug")
            .arg(path)
            .arg(&partial),
    )
    .map_err(|e| InputError::Input(format!("stripping {}: {e}", path.display())))?;
    fs::rename(&partial, &out).map_err(io_err("renaming into place", &out))?;
    Ok(out)
}

/// A binary of this workspace, next to `launcher-build` unless `--bin-dir` says otherwise.
fn workspace_bin(bin_dir: &Path, name: &str) -> Result<PathBuf, InputError> {
    let p = bin_dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(InputError::Input(format!(
            "{} is missing: build the workspace first (cargo build --workspace)",
            p.display()
        )))
    }
}

/// The record of an unpinned input.
pub fn record(role: &str, path: &Path) -> Result<FileRecord, InputError> {
    manifest::record(role, path, &path.display().to_string())
        .map_err(io_err(format!("reading {role}"), path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::BundleSums;

    fn pin(bytes: &[u8]) -> Sha256Hex {
        use sha2::Digest as _;
        Sha256Hex::parse(&hex::encode(sha2::Sha256::digest(bytes))).unwrap()
    }

    fn with(source: BundleSource) -> Bundle {
        Bundle {
            version: "v1.33.4".parse().unwrap(),
            source,
            crictl: None,
            cni: None,
        }
    }

    #[test]
    fn bundles_are_pinned_recorded_or_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for name in ["kubeadm", "kubelet", "kubectl"] {
            fs::write(dir.join(name), name).unwrap();
        }
        let sums = BundleSums {
            kubeadm: pin(b"kubeadm"),
            kubelet: pin(b"kubelet"),
            kubectl: pin(b"kubectl"),
        };
        let mut inputs = vec![];
        let source = with(BundleSource::Dir {
            dir: dir.to_path_buf(),
            sums: sums.clone(),
        });
        let files = bundle(&source, dir, dir, &mut inputs).unwrap().files;
        assert_eq!(files[2], dir.join("kubectl"));
        let roles: Vec<&str> = inputs.iter().map(|r| r.role.as_str()).collect();
        assert_eq!(roles, ["kubeadm", "kubelet", "kubectl"]);

        let bad = with(BundleSource::Dir {
            dir: dir.to_path_buf(),
            sums: BundleSums {
                kubelet: pin(b"other"),
                ..sums.clone()
            },
        });
        let err = bundle(&bad, dir, dir, &mut vec![])
            .err()
            .unwrap()
            .to_string();
        let want = format!(
            "kubelet {}: sha256 is {}, the definition pins {}",
            dir.join("kubelet").display(),
            pin(b"kubelet"),
            pin(b"other")
        );
        assert_eq!(err, want);

        let standins = with(BundleSource::Standins {
            kubectl: dir.join("kubectl"),
            kubectl_sha256: None,
        });
        let err = bundle(&standins, dir, dir, &mut vec![])
            .err()
            .unwrap()
            .to_string();
        let want = format!(
            "{} is missing: build the workspace first (cargo build --workspace)",
            dir.join("kubeadm-standin").display()
        );
        assert_eq!(err, want);
    }
}
