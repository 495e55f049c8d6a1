//! Why an image input (an archive, a layout directory, a `docker save` tar) was refused. Every
//! message names the input first, so a refusal among several inputs says which one.

use std::path::{Path, PathBuf};

use crate::media::ManifestError;
use crate::refs::{Digest, RefError};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
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
        source: ManifestError,
    },
    #[error("{}: {entry} is not valid: {reason}", file.display())]
    BadDocument {
        file: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("{}: no index.json and oci-layout, nor manifest.json: not an OCI layout or docker save archive", file.display())]
    UnknownLayout { file: PathBuf },
    #[error("{}: {source}", file.display())]
    Name { file: PathBuf, source: RefError },
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

impl ReadError {
    pub fn io(what: &'static str, path: &Path, source: std::io::Error) -> ReadError {
        ReadError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}
