//! `images import`: OCI archives, OCI layouts and `docker save` archives into the store. Every
//! input is staged and verified completely (by the `oci` crate) before anything is committed, so
//! a refused import leaves the store as it was.

use std::path::PathBuf;

use ::oci::refs::{Digest, ImageName, RefError, Tag};
use ::oci::{Contents, Found, ReadError};

use super::store::{NewImage, Staged, Store, StoreError};

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
    #[error(transparent)]
    Read(#[from] ReadError),
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
    let mut contents = Contents::default();
    for (i, input) in inputs.iter().enumerate() {
        let into = dir.path().join(format!("in{i}"));
        std::fs::create_dir(&into).map_err(|source| ImportError::Io {
            what: "creating",
            path: into.clone(),
            source,
        })?;
        ::oci::read(input, &into, &mut contents)?;
    }
    let images = name_images(&contents.found, name)?;
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
        blobs: contents.blobs,
        manifests: contents.manifests,
        images,
    })?;
    Ok(imported)
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
            n.tag = f.tag_hint.as_deref().and_then(|t| Tag::parse(t).ok());
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
        name.tag = Tag::parse("latest").ok();
    }
    NewImage {
        repo: name.repo,
        tag: name.tag,
        digest: f.digest.clone(),
        reachable: f.reachable.clone(),
    }
}
