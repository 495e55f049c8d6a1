//! Container images of the stand-ins under the names kubeadm's manifests use
//! (`<registry>/kube-apiserver:<version>`, …, and the sandbox image `<registry>/pause:<tag>`):
//! one uncompressed layer holding the stand-in at `/usr/local/bin/<component>` (pause at
//! `/pause`, its entrypoint) and the shared libraries it loads, written as an OCI image
//! layout in a tar that `ctr images import` and `launcher-seed images import` both read. The
//! stand-in is stripped, as release binaries are. Same inputs, same bytes: entries sorted,
//! owners root, every time zero.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The Kubernetes components a stand-in exists for, and the stand-in binary that plays it.
pub const COMPONENTS: [(&str, &str); 3] = [
    ("kube-apiserver", "kube-apiserver-standin"),
    ("kube-controller-manager", "kube-controller-manager-standin"),
    ("kube-scheduler", "kube-scheduler-standin"),
];

/// The directory the component is found in by the image's `PATH`.
const BIN: &str = "usr/local/bin";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ldd {}: {message}", path.display())]
    Ldd { path: PathBuf, message: String },
    #[error("strip {}: {message}", path.display())]
    Strip { path: PathBuf, message: String },
    #[error(
        "kubernetes version {0}: not one this tool knows kubeadm's pause tag of (v1.22 to v1.35)"
    )]
    Version(String),
    #[error(transparent)]
    Write(#[from] durable::Error),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + use<> {
    let path = path.to_path_buf();
    move |source| ImageError::Io { what, path, source }
}

/// The absolute paths of the libraries a dynamic executable loads, from `ldd`'s output
/// (`libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)`, `/lib64/ld-linux-x86-64.so.2 (0x…)`);
/// the vDSO has no file and is skipped.
pub fn ldd_paths(output: &str) -> Vec<String> {
    let mut paths: Vec<String> = output
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let target = match line.split_once("=>") {
                Some((_, right)) => right.trim(),
                None => line,
            };
            let path = target.split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_string())
        })
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

fn libraries(binary: &Path) -> Result<Vec<String>, ImageError> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(io("running ldd on", binary))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() && !text.contains("not a dynamic executable") {
        return Err(ImageError::Ldd {
            path: binary.to_path_buf(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    if let Some(missing) = text.lines().find(|l| l.contains("not found")) {
        return Err(ImageError::Ldd {
            path: binary.to_path_buf(),
            message: missing.trim().to_string(),
        });
    }
    Ok(ldd_paths(&text))
}

/// One file of the layer: its path inside the image and where its bytes come from.
fn layer(files: &BTreeMap<String, PathBuf>) -> Result<Vec<u8>, ImageError> {
    let mut dirs = std::collections::BTreeSet::new();
    for rel in files.keys() {
        let mut at = Path::new(rel).parent();
        while let Some(dir) = at.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(dir.to_string_lossy().into_owned());
            at = dir.parent();
        }
    }
    let mut tar = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    };
    for dir in &dirs {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut h, format!("{dir}/"), std::io::empty())
            .map_err(io("adding to the layer", Path::new(dir)))?;
    }
    for (rel, source) in files {
        let bytes = std::fs::read(source).map_err(io("reading", source))?;
        let mut h = header(tar::EntryType::Regular, 0o755, bytes.len() as u64);
        tar.append_data(&mut h, rel, bytes.as_slice())
            .map_err(io("adding to the layer", source))?;
    }
    tar.into_inner()
        .map_err(io("finishing the layer of", Path::new("-")))
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Writes the OCI layout tar of `reference` (`host/repo:tag`), whose one layer holds `files`,
/// with `entrypoint` (none: the Pod's command says what to run).
fn write_layout(
    reference: &str,
    files: &BTreeMap<String, PathBuf>,
    entrypoint: Option<&str>,
    out: &Path,
) -> Result<(), ImageError> {
    let layer = layer(files)?;
    let layer_digest = sha256(&layer);
    let mut config = json!({"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]});
    if let Some(entrypoint) = entrypoint {
        config["Entrypoint"] = json!([entrypoint]);
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))
    .unwrap_or_default();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
    }))
    .unwrap_or_default();
    let tag = reference
        .rsplit_once(':')
        .map(|(_, t)| t)
        .unwrap_or("latest");
    let mut top = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    top["annotations"] = json!({
        "io.containerd.image.name": reference,
        "org.opencontainers.image.ref.name": tag,
    });
    let index =
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [top]})).unwrap_or_default();
    let mut entries: Vec<(String, Vec<u8>)> = vec![
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".into(), index),
    ];
    for blob in [config, manifest, layer] {
        let name = format!("blobs/sha256/{}", &sha256(&blob)["sha256:".len()..]);
        entries.push((name, blob));
    }
    entries.sort();
    let mut tar = tar::Builder::new(Vec::new());
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        tar.append_data(&mut h, dir, std::io::empty())
            .map_err(io("writing", out))?;
    }
    for (name, bytes) in &entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(bytes.len() as u64);
        h.set_mtime(0);
        tar.append_data(&mut h, name, bytes.as_slice())
            .map_err(io("writing", out))?;
    }
    let bytes = tar.into_inner().map_err(io("writing", out))?;
    durable::write_atomic(out, &bytes, 0o644)?;
    Ok(())
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256(bytes), "size": bytes.len()})
}

