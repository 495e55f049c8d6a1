//! The content-addressed blob store under `<state-dir>/registry/`: `blobs/sha256/<hex>` holds
//! every blob (manifests too), `catalog.json` maps repositories and tags to manifest digests.
//! Every file appears whole or not at all (temp file, fsync, rename). A blob file is only ever
//! put there by an import that hashed it, and an existing one is replaced, never trusted.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

pub use ::oci::ManifestInfo;
use ::oci::media;
use ::oci::refs::{Digest, Reference, RepoName, Tag};

const CATALOG: &str = "catalog.json";
/// How staging directories in `tmp/` are named; clean-up touches nothing else there.
const STAGING_PREFIX: &str = "import-";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading {}: {source}", path.display())]
    Catalog {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("manifest {0} is not in the store")]
    MissingManifest(Digest),
    #[error(transparent)]
    Manifest(#[from] media::ManifestError),
}

pub(crate) fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { what, path, source }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    pub tags: BTreeMap<Tag, Digest>,
    /// Every blob and manifest imported under this repository: only these are served under its
    /// name, as the distribution registry does with its repository links.
    pub digests: BTreeSet<Digest>,
}

impl Repository {
    pub fn resolve(&self, reference: &Reference) -> Option<Digest> {
        match reference {
            Reference::Tag(t) => self.tags.get(t).cloned(),
            Reference::Digest(d) => self.digests.contains(d).then(|| d.clone()),
        }
    }
}

/// The store's index: repositories, tags and manifest media types.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub repositories: BTreeMap<RepoName, Repository>,
    pub manifests: BTreeMap<Digest, ManifestInfo>,
}

/// One image an import adds: a name (repository, maybe a tag), its top manifest and every digest
/// reachable from it.
#[derive(Debug, Clone)]
pub struct NewImage {
    pub repo: RepoName,
    pub tag: Option<Tag>,
    pub digest: Digest,
    pub reachable: BTreeSet<Digest>,
}

/// An import's staging directory in the store's `tmp/`, removed when dropped. The import holds
/// a lock on it while it runs, so that clean-up removes only what a dead import left.
#[derive(Debug)]
pub struct Staging {
    dir: tempfile::TempDir,
    _lock: Flock<File>,
}

impl Staging {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// An import that was read and verified completely, waiting in the store's `tmp/` to be committed.
#[derive(Debug)]
pub struct Staged {
    pub dir: Staging,
    /// Blob files inside `dir`, fsynced, each hashed while it was staged and found to match its
    /// digest.
    pub blobs: BTreeMap<Digest, PathBuf>,
    pub manifests: BTreeMap<Digest, ManifestInfo>,
    pub images: Vec<NewImage>,
}

type FileId = (u64, u64, i64, i64);

#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    cache: RwLock<Option<(FileId, Arc<Catalog>)>>,
}

