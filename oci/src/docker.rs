//! `docker save` archives: they carry a config and uncompressed layer tars but no registry
//! manifest, so reading one creates a Docker v2 manifest for them (their layers keep their bytes,
//! as `application/vnd.docker.image.rootfs.diff.tar`, which containerd and skopeo pull).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::contents::{Contents, Found, ManifestInfo, parse_json, read_json_file};
use crate::error::ReadError;
use crate::media::{self, Descriptor};
use crate::refs::{Digest, ImageName};
use crate::source::{StagedFile, Tree};

/// One image of a `docker save` archive's `manifest.json`: the paths of its config and layers
/// inside the archive, and the names it was saved under.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct SaveEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ImageConfig {
    rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DockerManifest {
    schema_version: u32,
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

pub(crate) fn read_docker_save(
    input: &Path,
    tree: &Tree,
    scratch: &Path,
    out: &mut Contents,
) -> Result<(), ReadError> {
    let bytes = read_json_file(input, tree, "manifest.json")?;
    let entries: Vec<SaveEntry> = parse_json(input, "manifest.json", &bytes)?;
    for (i, entry) in entries.iter().enumerate() {
        let found = read_entry(
            input,
            tree,
            entry,
            &scratch.join(format!("manifest-{i}.json")),
            out,
        )?;
        out.found.push((input.to_path_buf(), found));
    }
    Ok(())
}

fn read_entry(
    input: &Path,
    tree: &Tree,
    entry: &SaveEntry,
    manifest_path: &Path,
    out: &mut Contents,
) -> Result<Found, ReadError> {
    let missing = |entry: &str| ReadError::MissingEntry {
        file: input.to_path_buf(),
        entry: entry.to_string(),
    };
    let config = tree
        .get(&entry.config)
        .ok_or_else(|| missing(&entry.config))?;
    check_config_name(input, &entry.config, &config.digest)?;
    let layers: Vec<&StagedFile> = entry
        .layers
        .iter()
        .map(|l| tree.get(l).ok_or_else(|| missing(l)))
        .collect::<Result<_, _>>()?;
    check_diff_ids(input, tree, &entry.config, &layers)?;

    let descriptor = |media_type: &str, f: &StagedFile| Descriptor {
        media_type: media_type.to_string(),
        digest: f.digest.clone(),
        size: f.size,
        platform: None,
        annotations: BTreeMap::new(),
    };
    let manifest = DockerManifest {
        schema_version: 2,
        media_type: media::DOCKER_MANIFEST,
        config: descriptor(media::DOCKER_CONFIG, config),
        layers: layers
            .iter()
            .map(|l| descriptor(media::DOCKER_LAYER, l))
            .collect(),
    };
    let bytes = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    write_synced(manifest_path, &bytes)?;
    let digest = Digest::of(&bytes);

    let mut reachable = BTreeSet::from([digest.clone()]);
    out.blobs
        .insert(digest.clone(), manifest_path.to_path_buf());
    for f in std::iter::once(config).chain(layers) {
        reachable.insert(f.digest.clone());
        out.blobs.insert(f.digest.clone(), f.path.clone());
    }
    out.manifests.insert(
        digest.clone(),
        ManifestInfo {
            media_type: media::DOCKER_MANIFEST.to_string(),
            size: bytes.len() as u64,
        },
    );
    let names = entry
        .repo_tags
        .iter()
        .flatten()
        .map(|t| {
            ImageName::parse(t).map_err(|source| ReadError::Name {
                file: input.to_path_buf(),
                source,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Found {
        names,
        tag_hint: None,
        digest,
        reachable,
    })
}

/// A config named `<hex>.json` (the classic layout) must hash to that hex.
fn check_config_name(input: &Path, name: &str, digest: &Digest) -> Result<(), ReadError> {
    let stem = name.strip_suffix(".json").unwrap_or("");
    if stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit()) && stem != digest.hex() {
        return Err(ReadError::DigestMismatch {
            file: input.to_path_buf(),
            entry: name.to_string(),
            actual: digest.clone(),
        });
    }
    Ok(())
}

/// The config's `rootfs.diff_ids` are the digests of the uncompressed layers: the layers must
/// hash to them, one for one.
fn check_diff_ids(
    input: &Path,
    tree: &Tree,
    config_name: &str,
    layers: &[&StagedFile],
) -> Result<(), ReadError> {
    let bytes = read_json_file(input, tree, config_name)?;
    let parsed: ImageConfig = parse_json(input, config_name, &bytes)?;
    let ids = &parsed.rootfs.diff_ids;
    if ids.len() != layers.len() {
        return Err(ReadError::BadDocument {
            file: input.to_path_buf(),
            entry: config_name.to_string(),
            reason: format!("{} diff_ids for {} layers", ids.len(), layers.len()),
        });
    }
    for (index, (id, layer)) in ids.iter().zip(layers).enumerate() {
        if id != layer.digest.as_str() {
            return Err(ReadError::DiffId {
                file: input.to_path_buf(),
                config: config_name.to_string(),
                index,
                actual: layer.digest.clone(),
                expected: id.clone(),
            });
        }
    }
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ReadError> {
    let mut f = std::fs::File::create(path).map_err(|e| ReadError::io("creating", path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| ReadError::io("writing", path, e))
}
