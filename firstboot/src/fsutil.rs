//! Files that appear whole or not at all, and paths placed under the root.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("path {0:?} must be absolute and must not contain `..`")]
    BadPath(String),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FsError {
    let path = path.to_path_buf();
    move |source| FsError::Io { what, path, source }
}

/// `<root>/<absolute path>`, refusing relative paths and `..` so that a plan cannot write
/// outside the root.
pub fn under_root(root: &Path, abs: &str) -> Result<PathBuf, FsError> {
    let p = Path::new(abs);
    if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(FsError::BadPath(abs.to_string()));
    }
    Ok(root.join(p.strip_prefix("/").expect("absolute")))
}

/// Writes `bytes` to `path` with `mode`: a temp file in the same directory, fsync, rename, then
/// fsync of the directory. Parent directories are made (0755) when missing.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FsError> {
    let dir = path
        .parent()
        .ok_or_else(|| FsError::BadPath(path.display().to_string()))?;
    std::fs::create_dir_all(dir).map_err(io("making directory", dir))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    // The umask may have narrowed the mode given at creation.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io("setting the mode of", &tmp))?;
    file.write_all(bytes).map_err(io("writing", &tmp))?;
    file.sync_all().map_err(io("syncing", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io("renaming into place", path))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Makes `dir` and its parents with mode 0700 for the last component.
pub fn private_dir(dir: &Path) -> Result<(), FsError> {
    std::fs::create_dir_all(dir).map_err(io("making directory", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io("setting the mode of", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_set_the_mode_and_leave_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/key.pem");
        write_atomic(&path, b"secret", 0o600).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        write_atomic(&path, b"again", 0o644).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"again");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("key.pem")]);
    }

    #[test]
    fn paths_outside_the_root_are_refused() {
        let root = Path::new("/r");
        assert_eq!(under_root(root, "/etc/x").unwrap(), Path::new("/r/etc/x"));
        for bad in ["etc/x", "/etc/../../x", ""] {
            assert!(under_root(root, bad).is_err(), "{bad}");
        }
    }
}
