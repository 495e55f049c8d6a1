//! The staging tree: checking and unpacking the base tarball, scanning the overlay, and applying
//! the layout to a root directory without ever following a link out of it.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown, symlink};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::layout::{Content, Entry, OverlayItem, OverlayKind};

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("{archive}: entry {entry:?} {why}")]
    BadEntry {
        archive: PathBuf,
        entry: String,
        why: String,
    },
    #[error(
        "overlay {dir}: {path:?} is a {kind}; an overlay holds only files, directories and symlinks"
    )]
    OverlaySpecial {
        dir: PathBuf,
        path: String,
        kind: &'static str,
    },
    #[error("overlay {dir}: symlink {path:?} points to {target:?}, which leaves the tree")]
    OverlayEscape {
        dir: PathBuf,
        path: String,
        target: String,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{0}")]
    Tool(#[from] crate::tools::ToolError),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StageError + 'a {
    move |source| StageError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// `..`-free parts of a relative path, or why it is refused.
fn rel_parts(path: &str) -> Result<Vec<&str>, String> {
    if path.starts_with('/') {
        return Err("is an absolute path".into());
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("has a '..' component".into()),
            p => parts.push(p),
        }
    }
    Ok(parts)
}

/// Whether a relative symlink target, read from directory `dir`, climbs above the root.
pub fn climbs_out(dir: &[&str], target: &str) -> bool {
    if target.starts_with('/') {
        return false;
    }
    let mut depth = dir.len();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." if depth == 0 => return true,
            ".." => depth -= 1,
            _ => depth += 1,
        }
    }
    false
}

/// Reads every entry of `archive` and refuses paths outside the tree, links that leave it, and
/// entries written through a symlink. Returns the number of entries.
pub fn check_tarball(archive: &Path) -> Result<usize, StageError> {
    let bad = |entry: &str, why: String| StageError::BadEntry {
        archive: archive.to_path_buf(),
        entry: entry.to_string(),
        why,
    };
    let file = fs::File::open(archive).map_err(io_err("opening", archive))?;
    let mut tar = tar::Archive::new(io::BufReader::new(file));
    let mut symlinks = std::collections::HashSet::new();
    let mut count = 0;
    for entry in tar.entries().map_err(io_err("reading", archive))? {
        let entry = entry.map_err(io_err("reading", archive))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let parts = rel_parts(&name).map_err(|why| bad(&name, why))?;
        for n in 1..parts.len() {
            let prefix = parts[..n].join("/");
            if symlinks.contains(&prefix) {
                return Err(bad(
                    &name,
                    format!("is written through the symlink {prefix:?}"),
                ));
            }
        }
        let kind = entry.header().entry_type();
        let target = entry
            .link_name_bytes()
            .map(|t| String::from_utf8_lossy(&t).into_owned());
        match (kind, target) {
            (tar::EntryType::Symlink, Some(t)) => {
                if climbs_out(&parts[..parts.len().saturating_sub(1)], &t) {
                    return Err(bad(
                        &name,
                        format!("is a symlink to {t:?}, which leaves the tree"),
                    ));
                }
                symlinks.insert(parts.join("/"));
            }
            (tar::EntryType::Link, Some(t)) if (t.starts_with('/') || rel_parts(&t).is_err()) => {
                return Err(bad(
                    &name,
                    format!("is a hard link to {t:?}, which leaves the tree"),
                ));
            }
            _ => {}
        }
        count += 1;
    }
    Ok(count)
}

/// Unpacks a checked tarball into `root`, keeping owners, modes and device nodes.
pub fn unpack(archive: &Path, root: &Path) -> Result<(), StageError> {
    crate::tools::run(
        Command::new("tar")
            .arg("-xpf")
            .arg(archive)
            .arg("-C")
            .arg(root)
            .args(["--numeric-owner", "--same-owner"]),
    )?;
    Ok(())
}

