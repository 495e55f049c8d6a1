//! Release archives as their publishers ship them: the Kubernetes server or node archive, the
//! cri-tools archive and the CNI plugins archive, each gzip-compressed tar pinned by sha256.
//!
//! Only the files the image needs are taken out, into the cache under the archive's sha256
//! (made beside and renamed into place, so a cached directory is always whole): a second build
//! from the same archive does not unpack it again. The Kubernetes version is read from the
//! archive, by `kubeadm version -o short`, and each control-plane image's own tag (the
//! `RepoTags` of its `docker save` archive) must agree with it.
//!
//! The server archive's images are tagged as the release built them,
//! `registry.k8s.io/<component>-<arch>:<version>`; kubeadm pulls `<imageRepository>/<component>:
//! <version>`. [`write_images`] writes them into one `docker save` archive under the names kubeadm
//! pulls, for `launcher-seed images import`.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use cluster::spec::KubeVersion;
use oci::SaveEntry;

use crate::definition::ReleaseKind;

/// The registry the release's images are named under, and the one kubeadm pulls from by
/// default; the seed's store drops the host, so `<seed>/<component>:<tag>` finds them.
pub const UPSTREAM_REGISTRY: &str = "registry.k8s.io";
/// The architecture suffix the release puts on image names (`kube-apiserver-amd64`).
const ARCH_SUFFIX: &str = "-amd64";
/// No single file of a release archive is larger than this (kube-apiserver's image is ~100 MiB).
const MAX_FILE: u64 = 2 << 30;

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{}: {message}", archive.display())]
    Archive { archive: PathBuf, message: String },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ReleaseError + use<> {
    let path = path.to_path_buf();
    move |source| ReleaseError::Io { what, path, source }
}

fn bad(archive: &Path, message: impl Into<String>) -> ReleaseError {
    ReleaseError::Archive {
        archive: archive.to_path_buf(),
        message: message.into(),
    }
}

/// What a Kubernetes release archive gives the image.
#[derive(Debug, Clone)]
pub struct Release {
    pub version: KubeVersion,
    pub kubeadm: PathBuf,
    pub kubelet: PathBuf,
    pub kubectl: PathBuf,
    /// The control-plane images (server archives only), sorted by name.
    pub images: Vec<ReleaseImage>,
}

/// One image archive of a server release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseImage {
    /// The component, as kubeadm names its image (`kube-apiserver`).
    pub name: String,
    pub tag: String,
    /// The `docker save` archive in the unpacked release.
    pub archive: PathBuf,
}

impl ReleaseImage {
    /// The name kubeadm pulls without an `imageRepository`: `registry.k8s.io/<name>:<tag>`.
    pub fn reference(&self) -> String {
        format!("{UPSTREAM_REGISTRY}/{}:{}", self.name, self.tag)
    }
}

/// A file name the image may keep: one path component of ordinary characters.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
}

/// Takes the regular files `select` names (entry path, without a leading `./`, to file name)
/// out of the gzip tar `archive` into `into`, mode 0755 when any execute bit is set and 0644
/// otherwise. Returns the names taken, with whether each is executable.
fn take(
    archive: &Path,
    into: &Path,
    select: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, bool)>, ReleaseError> {
    let file = fs::File::open(archive).map_err(io_err("opening", archive))?;
    let mut magic = [0u8; 2];
    (&file).read_exact(&mut magic).map_err(|_| {
        bad(
            archive,
            "not a gzip-compressed tar archive (it is too short)",
        )
    })?;
    if magic != [0x1f, 0x8b] {
        return Err(bad(archive, "not a gzip-compressed tar archive"));
    }
    let file = fs::File::open(archive).map_err(io_err("opening", archive))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(file)));
    let mut taken: Vec<(String, bool)> = Vec::new();
    let entries = tar
        .entries()
        .map_err(|e| bad(archive, format!("reading the tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(archive, format!("reading the tar: {e}")))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = raw.trim_start_matches("./");
        let Some(name) = select(path) else {
            continue;
        };
        if !entry.header().entry_type().is_file() {
            return Err(bad(archive, format!("{raw} is not a regular file")));
        }
        if taken.iter().any(|(n, _)| *n == name) {
            return Err(bad(archive, format!("{raw} appears twice")));
        }
        let size = entry.header().size().unwrap_or(u64::MAX);
        if size > MAX_FILE {
            return Err(bad(
                archive,
                format!("{raw} is {size} bytes, more than the {MAX_FILE} a release file may be"),
            ));
        }
        let exec = entry.header().mode().unwrap_or(0) & 0o111 != 0;
        let to = into.join(&name);
        let mut out = fs::File::create(&to).map_err(io_err("creating", &to))?;
        io::copy(&mut (&mut entry).take(MAX_FILE), &mut out)
            .map_err(|e| bad(archive, format!("reading {raw}: {e}")))?;
        out.sync_all().map_err(io_err("syncing", &to))?;
        set_mode(&to, if exec { 0o755 } else { 0o644 })?;
        taken.push((name, exec));
    }
    taken.sort();
    Ok(taken)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ReleaseError> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_err("setting mode", path))
}

