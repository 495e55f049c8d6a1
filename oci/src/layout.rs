//! OCI image layouts (`oci-layout`, `index.json`, `blobs/sha256/…`): every image of the index
//! walked to its last blob, each present with the size its descriptor gives, manifests parsed and
//! within 4 MiB, media types known.

use std::collections::BTreeSet;
use std::path::Path;

use crate::contents::{Contents, Found, ManifestInfo, parse_json, read_json_file};
use crate::error::ReadError;
use crate::media::{self, Descriptor, MAX_MANIFEST_BYTES};
use crate::refs::ImageName;
use crate::source::Tree;

const NAME_ANNOTATION: &str = "io.containerd.image.name";
const REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Reads every image `index.json` lists into `out`.
pub(crate) fn read_oci(input: &Path, tree: &Tree, out: &mut Contents) -> Result<(), ReadError> {
    let index = read_json_file(input, tree, "index.json")?;
    let index: media::Index = parse_json(input, "index.json", &index)?;
    for top in &index.manifests {
        let found = walk_image(input, tree, top, out)?;
        out.found.push((input.to_path_buf(), found));
    }
    Ok(())
}

/// Verifies the whole tree under `top` (every blob present with its size, manifests parsed and
/// within 4 MiB, media types known) and records it in `out`.
fn walk_image(
    input: &Path,
    tree: &Tree,
    top: &Descriptor,
    out: &mut Contents,
) -> Result<Found, ReadError> {
    if media::manifest_kind(&top.media_type).is_none() {
        return Err(ReadError::Manifest {
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
            .blob(input, &d.digest)?
            .ok_or_else(|| ReadError::MissingBlob {
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
            std::fs::read(&blob.path).map_err(|e| ReadError::io("reading", &blob.path, e))?;
        let kids = media::children(&d.digest, &d.media_type, &bytes).map_err(|source| {
            ReadError::Manifest {
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

fn check_size(input: &Path, d: &Descriptor, actual: u64) -> Result<(), ReadError> {
    let is_manifest = media::manifest_kind(&d.media_type).is_some();
    if is_manifest && actual > MAX_MANIFEST_BYTES {
        return Err(ReadError::ManifestTooLarge {
            file: input.to_path_buf(),
            digest: d.digest.clone(),
            size: actual,
        });
    }
    if actual != d.size {
        return Err(ReadError::SizeMismatch {
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
fn names_of(input: &Path, top: &Descriptor) -> Result<(Vec<ImageName>, Option<String>), ReadError> {
    let parse = |s: &str| {
        ImageName::parse(s).map_err(|source| ReadError::Name {
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
