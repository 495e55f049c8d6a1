//! `images import`: OCI archives, OCI layouts and `docker save` archives into the store. Every
//! input is staged and verified completely before anything is committed, so a refused import
//! leaves the store as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::media::{self, Descriptor, MAX_MANIFEST_BYTES};
use super::refs::{Digest, ImageName, RefError};
use super::source::{self, Tree};
use super::store::{ManifestInfo, NewImage, Staged, Store, StoreError};

const NAME_ANNOTATION: &str = "io.containerd.image.name";
const REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}: not a tar archive or image layout ({reason})", file.display())]
    NotAnArchive { file: PathBuf, reason: String },
    #[error("{}: archive is truncated{}", file.display(), at(entry))]
    Truncated { file: PathBuf, entry: String },
    #[error("{}: archive is corrupt: {reason}", file.display())]
    Corrupt { file: PathBuf, reason: String },
    #[error("{}: entry {entry:?} points outside the archive", file.display())]
    PathTraversal { file: PathBuf, entry: String },
    #[error("{}: entry {entry:?} is a {kind} entry, not a file, directory or link", file.display())]
    UnsupportedEntry {
        file: PathBuf,
        entry: String,
        kind: String,
    },
    #[error("{}: {entry} does not match its digest: its content hashes to {actual}", file.display())]
    DigestMismatch {
        file: PathBuf,
        entry: String,
        actual: Digest,
    },
    #[error("{}: blob {digest} is {actual} bytes, its descriptor says {expected}", file.display())]
    SizeMismatch {
        file: PathBuf,
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("{}: blob {digest} (referenced by {parent}) is missing", file.display())]
    MissingBlob {
        file: PathBuf,
        digest: Digest,
        parent: String,
    },
    #[error("{}: {entry} is listed in manifest.json but missing", file.display())]
    MissingEntry { file: PathBuf, entry: String },
    #[error("{}: manifest {digest} is {size} bytes, over the 4 MiB limit", file.display())]
    ManifestTooLarge {
        file: PathBuf,
        digest: Digest,
        size: u64,
    },
    #[error("{}: {source}", file.display())]
    Manifest {
        file: PathBuf,
        source: media::ManifestError,
    },
    #[error("{}: {entry} is not valid: {reason}", file.display())]
    BadDocument {
        file: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("{}: no index.json and oci-layout, nor manifest.json: not an OCI layout or docker save archive", file.display())]
    UnknownLayout { file: PathBuf },
    #[error("{}: image {digest} has no name (only {hint:?}): give --name", file.display())]
    NoName {
        file: PathBuf,
        digest: Digest,
        hint: String,
    },
    #[error("{}: {source}", file.display())]
    Name { file: PathBuf, source: RefError },
    #[error("--name needs exactly one input holding exactly one image; {0} images were found")]
    NameAmbiguous(usize),
    #[error("{}: layer {index} of {config} hashes to {actual}, the config's diff_id is {expected}", file.display())]
    DiffId {
        file: PathBuf,
        config: String,
        index: usize,
        actual: Digest,
        expected: String,
    },
}

fn at(entry: &str) -> String {
    if entry.is_empty() {
        String::new()
    } else {
        format!(" in entry {entry}")
    }
}

impl ImportError {
    pub fn io(what: &'static str, path: &Path, source: std::io::Error) -> ImportError {
        ImportError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// One image found in an input, before naming.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub names: Vec<ImageName>,
    /// A tag-only `org.opencontainers.image.ref.name`, used with a `--name` lacking a tag.
    pub tag_hint: Option<String>,
    pub digest: Digest,
    pub reachable: BTreeSet<Digest>,
}

/// Everything verified from all inputs, ready to become a [`Staged`].
#[derive(Debug, Default)]
pub(crate) struct Verified {
    pub blobs: BTreeMap<Digest, PathBuf>,
    pub manifests: BTreeMap<Digest, ManifestInfo>,
    pub found: Vec<(PathBuf, Found)>,
}

/// What an import added, for the caller to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub name: String,
    pub digest: Digest,
}