/// The unpacked files of `archive` (pinned by `sha256`), from the cache or made now under
/// `cache/archives/<sha256>/`.
fn cached(
    archive: &Path,
    sha256: &str,
    cache: &Path,
    select: impl Fn(&str) -> Option<String>,
) -> Result<PathBuf, ReleaseError> {
    let parent = cache.join("archives");
    let dir = parent.join(sha256);
    if dir.is_dir() {
        return Ok(dir);
    }
    fs::create_dir_all(&parent).map_err(io_err("creating", &parent))?;
    let tmp = parent.join(format!(".tmp-{}-{sha256}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp).map_err(io_err("creating", &tmp))?;
    let result = take(archive, &tmp, select)
        .and_then(|_| fs::rename(&tmp, &dir).map_err(io_err("moving into place", &dir)));
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result.map(|_| dir)
}

/// The binaries and images of a Kubernetes release archive, and its version.
pub fn kubernetes(
    kind: ReleaseKind,
    archive: &Path,
    sha256: &str,
    cache: &Path,
) -> Result<Release, ReleaseError> {
    let prefix = match kind {
        ReleaseKind::Server => "kubernetes/server/bin/",
        ReleaseKind::Node => "kubernetes/node/bin/",
    };
    let select = |path: &str| {
        let name = path.strip_prefix(prefix)?;
        let wanted = matches!(name, "kubeadm" | "kubelet" | "kubectl")
            || (kind == ReleaseKind::Server && name.ends_with(".tar"));
        (wanted && plain_name(name)).then(|| name.to_string())
    };
    let dir = cached(archive, sha256, cache, select)?;
    for name in ["kubeadm", "kubelet", "kubectl"] {
        if !dir.join(name).is_file() {
            return Err(bad(
                archive,
                format!(
                    "has no {prefix}{name}: is it the Kubernetes {} release archive?",
                    kind.field()
                ),
            ));
        }
    }
    let version = kubeadm_version(archive, &dir.join("kubeadm"))?;
    let mut images = Vec::new();
    let mut names: Vec<PathBuf> = fs::read_dir(&dir)
        .map_err(io_err("reading", &dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tar"))
        .collect();
    names.sort();
    for path in names {
        let image = image_of(archive, &path)?;
        if image.tag != version.to_string() {
            return Err(bad(
                archive,
                format!(
                    "image {} is tagged {}, but its kubeadm is {version}",
                    image.name, image.tag
                ),
            ));
        }
        images.push(image);
    }
    if kind == ReleaseKind::Server && images.is_empty() {
        return Err(bad(
            archive,
            format!("has no image archives ({prefix}*.tar) beside its binaries"),
        ));
    }
    Ok(Release {
        version,
        kubeadm: dir.join("kubeadm"),
        kubelet: dir.join("kubelet"),
        kubectl: dir.join("kubectl"),
        images,
    })
}

/// What `kubeadm version -o short` prints, as a version.
fn kubeadm_version(archive: &Path, kubeadm: &Path) -> Result<KubeVersion, ReleaseError> {
    let out = std::process::Command::new(kubeadm)
        .args(["version", "-o", "short"])
        .output()
        .map_err(|e| {
            bad(
                archive,
                format!("running its kubeadm version -o short: {e}"),
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let said = text.trim();
    if !out.status.success() {
        return Err(bad(
            archive,
            format!(
                "its kubeadm version -o short failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    said.parse::<KubeVersion>().map_err(|e| {
        bad(
            archive,
            format!("its kubeadm version -o short said {said:?}: {e}"),
        )
    })
}

/// The only `manifest.json` entry of a `docker save` archive.
fn save_entry(path: &Path) -> Result<SaveEntry, ReleaseError> {
    let file = fs::File::open(path).map_err(io_err("opening", path))?;
    let mut tar = tar::Archive::new(file);
    let entries = tar
        .entries_with_seek()
        .map_err(|e| bad(path, format!("reading the tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(path, format!("reading the tar: {e}")))?;
        if entry.path_bytes().as_ref() != b"manifest.json" {
            continue;
        }
        let mut text = Vec::new();
        (&mut entry)
            .take(1 << 20)
            .read_to_end(&mut text)
            .map_err(|e| bad(path, format!("reading manifest.json: {e}")))?;
        let entries: Vec<SaveEntry> =
            serde_json::from_slice(&text).map_err(|e| bad(path, format!("manifest.json: {e}")))?;
        let [entry] = entries.as_slice() else {
            return Err(bad(
                path,
                format!(
                    "manifest.json lists {} images; a release image archive holds one",
                    entries.len()
                ),
            ));
        };
        return Ok(entry.clone());
    }
    Err(bad(path, "has no manifest.json: not a docker save archive"))
}

/// The component and tag an image archive names itself with: `<registry>/<name>-amd64:<tag>`.
fn image_of(archive: &Path, path: &Path) -> Result<ReleaseImage, ReleaseError> {
    let file = path.file_name().unwrap_or_default().to_string_lossy();
    let entry = save_entry(path).map_err(|e| bad(archive, format!("{file}: {e}")))?;
    let tags = entry.repo_tags.unwrap_or_default();
    let [reference] = tags.as_slice() else {
        return Err(bad(
            archive,
            format!(
                "{file} names {} images ({tags:?}); a release image names one",
                tags.len()
            ),
        ));
    };
    let parsed = reference.rsplit_once(':').and_then(|(repo, tag)| {
        let last = repo.rsplit('/').next()?;
        let name = last.strip_suffix(ARCH_SUFFIX).unwrap_or(last);
        (!tag.contains('/') && plain_name(name) && plain_name(tag))
            .then(|| (name.to_string(), tag.to_string()))
    });
    let Some((name, tag)) = parsed else {
        return Err(bad(
            archive,
            format!("{file} is named {reference:?}, not REGISTRY/NAME:TAG"),
        ));
    };
    Ok(ReleaseImage {
        name,
        tag,
        archive: path.to_path_buf(),
    })
}

/// `crictl` out of the cri-tools archive.
pub fn crictl(archive: &Path, sha256: &str, cache: &Path) -> Result<PathBuf, ReleaseError> {
    let dir = cached(archive, sha256, cache, |p| {
        (p == "crictl").then(|| "crictl".to_string())
    })?;
    let path = dir.join("crictl");
    if !path.is_file() {
        return Err(bad(
            archive,
            "has no crictl: is it the cri-tools release archive?",
        ));
    }
    Ok(path)
}

/// The plugins of the CNI plugins archive: every executable at its top level, by name.
pub fn cni_plugins(
    archive: &Path,
    sha256: &str,
    cache: &Path,
) -> Result<Vec<(String, PathBuf)>, ReleaseError> {
    let dir = cached(archive, sha256, cache, |p| {
        plain_name(p).then(|| p.to_string())
    })?;
    let mut plugins = Vec::new();
    for entry in fs::read_dir(&dir)
        .map_err(io_err("reading", &dir))?
        .flatten()
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = entry.metadata().map_err(io_err("reading", &entry.path()))?;
        if meta.permissions().mode() & 0o111 != 0 {
            plugins.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            ));
        }
    }
    plugins.sort();
    if plugins.is_empty() {
        return Err(bad(
            archive,
            "has no executable at its top level: is it the CNI plugins release archive?",
        ));
    }
    Ok(plugins)
}

/// Writes `images` as one `docker save` archive to `w`, each named as kubeadm pulls it
/// ([`ReleaseImage::reference`]): `manifest.json` first, then each config and layer once, in the
/// order of the images and of their own archives. Same inputs, same bytes.
pub fn write_images(images: &[ReleaseImage], epoch: u64, w: impl Write) -> io::Result<()> {
    let mut entries = Vec::new();
    for image in images {
        let mut entry = save_entry(&image.archive).map_err(io::Error::other)?;
        entry.repo_tags = Some(vec![image.reference()]);
        entries.push(entry);
    }
    let mut tar = tar::Builder::new(w);
    let manifest = serde_json::to_vec(&entries).map_err(io::Error::other)?;
    append(
        &mut tar,
        "manifest.json",
        manifest.len() as u64,
        epoch,
        &manifest[..],
    )?;
    let mut written = BTreeSet::new();
    for (image, entry) in images.iter().zip(&entries) {
        let wanted: BTreeSet<&str> = entry
            .layers
            .iter()
            .chain([&entry.config])
            .map(String::as_str)
            .collect();
        let mut found = BTreeSet::new();
        let mut source = tar::Archive::new(fs::File::open(&image.archive)?);
        for file in source.entries_with_seek()? {
            let file = file?;
            let path = String::from_utf8_lossy(&file.path_bytes()).into_owned();
            if !wanted.contains(path.as_str()) || !file.header().entry_type().is_file() {
                continue;
            }
            found.insert(path.clone());
            // blobs are named by their content: the same path twice is the same bytes
            if written.insert(path.clone()) {
                let size = file.header().size()?;
                append(&mut tar, &path, size, epoch, file)?;
            }
        }
        if let Some(missing) = wanted.iter().find(|p| !found.contains(**p)) {
            return Err(io::Error::other(format!(
                "{}: manifest.json names {missing}, which the archive does not hold",
                image.archive.display()
            )));
        }
    }
    tar.into_inner()?.flush()
}

fn append(
    tar: &mut tar::Builder<impl Write>,
    path: &str,
    size: u64,
    epoch: u64,
    data: impl Read,
) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(epoch);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, path, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_one_ordinary_component() {
        for ok in ["kubeadm", "kube-apiserver.tar", "v1.33.4", "v1.33.4_abc+1"] {
            assert!(plain_name(ok), "{ok}");
        }
        for no in ["", ".", "..", "a/b", "a b", "x\0"] {
            assert!(!plain_name(no), "{no:?}");
        }
    }
}
