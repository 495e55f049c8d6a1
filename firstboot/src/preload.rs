//! The preload phase: import the image's OCI archives into containerd and pin them against
//! kubelet's garbage collection (an offline node cannot pull them back).

use crate::fsutil::{self, FsError};
use crate::os::{Cmd, Os, OsError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The label that keeps an image from kubelet's image garbage collection.
pub const PINNED_LABEL: &str = "io.cri-containerd.pinned=pinned";
const NAMESPACE: &str = "k8s.io";
const IMPORT_TRIES: u32 = 15;

#[derive(Debug, thiserror::Error)]
pub enum PreloadError {
    #[error("listing {0}")]
    List(PathBuf, #[source] std::io::Error),
    #[error("importing {archive} into containerd at {address} after {tries} tries")]
    Import {
        archive: PathBuf,
        address: String,
        tries: u32,
        #[source]
        source: Box<OsError>,
    },
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Os(#[from] OsError),
}

/// The archives to import, sorted by name.
pub fn archives(dir: &Path) -> Result<Vec<PathBuf>, PreloadError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(PreloadError::List(dir.to_path_buf(), e)),
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tar") && p.is_file())
        .collect();
    out.sort();
    Ok(out)
}

/// Image names from `ctr images import`'s output (`unpacking NAME (sha256:…)…done`).
pub fn imported_names(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.trim().strip_prefix("unpacking "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn ctr(address: &str, args: &[&str]) -> Cmd {
    let mut all = vec!["--address", address, "-n", NAMESPACE];
    all.extend_from_slice(args);
    Cmd::new("ctr", &all)
}

fn import(os: &dyn Os, address: &str, archive: &Path) -> Result<String, PreloadError> {
    let path = archive.to_string_lossy();
    let cmd = ctr(address, &["images", "import", &path]);
    let mut last = None;
    for attempt in 1..=IMPORT_TRIES {
        match os.run(&cmd) {
            Ok(out) => return Ok(out),
            Err(e) => {
                // containerd may still be starting after its restart.
                tracing::warn!(attempt, "importing {path}: {e}");
                last = Some(e);
                os.sleep(Duration::from_secs(1));
            }
        }
    }
    Err(PreloadError::Import {
        archive: archive.to_path_buf(),
        address: address.to_string(),
        tries: IMPORT_TRIES,
        source: Box::new(last.expect("at least one try")),
    })
}

/// Restarts containerd on its new configuration when `restart`, then imports and pins every
/// archive of `dir` (a path on the host, placed under `root`). Returns the image names pinned.
pub fn preload(
    root: &Path,
    os: &dyn Os,
    dir: &str,
    address: &str,
    restart: bool,
) -> Result<Vec<String>, PreloadError> {
    // containerd reads the configuration materialize wrote only when it starts.
    if restart {
        os.run(&Cmd::new("systemctl", &["restart", "containerd.service"]))?;
    }
    let found = archives(&fsutil::under_root(root, dir)?)?;
    if found.is_empty() {
        tracing::info!("no image archives in {dir}: nothing to preload");
        return Ok(Vec::new());
    }
    let mut names = Vec::new();
    for archive in &found {
        let out = import(os, address, archive)?;
        for name in imported_names(&out) {
            os.run(&ctr(address, &["images", "label", &name, PINNED_LABEL]))?;
            names.push(name);
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::{Action, RecordingOs};

    #[test]
    fn names_come_from_unpacking_lines() {
        let out = "unpacking docker.io/library/busybox:1.36 (sha256:abc)...done\nunpacking 10.0.0.1:8443/k8s/pause:3.10 (sha256:def)...done\n";
        assert_eq!(
            imported_names(out),
            vec![
                "docker.io/library/busybox:1.36",
                "10.0.0.1:8443/k8s/pause:3.10"
            ]
        );
    }

    #[test]
    fn every_archive_is_imported_then_pinned() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("usr/share/launcher/images");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("b.tar"), "").unwrap();
        std::fs::write(dir.join("a.tar"), "").unwrap();
        std::fs::write(dir.join("notes.txt"), "").unwrap();
        let mut os = RecordingOs::new(Duration::ZERO, false);
        os.outputs
            .insert("ctr".into(), "unpacking x/y:1 (sha256:0)...done\n".into());
        let names = preload(
            root.path(),
            &os,
            "/usr/share/launcher/images",
            "/run/c.sock",
            true,
        )
        .unwrap();
        assert_eq!(names, vec!["x/y:1", "x/y:1"]);
        let cmds: Vec<String> = os
            .actions()
            .into_iter()
            .map(|a| match a {
                Action::Run { cmd } => cmd.to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(cmds[0], "systemctl restart containerd.service");
        let import = format!("images import {}", dir.join("a.tar").display());
        assert!(cmds[1].ends_with(&import), "{}", cmds[1]);
        assert_eq!(
            cmds[2],
            "ctr --address /run/c.sock -n k8s.io images label x/y:1 io.cri-containerd.pinned=pinned"
        );
        assert_eq!(cmds.len(), 5);
    }
}
