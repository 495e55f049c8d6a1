//! Container image archives for preloading: an OCI archive that names several platforms is
//! reduced to the target platform (containerd refuses archives missing other platforms' blobs).
//!
//! This is the builder's own minimal reduction, behind [`reduce_to_platform`] so that it can be
//! swapped for the registry's OCI module.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read};
use std::path::Path;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{archive}: {message}")]
    Bad { archive: String, message: String },
    #[error("{what} {archive}: {source}")]
    Io {
        what: &'static str,
        archive: String,
        source: io::Error,
    },
}

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const SMALL: u64 = 4 << 20;

/// What reduction did: `false` when the archive was already single-platform and copied as is.
pub fn reduce_to_platform(
    archive: &Path,
    os: &str,
    arch: &str,
    out: &Path,
) -> Result<bool, OciError> {
    let name = archive.display().to_string();
    let bad = |m: String| OciError::Bad {
        archive: name.clone(),
        message: m,
    };
    let io = |what| {
        let n = name.clone();
        move |source| OciError::Io {
            what,
            archive: n,
            source,
        }
    };
    let (index, blobs) = read_small(archive).map_err(io("reading"))?;
    let index = index.ok_or_else(|| bad("not an OCI archive (no index.json)".into()))?;
    let mut index: Value =
        serde_json::from_slice(&index).map_err(|e| bad(format!("index.json: {e}")))?;
    let manifests = index["manifests"]
        .as_array()
        .cloned()
        .ok_or_else(|| bad("index.json has no manifests".into()))?;
    if manifests.iter().all(|m| !is_index(m)) {
        fs::copy(archive, out).map_err(io("copying"))?;
        return Ok(false);
    }
    let mut chosen = Vec::new();
    for entry in &manifests {
        chosen.push(if is_index(entry) {
            pick(entry, &blobs, os, arch).map_err(&bad)?
        } else {
            entry.clone()
        });
    }
    let mut keep = BTreeSet::new();
    for m in &chosen {
        let digest =
            hex_of(m).ok_or_else(|| bad("a manifest descriptor has no sha256 digest".into()))?;
        let body = blobs
            .get(&digest)
            .ok_or_else(|| bad(format!("manifest {digest} is missing")))?;
        let body: Value =
            serde_json::from_slice(body).map_err(|e| bad(format!("manifest {digest}: {e}")))?;
        keep.insert(digest);
        for d in
            std::iter::once(&body["config"]).chain(body["layers"].as_array().into_iter().flatten())
        {
            keep.insert(
                hex_of(d)
                    .ok_or_else(|| bad(format!("manifest {m} names a blob without digest")))?,
            );
        }
    }
    index["manifests"] = Value::Array(chosen);
    let index_bytes = serde_json::to_vec(&index).map_err(|e| bad(e.to_string()))?;
    write_reduced(archive, &index_bytes, &keep, out).map_err(io("writing reduced copy of"))?;
    Ok(true)
}

fn is_index(desc: &Value) -> bool {
    desc["mediaType"]
        .as_str()
        .is_some_and(|t| INDEX_TYPES.contains(&t))
}

fn hex_of(desc: &Value) -> Option<String> {
    desc["digest"]
        .as_str()?
        .strip_prefix("sha256:")
        .map(str::to_string)
}

/// The descriptor for `os/arch` in the nested index `entry`, keeping the entry's annotations.
fn pick(
    entry: &Value,
    blobs: &HashMap<String, Vec<u8>>,
    os: &str,
    arch: &str,
) -> Result<Value, String> {
    let digest = hex_of(entry).ok_or("an index descriptor has no sha256 digest")?;
    let body = blobs
        .get(&digest)
        .ok_or(format!("index {digest} is missing"))?;
    let nested: Value = serde_json::from_slice(body).map_err(|e| format!("index {digest}: {e}"))?;
    let mut found = nested["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["platform"]["os"] == os && m["platform"]["architecture"] == arch)
        .cloned()
        .ok_or(format!("no {os}/{arch} manifest in index {digest}"))?;
    if let (Some(ann), Some(obj)) = (entry.get("annotations"), found.as_object_mut()) {
        obj.insert("annotations".into(), ann.clone());
    }
    Ok(found)
}

type Small = (Option<Vec<u8>>, HashMap<String, Vec<u8>>);

/// `index.json` and every blob small enough to be a manifest, index or config.
fn read_small(archive: &Path) -> io::Result<Small> {
    let mut tar = tar::Archive::new(fs::File::open(archive)?);
    let mut index = None;
    let mut blobs = HashMap::new();
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if path == "index.json" {
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf)?;
            index = Some(buf);
        } else if let Some(hex) = path.strip_prefix("blobs/sha256/")
            && entry.size() <= SMALL
        {
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf)?;
            blobs.insert(hex.to_string(), buf);
        }
    }
    Ok((index, blobs))
}

fn write_reduced(
    archive: &Path,
    index: &[u8],
    keep: &BTreeSet<String>,
    out: &Path,
) -> io::Result<()> {
    let mut builder = tar::Builder::new(io::BufWriter::new(fs::File::create(out)?));
    let mut add = |name: &str, size: u64, data: &mut dyn Read| {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(size);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut h, name, data)
    };
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    add("oci-layout", layout.len() as u64, &mut &layout[..])?;
    add("index.json", index.len() as u64, &mut &index[..])?;
    let mut tar = tar::Archive::new(fs::File::open(archive)?);
    let mut entries: Vec<(String, u64)> = Vec::new();
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if let Some(hex) = path.strip_prefix("blobs/sha256/")
            && keep.contains(hex)
            && !entries.iter().any(|(p, _)| *p == path)
        {
            let size = entry.size();
            add(&path, size, &mut entry)?;
            entries.push((path, size));
        }
    }
    builder
        .into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
}
