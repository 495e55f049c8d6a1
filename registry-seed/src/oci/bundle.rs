//! `launcher-seed images bundle`: every image a cluster pulls, out of the seed's registry into
//! one OCI image layout, to carry to another seed (`images import DIR` reads it back). Each
//! top manifest is named in `index.json` by `io.containerd.image.name` (the reference hosts
//! pull) and `org.opencontainers.image.ref.name` (its tag). Every blob is hashed as it is
//! copied; the layout is made beside `--out` and renamed into place whole, so `--out` is
//! either the complete bundle or absent.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use cluster::spec::ClusterSpec;
use serde_json::json;
use sha2::Digest as _;

use super::refs::{Digest, ImageName, Reference};
use super::store::{Store, StoreError};
use ::oci::media;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(
        "the seed's registry lacks {} of the images the cluster pulls: {}; import them first (launcher-seed images import)",
        .0.len(),
        .0.join(", ")
    )]
    Missing(Vec<String>),
    #[error("{} already exists: the bundle goes into a new directory", .0.display())]
    OutExists(PathBuf),
    #[error(
        "blob {digest} in the seed's registry does not hash to its name (it hashes to {actual}): the store is damaged; import the image again"
    )]
    Corrupt { digest: Digest, actual: Digest },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Durable(#[from] durable::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] media::ManifestError),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BundleError {
    let path = path.to_path_buf();
    move |source| BundleError::Io { what, path, source }
}

/// What a bundle holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundled {
    pub images: Vec<String>,
    pub blobs: usize,
    pub bytes: u64,
}

/// One image of the bundle: the reference hosts pull, its tag, its top manifest.
struct Top {
    reference: String,
    tag: String,
    digest: Digest,
    media_type: String,
    size: u64,
}

/// Writes the images `spec` pulls from `store` as an OCI layout at `out`, which must not exist.
pub fn bundle(store: &Store, spec: &ClusterSpec, out: &Path) -> Result<Bundled, BundleError> {
    if out.exists() {
        return Err(BundleError::OutExists(out.to_path_buf()));
    }
    let (tops, missing) = resolve_all(store, spec)?;
    if !missing.is_empty() {
        return Err(BundleError::Missing(missing));
    }
    let blobs = reachable(store, &tops)?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out.file_name().unwrap_or_default().to_string_lossy();
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}.partial-"))
        .tempdir_in(&parent)
        .map_err(io("making a directory in", &parent))?;
    let bytes = write_layout(store, staging.path(), &tops, &blobs)?;
    let staged = staging.keep();
    if let Err(e) = fs::rename(&staged, out) {
        let _ = fs::remove_dir_all(&staged);
        return Err(io("moving the bundle to", out)(e));
    }
    durable::sync_dir(&parent)?;
    Ok(Bundled {
        images: tops.into_iter().map(|t| t.reference).collect(),
        blobs: blobs.len(),
        bytes,
    })
}

/// Each required reference's top manifest in the store, and the references it lacks.
fn resolve_all(store: &Store, spec: &ClusterSpec) -> Result<(Vec<Top>, Vec<String>), BundleError> {
    let (mut tops, mut missing) = (Vec::new(), Vec::new());
    for reference in cluster::kubeadm::required_images(spec) {
        let named = ImageName::parse(&reference)
            .ok()
            .and_then(|name| Some((name.repo, name.tag?)));
        let Some((repo, tag)) = named else {
            missing.push(reference);
            continue;
        };
        match store.resolve(&repo, &Reference::Tag(tag.clone()))? {
            Some((digest, info)) => tops.push(Top {
                reference,
                tag: tag.to_string(),
                digest,
                media_type: info.media_type,
                size: info.size,
            }),
            None => missing.push(reference),
        }
    }
    Ok((tops, missing))
}

/// Every digest the images reference, themselves included.
fn reachable(store: &Store, tops: &[Top]) -> Result<BTreeSet<Digest>, BundleError> {
    let catalog = store.catalog()?;
    let mut all = BTreeSet::new();
    let mut todo: Vec<Digest> = tops.iter().map(|t| t.digest.clone()).collect();
    while let Some(digest) = todo.pop() {
        if !all.insert(digest.clone()) {
            continue;
        }
        // Layers and configs are leaves; manifests and indexes are in the catalog.
        let Some(info) = catalog.manifests.get(&digest) else {
            continue;
        };
        let bytes = store.manifest_bytes(&digest)?;
        for child in media::children(&digest, &info.media_type, &bytes)? {
            todo.push(child.digest);
        }
    }
    Ok(all)
}

/// `oci-layout`, the blobs (each hashed on the way), then `index.json`, every file synced.
fn write_layout(
    store: &Store,
    dir: &Path,
    tops: &[Top],
    blobs: &BTreeSet<Digest>,
) -> Result<u64, BundleError> {
    let blob_dir = dir.join("blobs/sha256");
    fs::create_dir_all(&blob_dir).map_err(io("creating", &blob_dir))?;
    let mut bytes = 0;
    for digest in blobs {
        bytes += copy_verified(
            &store.blob_path(digest),
            &blob_dir.join(digest.hex()),
            digest,
        )?;
    }
    let manifests: Vec<serde_json::Value> = tops
        .iter()
        .map(|t| {
            json!({
                "mediaType": t.media_type,
                "digest": t.digest.to_string(),
                "size": t.size,
                "annotations": {
                    "io.containerd.image.name": t.reference,
                    "org.opencontainers.image.ref.name": t.tag,
                },
            })
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    });
    let files = [
        ("oci-layout", json!({"imageLayoutVersion": "1.0.0"})),
        ("index.json", index),
    ];
    for (name, value) in files {
        let path = dir.join(name);
        let text = serde_json::to_vec_pretty(&value).expect("JSON values serialize");
        write_synced(&path, &text)?;
    }
    for d in [&blob_dir, &dir.join("blobs"), &dir.to_path_buf()] {
        durable::sync_dir(d)?;
    }
    Ok(bytes)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), BundleError> {
    let mut file = File::create(path).map_err(io("creating", path))?;
    file.write_all(bytes).map_err(io("writing", path))?;
    file.sync_all().map_err(io("syncing", path))
}

/// Copies `from` to `to`, hashing it on the way: a blob that does not hash to its digest is
/// refused, never carried to another seed.
fn copy_verified(from: &Path, to: &Path, digest: &Digest) -> Result<u64, BundleError> {
    let mut input = File::open(from).map_err(io("reading", from))?;
    let mut output = File::create(to).map_err(io("creating", to))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(io("reading", from))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n]).map_err(io("writing", to))?;
        total += n as u64;
    }
    let actual = Digest::from_hasher(hasher);
    if &actual != digest {
        return Err(BundleError::Corrupt {
            digest: digest.clone(),
            actual,
        });
    }
    output.sync_all().map_err(io("syncing", to))?;
    Ok(total)
}
