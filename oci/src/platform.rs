//! Reducing an OCI archive or layout to one platform: the index is replaced by the platform's
//! manifest and only its blobs are kept, so `ctr images import` takes a multi-platform archive
//! whose other platforms' blobs it would otherwise look for (containerd#11344).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::ReadError;
use crate::media::{self, ConfigPlatform, Descriptor, Kind, Platform};
use crate::refs::Digest;
use crate::source::{self, Tree};

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{}: not an OCI layout (no index.json and oci-layout)", .0.display())]
    NotOciLayout(PathBuf),
    #[error("{}: no manifest for {platform} (found: {found})", file.display())]
    NoMatch {
        file: PathBuf,
        platform: String,
        found: String,
    },
    #[error("{}: blob {digest} is missing", file.display())]
    Missing { file: PathBuf, digest: Digest },
    #[error("{}: {what}: {source}", file.display())]
    Json {
        file: PathBuf,
        what: String,
        source: serde_json::Error,
    },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PlatformError {
    let path = path.to_path_buf();
    move |source| PlatformError::Io { what, path, source }
}

/// Writes to `output` an OCI archive holding, for each image of `input` (an OCI archive or
/// layout), only the manifest for `platform` and its blobs. Returns the kept manifests'
/// descriptors, which carry the input's name annotations.
pub fn reduce_to_platform(
    input: &Path,
    platform: &Platform,
    output: &Path,
) -> Result<Vec<Descriptor>, PlatformError> {
    let scratch = tempfile::tempdir().map_err(io("creating a temporary directory for", input))?;
    let tree = source::stage(input, scratch.path())?;
    let load = |d: &Digest| -> Result<Vec<u8>, PlatformError> {
        let f = tree.blob(input, d)?.ok_or_else(|| PlatformError::Missing {
            file: input.to_path_buf(),
            digest: d.clone(),
        })?;
        std::fs::read(&f.path).map_err(io("reading", &f.path))
    };
    let index_file = match (tree.get("index.json"), tree.get("oci-layout")) {
        (Some(f), Some(_)) => f,
        _ => return Err(PlatformError::NotOciLayout(input.to_path_buf())),
    };
    let bytes = std::fs::read(&index_file.path).map_err(io("reading", &index_file.path))?;
    let index: media::Index = json(input, "index.json", &bytes)?;
    let mut kept = Vec::new();
    for top in &index.manifests {
        kept.push(select(input, top, platform, &load)?);
    }
    let mut blobs = BTreeMap::new();
    for d in &kept {
        collect_blobs(input, &tree, d, &load, &mut blobs)?;
    }
    write_archive(output, &reduced_index(&kept), &blobs)?;
    Ok(kept)
}

/// The manifest of `top` for `platform`, with `top`'s annotations (its names) and the platform.
pub fn select(
    file: &Path,
    top: &Descriptor,
    platform: &Platform,
    load: &dyn Fn(&Digest) -> Result<Vec<u8>, PlatformError>,
) -> Result<Descriptor, PlatformError> {
    let mut found = Vec::new();
    let mut candidates = vec![top.clone()];
    while let Some(d) = candidates.pop() {
        match media::manifest_kind(&d.media_type) {
            Some(Kind::Index) => {
                let ix: media::Index = json(file, d.digest.as_str(), &load(&d.digest)?)?;
                candidates.extend(ix.manifests.into_iter().rev());
            }
            Some(_) => {
                let p = match &d.platform {
                    Some(p) => p.clone(),
                    None => manifest_platform(file, &d, load)?,
                };
                if p.matches(platform) {
                    let mut chosen = d.clone();
                    chosen.annotations.extend(top.annotations.clone());
                    chosen.platform = Some(p);
                    return Ok(chosen);
                }
                found.push(format!("{}/{}", p.os, p.architecture));
            }
            None => {}
        }
    }
    Err(PlatformError::NoMatch {
        file: file.to_path_buf(),
        platform: format!("{}/{}", platform.os, platform.architecture),
        found: found.join(", "),
    })
}

