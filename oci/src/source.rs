//! Reading an image input (a tar, gzip'd or not, or a directory) into a staging directory,
//! hashing every file on the way and refusing paths that leave the archive.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use sha2::Digest as _;

use crate::error::ReadError;
use crate::refs::Digest;

/// A file of the input, copied into the staging directory.
#[derive(Debug, Clone)]
pub struct StagedFile {
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
}

/// The input's files by their cleaned relative path (`blobs/sha256/<hex>`, `index.json`, …), plus
/// the links (symlinks and tar hard links) between them.
#[derive(Debug, Default)]
pub struct Tree {
    pub files: BTreeMap<String, StagedFile>,
    pub links: BTreeMap<String, String>,
}

impl Tree {
    /// The file at `path`, following links inside the tree.
    pub fn get(&self, path: &str) -> Option<&StagedFile> {
        let mut path = clean_path(path).ok()?;
        for _ in 0..16 {
            if let Some(f) = self.files.get(&path) {
                return Some(f);
            }
            path = self.links.get(&path)?.clone();
        }
        None
    }

    /// The blob with `digest` (`blobs/sha256/<hex>` of `input`), if present. However it is
    /// reached, its content must hash to `digest`: a link to other bytes (of the same size, say)
    /// is refused, or it would be stored and served under a digest it does not have.
    pub fn blob(&self, input: &Path, digest: &Digest) -> Result<Option<&StagedFile>, ReadError> {
        let name = format!("blobs/sha256/{}", digest.hex());
        let Some(file) = self.get(&name) else {
            return Ok(None);
        };
        if file.digest != *digest {
            return Err(ReadError::DigestMismatch {
                file: input.to_path_buf(),
                entry: name,
                actual: file.digest.clone(),
            });
        }
        Ok(Some(file))
    }
}

/// Normalizes a path inside an archive; refuses absolute paths and `..`.
pub fn clean_path(raw: &str) -> Result<String, String> {
    if raw.starts_with('/') {
        return Err(raw.to_string());
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(raw.to_string()),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Resolves a symlink target written in the entry at `entry` to a path inside the tree.
fn link_target(entry: &str, target: &str) -> Result<String, String> {
    let dir = entry.rsplit_once('/').map_or("", |(d, _)| d);
    if target.starts_with('/') {
        return Err(target.to_string());
    }
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop().ok_or_else(|| target.to_string())?;
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Stages `input` (directory or tar file) into `into`.
pub fn stage(input: &Path, into: &Path) -> Result<Tree, ReadError> {
    let meta = std::fs::metadata(input).map_err(|e| ReadError::io("reading", input, e))?;
    let mut stager = Stager {
        input: input.to_path_buf(),
        into: into.to_path_buf(),
        tree: Tree::default(),
    };
    if meta.is_dir() {
        stager.directory()?;
    } else {
        stager.archive()?;
    }
    Ok(stager.tree)
}

struct Stager {
    input: PathBuf,
    into: PathBuf,
    tree: Tree,
}

impl Stager {
    fn traversal(&self, entry: &str) -> ReadError {
        ReadError::PathTraversal {
            file: self.input.clone(),
            entry: entry.to_string(),
        }
    }

    /// Copies `reader` into a new staging file for entry `name`, which must hold `expected` bytes.
    fn add(&mut self, name: &str, reader: &mut dyn Read, expected: u64) -> Result<(), ReadError> {
        let path = self.into.join(format!("f{}", self.tree.files.len()));
        let mut out = File::create(&path).map_err(|e| ReadError::io("creating", &path, e))?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_error(e)),
            };
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| ReadError::io("writing", &path, e))?;
            size += n as u64;
        }
        if size != expected {
            return Err(ReadError::Truncated {
                file: self.input.clone(),
                entry: name.to_string(),
            });
        }
        out.sync_all()
            .map_err(|e| ReadError::io("syncing", &path, e))?;
        let digest = Digest::from_hasher(hasher);
        check_blob_name(&self.input, name, &digest)?;
        let staged = StagedFile { path, digest, size };
        self.tree.files.insert(name.to_string(), staged);
        Ok(())
    }

    fn read_error(&self, e: std::io::Error) -> ReadError {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ReadError::Truncated {
                file: self.input.clone(),
                entry: String::new(),
            }
        } else {
            ReadError::io("reading", &self.input, e)
        }
    }

    fn archive(&mut self) -> Result<(), ReadError> {
        let file = File::open(&self.input).map_err(|e| ReadError::io("opening", &self.input, e))?;
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        let gzip = std::io::BufRead::fill_buf(&mut reader)
            .map_err(|e| ReadError::io("reading", &self.input, e))?
            .starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn Read> = if gzip {
            Box::new(flate2::read::GzDecoder::new(reader))
        } else {
            Box::new(reader)
        };
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(|e| self.not_archive(e))?;
        let mut seen = 0usize;
        for entry in entries {
            let mut entry = entry.map_err(|e| self.entry_error(e, seen))?;
            seen += 1;
            self.archive_entry(&mut entry)?;
        }
        if seen == 0 {
            return Err(ReadError::NotAnArchive {
                file: self.input.clone(),
                reason: "no tar entries".to_string(),
            });
        }
        Ok(())
    }

    fn not_archive(&self, e: std::io::Error) -> ReadError {
        ReadError::NotAnArchive {
            file: self.input.clone(),
            reason: e.to_string(),
        }
    }

    fn entry_error(&self, e: std::io::Error, seen: usize) -> ReadError {
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof => self.read_error(e),
            _ if seen == 0 => ReadError::NotAnArchive {
                file: self.input.clone(),
                reason: "its first block is not a tar header".to_string(),
            },
            _ if e.to_string().contains("failed to read entire block") => self.read_error(
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, e.to_string()),
            ),
            _ => ReadError::Corrupt {
                file: self.input.clone(),
                reason: e.to_string(),
            },
        }
    }

    fn archive_entry<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<(), ReadError> {
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = clean_path(&raw).map_err(|_| self.traversal(&raw))?;
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory => Ok(()),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                self.add(&name, entry, size)
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let resolved = if kind == tar::EntryType::Link {
                    clean_path(&target)
                } else {
                    link_target(&name, &target)
                };
                let resolved = resolved.map_err(|t| self.traversal(&format!("{raw} -> {t}")))?;
                self.tree.links.insert(name, resolved);
                Ok(())
            }
            // PAX and GNU headers are consumed by the tar reader; anything else is not image data
            other => Err(ReadError::UnsupportedEntry {
                file: self.input.clone(),
                entry: raw,
                kind: format!("{other:?}"),
            }),
        }
    }

    fn directory(&mut self) -> Result<(), ReadError> {
        let root = self.input.clone();
        for item in walkdir::WalkDir::new(&root).sort_by_file_name() {
            let item = item.map_err(|e| ReadError::io("walking", &root, e.into()))?;
            let rel = item
                .path()
                .strip_prefix(&root)
                .expect("walkdir stays under its root");
            let Some(name) = rel.to_str().map(str::to_string) else {
                continue;
            };
            let ft = item.file_type();
            if ft.is_file() {
                let path = item.path();
                let mut f = File::open(path).map_err(|e| ReadError::io("opening", path, e))?;
                let size = f
                    .metadata()
                    .map_err(|e| ReadError::io("reading", path, e))?
                    .len();
                self.add(&name, &mut f, size)?;
            } else if ft.is_symlink() {
                let target = std::fs::read_link(item.path())
                    .map_err(|e| ReadError::io("reading the link", item.path(), e))?;
                let target = target.to_string_lossy();
                let resolved = link_target(&name, &target)
                    .map_err(|t| self.traversal(&format!("{name} -> {t}")))?;
                self.tree.links.insert(name, resolved);
            }
        }
        Ok(())
    }
}