/// Unpacks the entries of a checked tarball whose path starts with one of `prefixes` into
/// `root` (directories on the way made as needed): the few files a build reads from the base when
/// it does not unpack the rest.
pub fn unpack_only(archive: &Path, root: &Path, prefixes: &[&str]) -> Result<(), StageError> {
    let file = fs::File::open(archive).map_err(io_err("opening", archive))?;
    let mut tar = tar::Archive::new(file);
    tar.set_preserve_permissions(true);
    tar.set_preserve_ownerships(true);
    tar.set_unpack_xattrs(false);
    // what is left out is seeked over, not read
    for entry in tar
        .entries_with_seek()
        .map_err(io_err("reading", archive))?
    {
        let mut entry = entry.map_err(io_err("reading", archive))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = name.trim_start_matches("./");
        if prefixes.iter().any(|p| name.starts_with(p)) {
            entry
                .unpack_in(root)
                .map_err(io_err("unpacking into", root))?;
        }
    }
    Ok(())
}

/// Lists the overlay directory in sorted order, refusing device nodes, FIFOs, sockets and
/// symlinks that climb out of it.
pub fn scan_overlay(dir: &Path) -> Result<Vec<OverlayItem>, StageError> {
    let mut items = Vec::new();
    for entry in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(|e| StageError::Io {
            what: "reading overlay",
            path: dir.to_path_buf(),
            source: e.into(),
        })?;
        let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        let rel = rel.to_string_lossy().into_owned();
        let ft = entry.file_type();
        let kind = if ft.is_dir() {
            OverlayKind::Dir
        } else if ft.is_file() {
            OverlayKind::File(entry.path().to_path_buf())
        } else if ft.is_symlink() {
            let target =
                fs::read_link(entry.path()).map_err(io_err("reading link", entry.path()))?;
            let target = target.to_string_lossy().into_owned();
            let parent: Vec<&str> = rel.split('/').collect();
            if climbs_out(&parent[..parent.len() - 1], &target) {
                return Err(StageError::OverlayEscape {
                    dir: dir.to_path_buf(),
                    path: rel,
                    target,
                });
            }
            OverlayKind::Symlink(target)
        } else {
            return Err(StageError::OverlaySpecial {
                dir: dir.to_path_buf(),
                path: rel,
                kind: special_kind(&ft),
            });
        };
        items.push(OverlayItem { rel, kind });
    }
    Ok(items)
}

fn special_kind(ft: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_fifo() {
        "FIFO"
    } else {
        "socket"
    }
}

/// `rel` resolved inside `root` as if `root` were `/`: symlinks in the parent directories are
/// followed with absolute targets taken from `root` and `..` stopping at `root`.
pub fn resolve_in_root(root: &Path, rel: &str) -> PathBuf {
    let resolved = resolve(rel, |p| {
        fs::read_link(root.join(p))
            .ok()
            .map(|t| t.to_string_lossy().into_owned())
    });
    root.join(resolved)
}

/// `rel` resolved as [`resolve_in_root`] does, with `read_link` saying where the link at a
/// relative path points (`None`: not a link); the result is relative.
pub fn resolve(rel: &str, read_link: impl Fn(&str) -> Option<String>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut todo: Vec<String> = rel.split('/').rev().map(str::to_string).collect();
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                parts.pop();
                continue;
            }
            _ => {}
        }
        let is_final = todo.iter().all(|p| p.is_empty() || p == ".");
        let here = if parts.is_empty() {
            part.clone()
        } else {
            format!("{}/{part}", parts.join("/"))
        };
        match read_link(&here) {
            Some(target) if !is_final && hops < 40 => {
                hops += 1;
                if target.starts_with('/') {
                    parts.clear();
                }
                todo.extend(target.split('/').rev().map(str::to_string));
            }
            _ => parts.push(part),
        }
    }
    parts.join("/")
}

/// Applies `entries` to `root` in order; parents missing in the base are made 0755, owned by the
/// builder (root).
pub fn apply(entries: &[Entry], root: &Path) -> Result<Applied, StageError> {
    let mut applied = Applied {
        touched: BTreeSet::new(),
        layerable: true,
    };
    for entry in entries {
        let path = resolve_in_root(root, entry.path.relative());
        let rel = |p: &Path| {
            p.strip_prefix(root)
                .map(|r| r.to_string_lossy().into_owned())
                .ok()
        };
        let mut created = Vec::new();
        let mut parent = path.parent();
        while let Some(dir) = parent {
            if dir == root || fs::symlink_metadata(dir).is_ok() {
                break;
            }
            created.push(dir.to_path_buf());
            parent = dir.parent();
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err("creating directory", parent))?;
        }
        // 0755 whatever the umask, as the layer over a base that is not unpacked says
        for dir in created {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                .map_err(io_err("setting mode of", &dir))?;
            applied.touched.extend(rel(&dir));
        }
        if let Ok(old) = fs::symlink_metadata(&path) {
            let new_dir = matches!(entry.content, Content::Dir);
            let new_link = matches!(entry.content, Content::Symlink(_));
            // the kernel cannot put a file where a directory with contents is, nor a link
            // where a link is
            if (old.is_dir() && !new_dir) || (old.file_type().is_symlink() && new_link) {
                applied.layerable = false;
            }
        }
        apply_one(entry, &path)?;
        applied.touched.extend(rel(&path));
    }
    Ok(applied)
}