impl Store {
    /// Opens (creating if needed) the store in `<state_dir>/registry`, removing the staging
    /// that imports killed or crashed left behind (a layer-sized copy of their inputs).
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        let root = state_dir.join("registry");
        for dir in [root.join("blobs/sha256"), root.join("tmp")] {
            fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        }
        remove_dead_staging(&root.join("tmp"));
        Ok(Store {
            root,
            cache: RwLock::new(None),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// A fresh staging directory on the store's filesystem, locked for as long as it lives.
    pub fn staging_dir(&self) -> Result<Staging, StoreError> {
        let tmp = self.root.join("tmp");
        loop {
            let dir = tempfile::Builder::new()
                .prefix(STAGING_PREFIX)
                .tempdir_in(&tmp)
                .map_err(io_err("creating a staging directory in", &tmp))?;
            let lock = lock_dir(dir.path(), FlockArg::LockExclusive)?;
            // A clean-up may have locked and removed it between its creation and our lock.
            if still_there(&lock, dir.path()) {
                return Ok(Staging { dir, _lock: lock });
            }
        }
    }

    /// The current catalog, re-read when the file changed (an import by another process).
    pub fn catalog(&self) -> Result<Arc<Catalog>, StoreError> {
        let path = self.root.join(CATALOG);
        let id = match fs::metadata(&path) {
            Ok(m) => (m.dev(), m.ino(), m.mtime(), m.mtime_nsec()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, 0, 0, 0),
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        if let Some((cached, catalog)) = &*self.cache.read().unwrap()
            && *cached == id
        {
            return Ok(catalog.clone());
        }
        let catalog = Arc::new(read_catalog(&path)?);
        *self.cache.write().unwrap() = Some((id, catalog.clone()));
        Ok(catalog)
    }

    /// The manifest digest `reference` names in repository `repo`, if the store has it there.
    pub fn resolve(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<(Digest, ManifestInfo)>, StoreError> {
        let catalog = self.catalog()?;
        let found = catalog
            .repositories
            .get(repo)
            .and_then(|r| r.resolve(reference))
            .and_then(|d| catalog.manifests.get(&d).map(|m| (d, m.clone())));
        Ok(found)
    }

    /// Reads a stored manifest whole (they are at most 4 MiB).
    pub fn manifest_bytes(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        fs::read(&path).map_err(io_err("reading", &path))
    }

    /// Total bytes of everything `digest` references, itself included, each blob counted once.
    pub fn image_size(&self, digest: &Digest) -> Result<u64, StoreError> {
        let catalog = self.catalog()?;
        let mut seen = BTreeSet::new();
        let mut todo = vec![digest.clone()];
        let mut total = 0;
        while let Some(d) = todo.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            let info = catalog
                .manifests
                .get(&d)
                .ok_or_else(|| StoreError::MissingManifest(d.clone()))?;
            total += info.size;
            let bytes = self.manifest_bytes(&d)?;
            for child in media::children(&d, &info.media_type, &bytes)? {
                if media::manifest_kind(&child.media_type).is_some() {
                    todo.push(child.digest);
                } else if seen.insert(child.digest) {
                    total += child.size;
                }
            }
        }
        Ok(total)
    }

    /// Moves the staged blobs into place, then records the images in the catalog. Blobs land
    /// first, so a crash in between leaves only unreferenced blobs, never a dangling tag.
    ///
    /// A blob file already in the store is replaced by the verified staged one rather than
    /// trusted: it may have been corrupted on disk or left by a faulty writer, and replacing it
    /// costs one rename where checking it would cost reading it whole. Readers that have it
    /// open keep the old inode until they close it.
    pub fn commit(&self, staged: Staged) -> Result<(), StoreError> {
        let blobs_dir = self.root.join("blobs/sha256");
        for (digest, path) in &staged.blobs {
            let dest = self.blob_path(digest);
            fs::rename(path, &dest).map_err(io_err("moving a blob to", &dest))?;
        }
        durable::sync_dir(&blobs_dir).map_err(durable_err)?;
        let _lock = self.lock()?;
        let path = self.root.join(CATALOG);
        let mut catalog = read_catalog(&path)?;
        catalog.manifests.extend(staged.manifests);
        for image in staged.images {
            let repo = catalog.repositories.entry(image.repo).or_default();
            repo.digests.extend(image.reachable);
            if let Some(tag) = image.tag {
                repo.tags.insert(tag, image.digest);
            }
        }
        let json = serde_json::to_vec_pretty(&catalog).expect("catalog serializes");
        durable::write_atomic(&path, &json, 0o600).map_err(durable_err)
    }

    fn lock(&self) -> Result<Flock<File>, StoreError> {
        let path = self.root.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err("locking", &path)(e.into()))
    }
}

/// Removes every staging directory in `tmp` whose lock is free: its import is no longer running.
/// Best effort: a leftover that cannot be removed only costs space until the next open.
fn remove_dead_staging(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let ours = entry
            .file_name()
            .to_string_lossy()
            .starts_with(STAGING_PREFIX);
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !(ours && is_dir) {
            continue;
        }
        // Held while removing, so an import cannot take the directory half-removed.
        let Ok(_dead) = lock_dir(&entry.path(), FlockArg::LockExclusiveNonblock) else {
            continue;
        };
        tracing::info!(path = %entry.path().display(), "removing the staging of an import that did not finish");
        let _ = fs::remove_dir_all(entry.path());
    }
}

fn lock_dir(dir: &Path, how: FlockArg) -> Result<Flock<File>, StoreError> {
    let file = File::open(dir).map_err(io_err("opening", dir))?;
    Flock::lock(file, how).map_err(|(_, e)| io_err("locking", dir)(e.into()))
}

/// Whether `dir` is still the directory `locked` was opened on.
fn still_there(locked: &File, dir: &Path) -> bool {
    match (locked.metadata(), fs::symlink_metadata(dir)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

fn read_catalog(path: &Path) -> Result<Catalog, StoreError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Catalog {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Catalog::default()),
        Err(e) => Err(io_err("reading", path)(e)),
    }
}

fn durable_err(e: durable::Error) -> StoreError {
    StoreError::Io {
        what: e.what,
        path: e.path,
        source: e.source,
    }
}
