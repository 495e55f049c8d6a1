//! The host's identity key: made once, on the host's first boot, kept beside firstboot's journal,
//! and presented as the TLS client certificate on every connection to the seed, which binds the
//! host to it at its first enrollment ([`cluster::pki::HostIdentityKey`]).
//!
//! It lives at `/var/lib/launcher/identity/key.pem` (0600, its directory 0700), in the journal's
//! directory. A host runs from RAM (PXE, the initrd as its root); what outlives a reboot is the
//! `LAUNCHER-DATA` disk, onto which `/var/lib/launcher` is bind-mounted (see `storage`):
//! - A formatted disk is attached before the journal is read and before any request to the seed,
//!   so a rebooted host reads the key it made on its first boot.
//! - On a first boot the partition is still empty (every lab host; any host booted with
//!   `launcher.wipe=1`), and the storage phase formats it only after enrollment, by which time
//!   the seed has bound the key. A key kept in RAM until then would be lost to a power cut during
//!   enrollment (which may wait hours for an approval), and the host refused until an operator
//!   reset it. So before a key is made, an empty partition that `launcher.wipe=1` lets firstboot
//!   format is formatted and attached ([`storage::format_early`]): the key is written on the disk
//!   before the seed ever sees it.
//! - A host whose data disk was blanked or replaced finds no key, makes a new one and is refused
//!   (`identity_taken`) until an operator runs `launcher-seed hosts reset`: the seed binds the
//!   disk's key, not the MAC, UUID or serial anyone on the LAN can claim.
//! - A host without a data disk (or with an empty one it may not format) keeps its key in RAM:
//!   each boot is a new identity, refused until reset.
//!
//! The key is written whole or not at all, and before the first request that presents it, so a
//! power cut at any moment leaves either no key (none was ever shown to the seed, so a new one
//! is made) or the key the seed may have bound. A key file that does not parse stops the run
//! instead of being replaced: the seed would refuse a new key, and the file may be repairable.

use crate::fsutil::{self, FsError};
use crate::os::Os;
use crate::storage::{self, StorageError};
use cluster::pki::HostIdentityKey;
use std::path::{Path, PathBuf};

/// Path of the identity key, under the root.
pub const IDENTITY_KEY: &str = "/var/lib/launcher/identity/key.pem";

#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error("reading the identity key {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error(
        "the identity key {path} does not parse ({reason}); firstboot does not make a new one, since the seed refuses this host under another key: restore the file, or move it away and run `launcher-seed hosts reset <host id>` on the seed"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("making the identity key: {0}")]
    Generate(String),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Durable(#[from] durable::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Where the identity key is kept under `root`.
pub fn key_path(root: &Path) -> PathBuf {
    fsutil::under_root(root, IDENTITY_KEY).expect("constant path")
}

/// The host's identity key: the one kept under `root`, or on the first boot a new one, written
/// on the data disk when there is one it may use (formatting an empty one if `wipe`).
pub fn load_or_make(root: &Path, os: &dyn Os, wipe: bool) -> Result<HostIdentityKey, HostKeyError> {
    let path = key_path(root);
    if let Some(key) = load(&path)? {
        return Ok(key);
    }
    storage::format_early(root, os, wipe)?;
    let key = HostIdentityKey::generate().map_err(|e| HostKeyError::Generate(e.to_string()))?;
    let dir = path.parent().expect("the key path has a directory");
    durable::private_dir(dir)?;
    durable::write_atomic(&path, key.key_pem.as_bytes(), 0o600)?;
    // The directory is new too: its entry must outlive a power cut along with the file.
    durable::sync_dir(dir.parent().expect("the key directory has a parent"))?;
    Ok(key)
}

/// The host's identity key, which must be there already: the resident agent never makes one.
pub fn load_existing(root: &Path) -> Result<HostIdentityKey, HostKeyError> {
    let path = key_path(root);
    match load(&path)? {
        Some(key) => Ok(key),
        None => Err(HostKeyError::Read(
            path,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        )),
    }
}

fn load(path: &Path) -> Result<Option<HostIdentityKey>, HostKeyError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(HostKeyError::Read(path.to_path_buf(), e)),
    };
    let corrupt = |reason: String| HostKeyError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let pem = String::from_utf8(bytes).map_err(|_| corrupt("not UTF-8 text".into()))?;
    // Parsed here first so that the reason names the key rather than the certificate.
    rcgen::KeyPair::from_pem(&pem).map_err(|e| corrupt(format!("not a PEM private key: {e}")))?;
    HostIdentityKey::from_key_pem(&pem)
        .map(Some)
        .map_err(|e| corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::{Action, RecordingOs};
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_key_is_made_once_private_and_then_reused() {
        let root = tempfile::tempdir().unwrap();
        let os = RecordingOs::new(Duration::ZERO, false);
        let first = load_or_make(root.path(), &os, false).unwrap();
        let path = key_path(root.path());
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first.key_pem);
        let again = load_or_make(root.path(), &os, false).unwrap();
        assert_eq!(again.id().unwrap(), first.id().unwrap());
        assert!(os.actions().is_empty());
    }

    #[test]
    fn a_key_file_that_does_not_parse_is_refused_and_kept() {
        let root = tempfile::tempdir().unwrap();
        let os = RecordingOs::new(Duration::ZERO, false);
        let path = key_path(root.path());
        let cases: [(&[u8], &str); 3] = [
            (b"", "the identity key"),
            (
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "the identity key",
            ),
            (b"\xff\xfe", "not UTF-8 text"),
        ];
        for (bytes, reason) in cases {
            durable::write_atomic(&path, bytes, 0o600).unwrap();
            let err = load_or_make(root.path(), &os, true)
                .unwrap_err()
                .to_string();
            let want = format!("the identity key {} does not parse (", path.display());
            assert!(err.starts_with(&want), "{err}");
            assert!(err.contains(reason), "{err}");
            assert!(
                err.ends_with("); firstboot does not make a new one, since the seed refuses this host under another key: restore the file, or move it away and run `launcher-seed hosts reset <host id>` on the seed"),
                "{err}"
            );
            assert_eq!(std::fs::read(&path).unwrap(), bytes);
        }
        assert!(os.actions().is_empty());
    }

    #[test]
    fn a_first_key_is_made_after_an_empty_data_partition_is_formatted_if_wipe() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("dev/disk/by-partlabel")).unwrap();
        std::fs::write(r.join("dev/disk/by-partlabel/LAUNCHER-DATA"), "").unwrap();
        let os = RecordingOs::new(Duration::ZERO, false);
        let key = load_or_make(r, &os, true).unwrap();
        let actions = os.actions();
        assert!(
            matches!(&actions[0], Action::Run { cmd } if cmd.program == "mkfs.ext4"),
            "{actions:?}"
        );
        assert!(
            actions.iter().any(|a| matches!(a, Action::Mount { bind: true, target, .. } if target.ends_with("var/lib/launcher"))),
            "{actions:?}"
        );
        // Reused, and the disk is not formatted again.
        let again = load_or_make(r, &os, true).unwrap();
        assert_eq!(again.id().unwrap(), key.id().unwrap());
        assert_eq!(os.actions().len(), actions.len());
    }
}