/// Imports `inputs` into `store` as one unit: all of them or nothing.
pub fn import(
    store: &Store,
    inputs: &[PathBuf],
    name: Option<&str>,
) -> Result<Vec<Imported>, ImportError> {
    let dir = store.staging_dir()?;
    let mut verified = Verified::default();
    for (i, input) in inputs.iter().enumerate() {
        let into = dir.path().join(format!("in{i}"));
        std::fs::create_dir(&into).map_err(|e| ImportError::io("creating", &into, e))?;
        let tree = source::stage(input, &into)?;
        read_layout(input, &tree, &into, &mut verified)?;
    }
    let images = name_images(&verified.found, name)?;
    let imported: Vec<Imported> = images
        .iter()
        .map(|i| Imported {
            name: match &i.tag {
                Some(t) => format!("{}:{t}", i.repo),
                None => i.repo.to_string(),
            },
            digest: i.digest.clone(),
        })
        .collect();
    for i in &imported {
        tracing::info!(image = %i.name, digest = %i.digest, "imported");
    }
    store.commit(Staged {
        dir,
        blobs: verified.blobs,
        manifests: verified.manifests,
        images,
    })?;
    Ok(imported)
}

/// Reads the image layout (OCI first; a docker save archive otherwise) of a staged input.
pub(crate) fn read_layout(
    input: &Path,
    tree: &Tree,
    scratch: &Path,
    out: &mut Verified,
) -> Result<(), ImportError> {
    if tree.get("index.json").is_some() && tree.get("oci-layout").is_some() {
        let index = read_json_file(input, tree, "index.json")?;
        let index: media::Index = parse_json(input, "index.json", &index)?;
        for top in &index.manifests {
            let found = walk_image(input, tree, top, out)?;
            out.found.push((input.to_path_buf(), found));
        }
        return Ok(());
    }
    if tree.get("manifest.json").is_some() {
        return super::docker::read_docker_save(input, tree, scratch, out);
    }
    Err(ImportError::UnknownLayout {
        file: input.to_path_buf(),
    })
}

pub(crate) fn read_json_file(
    input: &Path,
    tree: &Tree,
    name: &str,
) -> Result<Vec<u8>, ImportError> {
    let f = tree.get(name).ok_or_else(|| ImportError::UnknownLayout {
        file: input.to_path_buf(),
    })?;
    if f.size > MAX_MANIFEST_BYTES * 4 {
        return Err(ImportError::BadDocument {
            file: input.to_path_buf(),
            entry: name.to_string(),
            reason: format!("{} bytes is too large", f.size),
        });
    }
    std::fs::read(&f.path).map_err(|e| ImportError::io("reading", &f.path, e))
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    input: &Path,
    entry: &str,
    bytes: &[u8],
) -> Result<T, ImportError> {
    serde_json::from_slice(bytes).map_err(|e| ImportError::BadDocument {
        file: input.to_path_buf(),
        entry: entry.to_string(),
        reason: e.to_string(),
    })
}

