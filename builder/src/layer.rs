//! The image's own layer over the base, found without unpacking the base: the base's directories
//! and links are read from its tar headers (the data is seeked over), and the layout is applied
//! to that index the way [`stage::apply`] applies it to an unpacked tree. The result is the
//! nodes the layout wrote, for the initrd's second segment.
//!
//! A build uses it when the base's initrd segment is cached and no output needs the whole tree
//! (PXE and ISO only); the layered initrd is then the same bytes as a build that unpacks the base
//! (`tests/initrd_layers.rs` holds them to it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::archive::{Kind, Node};
use crate::layout::{Content, Entry};
use crate::stage::{self, Applied, StageError};

#[derive(Debug, Clone, PartialEq, Eq)]
enum BaseKind {
    Dir,
    Symlink(String),
    /// A regular file, hard link, device node or FIFO.
    Other,
}

/// What the base tarball holds at each relative path, from its headers.
#[derive(Debug, Default)]
pub struct BaseIndex {
    kinds: HashMap<String, BaseKind>,
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StageError + use<> {
    let path = path.to_path_buf();
    move |source| StageError::Io { what, path, source }
}

impl BaseIndex {
    /// Reads the headers of a checked tarball (`stage::check_tarball`).
    pub fn read(archive: &Path) -> Result<BaseIndex, StageError> {
        let file = fs::File::open(archive).map_err(io_err("opening", archive))?;
        let mut tar = tar::Archive::new(file);
        let mut index = BaseIndex::default();
        for entry in tar
            .entries_with_seek()
            .map_err(io_err("reading", archive))?
        {
            let entry = entry.map_err(io_err("reading", archive))?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let rel = name
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_string();
            if rel.is_empty() || rel == "." {
                continue;
            }
            let kind = match entry.header().entry_type() {
                tar::EntryType::Directory => BaseKind::Dir,
                tar::EntryType::Symlink => BaseKind::Symlink(
                    entry
                        .link_name_bytes()
                        .map(|t| String::from_utf8_lossy(&t).into_owned())
                        .unwrap_or_default(),
                ),
                _ => BaseKind::Other,
            };
            index.kinds.insert(rel, kind);
        }
        Ok(index)
    }

    fn read_link(&self, rel: &str) -> Option<String> {
        match self.kinds.get(rel) {
            Some(BaseKind::Symlink(t)) => Some(t.clone()),
            _ => None,
        }
    }
}

/// Sort key that orders paths as a walk of the tree does (a directory's children right after it,
/// siblings by name): by their components.
fn tree_order(rel: &str) -> Vec<String> {
    rel.split('/').map(str::to_string).collect()
}

/// Applies `entries` to `base`'s index; returns the nodes at every path the layout wrote or made,
/// in tree order, and what was touched. File contents given as bytes are written under
/// `scratch`.
pub fn apply(
    entries: &[Entry],
    base: &mut BaseIndex,
    scratch: &Path,
) -> Result<(Vec<Node>, Applied), StageError> {
    fs::create_dir_all(scratch).map_err(io_err("creating", scratch))?;
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    let mut applied = Applied {
        touched: BTreeSet::new(),
        layerable: true,
    };
    let mut nodes: BTreeMap<Vec<String>, Node> = BTreeMap::new();
    let node = |rel: &str, path: PathBuf, kind: Kind, mode: u32, uid: u32, gid: u32| Node {
        rel: rel.to_string(),
        path,
        kind,
        mode,
        uid,
        gid,
        inode: (0, 0),
    };
    for (i, entry) in entries.iter().enumerate() {
        let rel = stage::resolve(entry.path.relative(), |p| base.read_link(p));
        // parents the base lacks are made as `create_dir_all` makes them (`stage::apply`)
        let mut missing = Vec::new();
        let mut parent = rel.rsplit_once('/').map(|(p, _)| p.to_string());
        while let Some(dir) = parent {
            if base.kinds.contains_key(&dir) {
                break;
            }
            parent = dir.rsplit_once('/').map(|(p, _)| p.to_string());
            missing.push(dir);
        }
        for dir in missing.into_iter().rev() {
            base.kinds.insert(dir.clone(), BaseKind::Dir);
            let n = node(&dir, PathBuf::new(), Kind::Dir, 0o755, uid, gid);
            nodes.insert(tree_order(&dir), n);
            applied.touched.insert(dir);
        }
        let new_dir = matches!(entry.content, Content::Dir);
        let new_link = matches!(entry.content, Content::Symlink(_));
        match base.kinds.get(&rel) {
            Some(BaseKind::Dir) if !new_dir => applied.layerable = false,
            Some(BaseKind::Symlink(_)) if new_link => applied.layerable = false,
            _ => {}
        }
        let mode = entry.mode & 0o7777;
        let (kind, path, mode) = match &entry.content {
            Content::Bytes(bytes) => {
                let file = scratch.join(format!("{i}"));
                fs::write(&file, bytes).map_err(io_err("writing", &file))?;
                (
                    Kind::File {
                        size: bytes.len() as u64,
                    },
                    file,
                    mode,
                )
            }
            Content::File(src) => {
                let meta = fs::metadata(src).map_err(io_err("reading", src))?;
                (Kind::File { size: meta.len() }, src.clone(), mode)
            }
            Content::Dir => (Kind::Dir, PathBuf::new(), mode),
            // a link's own mode is always 0777
            Content::Symlink(target) => (Kind::Symlink(target.clone()), PathBuf::new(), 0o777),
        };
        base.kinds.insert(
            rel.clone(),
            match &kind {
                Kind::Dir => BaseKind::Dir,
                Kind::Symlink(t) => BaseKind::Symlink(t.clone()),
                _ => BaseKind::Other,
            },
        );
        nodes.insert(
            tree_order(&rel),
            node(&rel, path, kind, mode, entry.uid, entry.gid),
        );
        applied.touched.insert(rel);
    }
    Ok((nodes.into_values().collect(), applied))
}