/// A copy of `binary` without its symbols and debug information (`strip`), in `dir`: what a
/// release image carries, and a seventh of a debug build's size.
fn strip(binary: &Path, dir: &Path) -> Result<PathBuf, ImageError> {
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let name = binary.file_name().unwrap_or_default().to_string_lossy();
    let copy = dir.join(format!(".{name}.stripped"));
    std::fs::copy(binary, &copy).map_err(io("copying", binary))?;
    let out = std::process::Command::new("strip")
        .arg(&copy)
        .output()
        .map_err(io("running strip on", &copy))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&copy);
        return Err(ImageError::Strip {
            path: binary.to_path_buf(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(copy)
}

/// What was made: the reference and its archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Made {
    pub reference: String,
    pub archive: PathBuf,
}

/// Makes `<registry>/<component>:<version>` for every component whose stand-in is in
/// `bin_dir`, as `<out>/<component>.tar`, and `<registry>/pause:<tag>` (the tag kubeadm pins
/// for `version`) from `pause-standin`, as `<out>/pause.tar`.
pub fn make(
    bin_dir: &Path,
    registry: &str,
    version: &str,
    out: &Path,
) -> Result<Vec<Made>, ImageError> {
    let mut made = Vec::new();
    for (component, standin) in COMPONENTS {
        let reference = format!("{registry}/{component}:{version}");
        let at = format!("{BIN}/{component}");
        made.push(image(bin_dir, standin, &at, None, &reference, out)?);
    }
    let tag = crate::kubeadm::images::pause_tag(version)
        .ok_or_else(|| ImageError::Version(version.to_string()))?;
    let reference = format!("{registry}/pause:{tag}");
    made.push(image(
        bin_dir,
        PAUSE.0,
        PAUSE.1,
        Some("/pause"),
        &reference,
        out,
    )?);
    Ok(made)
}

/// The pause stand-in, and where the image holds it (where the real image has `pause`).
const PAUSE: (&str, &str) = ("pause-standin", "pause");

/// The image `reference` holding `bin_dir/standin` at `at` (and its libraries), written to
/// `<out>/<repository's last part>.tar`.
fn image(
    bin_dir: &Path,
    standin: &str,
    at: &str,
    entrypoint: Option<&str>,
    reference: &str,
    out: &Path,
) -> Result<Made, ImageError> {
    let binary = bin_dir.join(standin);
    if !binary.is_file() {
        return Err(ImageError::Io {
            what: "finding the stand-in",
            path: binary,
            source: std::io::ErrorKind::NotFound.into(),
        });
    }
    let mut files = BTreeMap::new();
    let stripped = strip(&binary, out)?;
    files.insert(at.to_string(), stripped.clone());
    for lib in libraries(&binary)? {
        let rel = lib.trim_start_matches('/').to_string();
        files.insert(rel, PathBuf::from(lib));
    }
    let name = reference
        .rsplit_once(':')
        .map_or(reference, |(repo, _)| repo)
        .rsplit('/')
        .next()
        .unwrap_or(reference);
    let archive = out.join(format!("{name}.tar"));
    write_layout(reference, &files, entrypoint, &archive)?;
    let _ = std::fs::remove_file(&stripped);
    Ok(Made {
        reference: reference.to_string(),
        archive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_library_files_only() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            ldd_paths(out),
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib64/ld-linux-x86-64.so.2",
            ]
        );
    }
}