/// Verifies the whole tree under `top` (every blob present with its size, manifests parsed and
/// within 4 MiB, media types known) and records it in `out`.
fn walk_image(
    input: &Path,
    tree: &Tree,
    top: &Descriptor,
    out: &mut Verified,
) -> Result<Found, ImportError> {
    if media::manifest_kind(&top.media_type).is_none() {
        return Err(ImportError::Manifest {
            file: input.to_path_buf(),
            source: media::ManifestError::UnknownMediaType {
                media_type: top.media_type.clone(),
                digest: top.digest.clone(),
                parent: "index.json".to_string(),
            },
        });
    }
    let mut reachable = BTreeSet::new();
    let mut todo = vec![(top.clone(), "index.json".to_string())];
    while let Some((d, parent)) = todo.pop() {
        if !reachable.insert(d.digest.clone()) {
            continue;
        }
        let blob = tree
            .blob(&d.digest)
            .ok_or_else(|| ImportError::MissingBlob {
                file: input.to_path_buf(),
                digest: d.digest.clone(),
                parent: parent.clone(),
            })?;
        check_size(input, &d, blob.size)?;
        out.blobs.insert(d.digest.clone(), blob.path.clone());
        if media::manifest_kind(&d.media_type).is_none() {
            continue;
        }
        let bytes =
            std::fs::read(&blob.path).map_err(|e| ImportError::io("reading", &blob.path, e))?;
        let kids = media::children(&d.digest, &d.media_type, &bytes).map_err(|source| {
            ImportError::Manifest {
                file: input.to_path_buf(),
                source,
            }
        })?;
        out.manifests.insert(
            d.digest.clone(),
            ManifestInfo {
                media_type: d.media_type.clone(),
                size: d.size,
            },
        );
        todo.extend(kids.into_iter().map(|k| (k, d.digest.to_string())));
    }
    let (names, tag_hint) = names_of(input, top)?;
    Ok(Found {
        names,
        tag_hint,
        digest: top.digest.clone(),
        reachable,
    })
}

fn check_size(input: &Path, d: &Descriptor, actual: u64) -> Result<(), ImportError> {
    let is_manifest = media::manifest_kind(&d.media_type).is_some();
    if is_manifest && actual > MAX_MANIFEST_BYTES {
        return Err(ImportError::ManifestTooLarge {
            file: input.to_path_buf(),
            digest: d.digest.clone(),
            size: actual,
        });
    }
    if actual != d.size {
        return Err(ImportError::SizeMismatch {
            file: input.to_path_buf(),
            digest: d.digest.clone(),
            expected: d.size,
            actual,
        });
    }
    Ok(())
}

/// The names an index.json entry carries: containerd's full name, or the OCI ref name when it is
/// a full name; a bare tag is only a hint.
fn names_of(
    input: &Path,
    top: &Descriptor,
) -> Result<(Vec<ImageName>, Option<String>), ImportError> {
    let parse = |s: &str| {
        ImageName::parse(s).map_err(|source| ImportError::Name {
            file: input.to_path_buf(),
            source,
        })
    };
    let ref_name = top.annotations.get(REF_ANNOTATION);
    if let Some(full) = top.annotations.get(NAME_ANNOTATION) {
        return Ok((vec![parse(full)?], ref_name.cloned()));
    }
    match ref_name {
        Some(r) if r.contains('/') || r.contains(':') => Ok((vec![parse(r)?], None)),
        Some(tag) => Ok((vec![], Some(tag.clone()))),
        None => Ok((vec![], None)),
    }
}

/// Turns what was found into named images, applying `--name` when given.
fn name_images(
    found: &[(PathBuf, Found)],
    name: Option<&str>,
) -> Result<Vec<NewImage>, ImportError> {
    if let Some(name) = name {
        let [(file, f)] = found else {
            return Err(ImportError::NameAmbiguous(found.len()));
        };
        let mut n = ImageName::parse(name).map_err(|source| ImportError::Name {
            file: file.clone(),
            source,
        })?;
        if n.tag.is_none() {
            n.tag = f
                .tag_hint
                .as_deref()
                .and_then(|t| super::refs::Tag::parse(t).ok());
        }
        return Ok(vec![new_image(n, f)]);
    }
    let mut images = Vec::new();
    for (file, f) in found {
        if f.names.is_empty() {
            return Err(ImportError::NoName {
                file: file.clone(),
                digest: f.digest.clone(),
                hint: f.tag_hint.clone().unwrap_or_default(),
            });
        }
        images.extend(f.names.iter().map(|n| new_image(n.clone(), f)));
    }
    Ok(images)
}

fn new_image(mut name: ImageName, f: &Found) -> NewImage {
    if name.tag.is_none() {
        name.tag = super::refs::Tag::parse("latest").ok();
    }
    NewImage {
        repo: name.repo,
        tag: name.tag,
        digest: f.digest.clone(),
        reachable: f.reachable.clone(),
    }
}