/// What [`apply`] changed in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Relative paths of everything written or made, directories it had to make included.
    pub touched: BTreeSet<String>,
    /// Whether unpacking the base's tree and then `touched` over it gives the same tree: false
    /// when an entry replaced a directory with something else, or a link with a link.
    pub layerable: bool,
}

fn apply_one(entry: &Entry, path: &Path) -> Result<(), StageError> {
    let existing = fs::symlink_metadata(path).ok();
    let is_dir = existing.as_ref().is_some_and(|m| m.is_dir());
    if !matches!(entry.content, Content::Dir) && existing.is_some() {
        if is_dir {
            fs::remove_dir_all(path).map_err(io_err("replacing directory", path))?;
        } else {
            fs::remove_file(path).map_err(io_err("replacing", path))?;
        }
    }
    match &entry.content {
        Content::Bytes(bytes) => fs::write(path, bytes).map_err(io_err("writing", path))?,
        Content::File(src) => {
            fs::copy(src, path).map_err(io_err("copying into the image", src))?;
        }
        Content::Dir if !is_dir => {
            fs::create_dir_all(path).map_err(io_err("creating directory", path))?
        }
        Content::Dir => {}
        Content::Symlink(target) => {
            symlink(target, path).map_err(io_err("making symlink", path))?
        }
    }
    lchown(path, Some(entry.uid), Some(entry.gid)).map_err(io_err("setting owner of", path))?;
    if !matches!(entry.content, Content::Symlink(_)) {
        fs::set_permissions(path, fs::Permissions::from_mode(entry.mode))
            .map_err(io_err("setting mode of", path))?;
    }
    Ok(())
}

/// Size in bytes of the regular files under `root` plus one block per entry (for sizing ext4).
pub fn tree_size(root: &Path) -> Result<(u64, u64), StageError> {
    let mut bytes = 0;
    let mut count = 0;
    for entry in walkdir::WalkDir::new(root) {
        let entry = entry.map_err(|e| StageError::Io {
            what: "reading",
            path: root.to_path_buf(),
            source: e.into(),
        })?;
        let meta = entry.metadata().map_err(|e| StageError::Io {
            what: "reading",
            path: root.to_path_buf(),
            source: e.into(),
        })?;
        bytes += meta.size().div_ceil(4096) * 4096 + 4096;
        count += 1;
    }
    Ok((bytes, count))
}

/// The path of `p` relative to `root`, checked to stay inside it.
pub fn inside(root: &Path, p: &Path) -> bool {
    p.strip_prefix(root)
        .is_ok_and(|r| r.components().all(|c| matches!(c, Component::Normal(_))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn climbing_targets() {
        assert!(!climbs_out(&["usr", "lib"], "../bin/x"));
        assert!(!climbs_out(&["usr", "lib"], "../../etc"));
        assert!(climbs_out(&["usr", "lib"], "../../../etc"));
        assert!(climbs_out(&[], "../x"));
        assert!(!climbs_out(&[], "/abs/is/inside/the/image"));
    }

    #[test]
    fn resolution_stays_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("/etc", root.join("usr/lib/host-etc")).unwrap();
        assert_eq!(
            resolve_in_root(root, "lib/systemd/x"),
            root.join("usr/lib/systemd/x")
        );
        assert_eq!(
            resolve_in_root(root, "lib/host-etc/passwd"),
            root.join("etc/passwd")
        );
        assert_eq!(resolve_in_root(root, "../../x"), root.join("x"));
        // The final part is not followed: it is what gets replaced.
        assert_eq!(resolve_in_root(root, "lib"), root.join("lib"));
    }
}
