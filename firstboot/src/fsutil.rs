//! Paths placed under the root, so that a plan cannot write outside it. Files themselves are
//! written with `durable::write_atomic`.

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

/// `<root>/<absolute path>`, refusing relative paths and `..` so that a plan cannot write
/// outside the root.
pub fn under_root(root: &Path, abs: &str) -> Result<PathBuf, FsError> {
    let p = Path::new(abs);
    if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(FsError::BadPath(abs.to_string()));
    }
    Ok(root.join(p.strip_prefix("/").expect("absolute")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_outside_the_root_are_refused() {
        let root = Path::new("/r");
        assert_eq!(under_root(root, "/etc/x").unwrap(), Path::new("/r/etc/x"));
        for bad in ["etc/x", "/etc/../../x", ""] {
            assert!(under_root(root, bad).is_err(), "{bad}");
        }
    }
}
