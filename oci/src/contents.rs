//! What reading image inputs found: verified blob files, the manifests among them and the images
//! they hold, before anything names or stores them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ReadError;
use crate::media::MAX_MANIFEST_BYTES;
use crate::refs::{Digest, ImageName};
use crate::source::Tree;

/// What a store keeps about a manifest besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestInfo {
    pub media_type: String,
    pub size: u64,
}

/// One image found in an input, before naming.
#[derive(Debug, Clone)]
pub struct Found {
    pub names: Vec<ImageName>,
    /// A tag-only `org.opencontainers.image.ref.name`, used with a `--name` lacking a tag.
    pub tag_hint: Option<String>,
    pub digest: Digest,
    pub reachable: BTreeSet<Digest>,
}

/// Everything verified from the inputs read so far: each blob's staged file (its digest checked),
/// the manifests' media types and sizes, and the images with the input each came from.
#[derive(Debug, Default)]
pub struct Contents {
    pub blobs: BTreeMap<Digest, PathBuf>,
    pub manifests: BTreeMap<Digest, ManifestInfo>,
    pub found: Vec<(PathBuf, Found)>,
}

/// Reads a JSON document of the input whole; documents are small, so a large one is refused.
pub(crate) fn read_json_file(input: &Path, tree: &Tree, name: &str) -> Result<Vec<u8>, ReadError> {
    let f = tree.get(name).ok_or_else(|| ReadError::UnknownLayout {
        file: input.to_path_buf(),
    })?;
    if f.size > MAX_MANIFEST_BYTES * 4 {
        return Err(ReadError::BadDocument {
            file: input.to_path_buf(),
            entry: name.to_string(),
            reason: format!("{} bytes is too large", f.size),
        });
    }
    std::fs::read(&f.path).map_err(|e| ReadError::io("reading", &f.path, e))
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    input: &Path,
    entry: &str,
    bytes: &[u8],
) -> Result<T, ReadError> {
    serde_json::from_slice(bytes).map_err(|e| ReadError::BadDocument {
        file: input.to_path_buf(),
        entry: entry.to_string(),
        reason: e.to_string(),
    })
}