/// A file stored as `blobs/sha256/<hex>` must hash to that digest.
fn check_blob_name(input: &Path, name: &str, digest: &Digest) -> Result<(), ReadError> {
    let Some(hex) = name.strip_prefix("blobs/sha256/") else {
        return Ok(());
    };
    if hex != digest.hex() {
        return Err(ReadError::DigestMismatch {
            file: input.to_path_buf(),
            entry: name.to_string(),
            actual: digest.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_archive() {
        assert_eq!(clean_path("./blobs//sha256/./x").unwrap(), "blobs/sha256/x");
        assert!(clean_path("/etc/passwd").is_err());
        assert!(clean_path("blobs/../../x").is_err());
        assert_eq!(
            link_target("a/b/layer.tar", "../c/layer.tar").unwrap(),
            "a/c/layer.tar"
        );
        assert!(link_target("a/layer.tar", "../../x").is_err());
        assert!(link_target("a/layer.tar", "/x").is_err());
    }

    /// A tar holding `blobs/sha256/<hex of "good">` as a file, `other` with different bytes of
    /// the same size, and `blobs/sha256/<hex of "evil">` as a link of `kind` to `other`.
    fn linked_tar(dir: &Path, kind: tar::EntryType) -> PathBuf {
        let path = dir.join(format!("{kind:?}.tar"));
        let mut b = tar::Builder::new(File::create(&path).unwrap());
        let good = Digest::of(b"good");
        for (name, bytes) in [
            (format!("blobs/sha256/{}", good.hex()), b"good"),
            ("other".into(), b"odd!"),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(4);
            h.set_mode(0o644);
            b.append_data(&mut h, name, &bytes[..]).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        let linked = format!("blobs/sha256/{}", Digest::of(b"evil").hex());
        let target = if kind == tar::EntryType::Symlink {
            "../../other"
        } else {
            "other"
        };
        b.append_link(&mut h, linked, target).unwrap();
        b.finish().unwrap();
        path
    }

    #[test]
    fn a_blob_reached_through_a_link_must_hash_to_its_digest() {
        let tmp = tempfile::tempdir().unwrap();
        for kind in [tar::EntryType::Symlink, tar::EntryType::Link] {
            let input = linked_tar(tmp.path(), kind);
            let into = tmp.path().join(format!("{kind:?}"));
            std::fs::create_dir(&into).unwrap();
            let tree = stage(&input, &into).unwrap();
            let good = Digest::of(b"good");
            assert_eq!(tree.blob(&input, &good).unwrap().unwrap().digest, good);
            let absent = Digest::of(b"absent");
            assert!(tree.blob(&input, &absent).unwrap().is_none());
            let evil = Digest::of(b"evil");
            let err = tree.blob(&input, &evil).unwrap_err().to_string();
            let want = format!(
                "{}: blobs/sha256/{} does not match its digest: its content hashes to {}",
                input.display(),
                evil.hex(),
                Digest::of(b"odd!")
            );
            assert_eq!(err, want, "{kind:?}");
        }
    }
}