/// A manifest without a platform in its descriptor: the platform its config names.
fn manifest_platform(
    file: &Path,
    d: &Descriptor,
    load: &dyn Fn(&Digest) -> Result<Vec<u8>, PlatformError>,
) -> Result<Platform, PlatformError> {
    let m: media::Manifest = json(file, d.digest.as_str(), &load(&d.digest)?)?;
    let c: ConfigPlatform = json(file, m.config.digest.as_str(), &load(&m.config.digest)?)?;
    Ok(Platform {
        architecture: c.architecture,
        os: c.os,
        variant: c.variant,
        os_version: None,
    })
}

/// index.json of the reduced layout.
pub fn reduced_index(manifests: &[Descriptor]) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Layout<'a> {
        schema_version: u32,
        media_type: &'static str,
        manifests: &'a [Descriptor],
    }
    serde_json::to_vec(&Layout {
        schema_version: 2,
        media_type: media::OCI_INDEX,
        manifests,
    })
    .expect("index serializes")
}

fn collect_blobs(
    file: &Path,
    tree: &Tree,
    manifest: &Descriptor,
    load: &dyn Fn(&Digest) -> Result<Vec<u8>, PlatformError>,
    out: &mut BTreeMap<Digest, PathBuf>,
) -> Result<(), PlatformError> {
    let bytes = load(&manifest.digest)?;
    let kids =
        media::children(&manifest.digest, &manifest.media_type, &bytes).map_err(|source| {
            ReadError::Manifest {
                file: file.to_path_buf(),
                source,
            }
        })?;
    for d in std::iter::once(manifest).chain(&kids) {
        let f = tree
            .blob(file, &d.digest)?
            .ok_or_else(|| PlatformError::Missing {
                file: file.to_path_buf(),
                digest: d.digest.clone(),
            })?;
        if f.size != d.size {
            return Err(PlatformError::Read(ReadError::SizeMismatch {
                file: file.to_path_buf(),
                digest: d.digest.clone(),
                expected: d.size,
                actual: f.size,
            }));
        }
        out.insert(d.digest.clone(), f.path.clone());
    }
    Ok(())
}

fn json<T: serde::de::DeserializeOwned>(
    file: &Path,
    what: &str,
    bytes: &[u8],
) -> Result<T, PlatformError> {
    serde_json::from_slice(bytes).map_err(|source| PlatformError::Json {
        file: file.to_path_buf(),
        what: what.to_string(),
        source,
    })
}

/// Writes the archive with fixed owners, modes and times, entries in digest order.
fn write_archive(
    output: &Path,
    index: &[u8],
    blobs: &BTreeMap<Digest, PathBuf>,
) -> Result<(), PlatformError> {
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(io("creating a file in", dir))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(tmp.as_file()));
    let header = |size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        h
    };
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    let append = |b: &mut tar::Builder<_>, name: &str, size: u64, data: &mut dyn std::io::Read| {
        b.append_data(&mut header(size), name, data)
            .map_err(io("writing", output))
    };
    append(
        &mut builder,
        "oci-layout",
        layout.len() as u64,
        &mut &layout[..],
    )?;
    append(
        &mut builder,
        "index.json",
        index.len() as u64,
        &mut &index[..],
    )?;
    for (digest, path) in blobs {
        let mut f = std::fs::File::open(path).map_err(io("opening", path))?;
        let size = f.metadata().map_err(io("reading", path))?.len();
        append(
            &mut builder,
            &format!("blobs/sha256/{}", digest.hex()),
            size,
            &mut f,
        )?;
    }
    let mut w = builder.into_inner().map_err(io("writing", output))?;
    w.flush().map_err(io("writing", output))?;
    drop(w);
    tmp.as_file().sync_all().map_err(io("syncing", output))?;
    tmp.persist(output)
        .map_err(|e| io("renaming a temp file to", output)(e.error))?;
    Ok(())
}
