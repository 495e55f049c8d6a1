//! Files that appear whole or not at all, with the mode asked for whatever the umask.
//!
//! The one way every Launcher binary writes a file another process or a later boot reads: a
//! temp file in the same directory, fsync, rename over the target, fsync of the directory. A
//! crash or power cut at any point leaves either the old file or the new one, never a mix.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What failed, on which path.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}", path.display())]
pub struct Error {
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error { what, path, source }
}

/// Writes `bytes` to `path` with `mode` (set explicitly after creation, so the umask cannot
/// narrow or widen it). Missing parent directories are made with the default mode.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(io("making directory", dir))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = write_synced(&tmp, bytes, mode)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(io("renaming into place", path)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir)
}

fn write_synced(tmp: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(tmp)
        .map_err(io("creating", tmp))?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io("setting the mode of", tmp))?;
    file.write_all(bytes).map_err(io("writing", tmp))?;
    file.sync_all().map_err(io("syncing", tmp))
}

/// Fsyncs a directory, so that a rename or a new entry in it survives a power cut.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))
}

/// Makes `dir` and its parents, and sets mode 0700 on `dir` itself.
pub fn private_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(io("making directory", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io("setting the mode of", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<std::ffi::OsString> {
        let mut n: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn writes_set_the_mode_and_leave_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/key.pem");
        write_atomic(&path, b"secret", 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        write_atomic(&path, b"again", 0o644).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"again");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        assert_eq!(names(path.parent().unwrap()), vec!["key.pem"]);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"old", 0o644).unwrap();
        // A directory where the file should be: the rename fails.
        let blocked = dir.path().join("d");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), b"").unwrap();
        let err = write_atomic(&blocked, b"new", 0o644).unwrap_err();
        assert_eq!(err.what, "renaming into place");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(names(dir.path()), vec!["d", "f"]);
    }

    #[test]
    fn private_dirs_are_0700() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("x/state");
        private_dir(&d).unwrap();
        let mode = std::fs::metadata(&d).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
