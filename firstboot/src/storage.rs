//! The storage phase: a disk labelled `LAUNCHER-DATA` keeps etcd's, containerd's, kubelet's and
//! firstboot's own state across reboots of a host that runs from RAM.
//!
//! A formatted disk (filesystem label `LAUNCHER-DATA`) is mounted and the state directories are
//! bind-mounted onto it; this also happens before the journal is read, so a rebooted host
//! resumes from the journal on its disk. A partition named `LAUNCHER-DATA` without a filesystem
//! is formatted only when `launcher.wipe=1` says so, and then before the host's identity key is
//! made ([`format_early`], see `hostkey`), so that the key is born on the disk. A formatted disk
//! is never reformatted, even before udev has made its by-label link: the superblock is read.

use crate::fsutil::{self, FsError};
use crate::os::{Cmd, Os, OsError};
use std::path::{Path, PathBuf};

pub const DATA_LABEL: &str = "LAUNCHER-DATA";
/// Where the data disk is mounted.
pub const DATA_MOUNT: &str = "/var/lib/launcher-data";
/// State directories kept on the data disk, each bind-mounted from `<DATA_MOUNT>/<name>`.
pub const STATE_DIRS: [(&str, &str); 4] = [
    ("launcher", "/var/lib/launcher"),
    ("etcd", "/var/lib/etcd"),
    ("containerd", "/var/lib/containerd"),
    ("kubelet", "/var/lib/kubelet"),
];
/// On the data disk: the seed asked for a reset; the disk is cleared when next attached.
pub const RESET_MARKER: &str = "launcher-reset";
/// Marker that the disk is attached in this boot (`/run` is empty after a reboot).
const ATTACHED_MARKER: &str = "/run/launcher/data-attached";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("copying {from} onto the data disk at {to}")]
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Durable(#[from] durable::Error),
    #[error(transparent)]
    Os(#[from] OsError),
}

/// What the machine has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disk {
    /// A filesystem labelled `LAUNCHER-DATA`, by its device path.
    Formatted(PathBuf),
    /// A partition named `LAUNCHER-DATA` with no filesystem yet.
    Unformatted(PathBuf),
    None,
}

pub fn find(root: &Path) -> Disk {
    let by_label = root.join("dev/disk/by-label").join(DATA_LABEL);
    let by_partlabel = root.join("dev/disk/by-partlabel").join(DATA_LABEL);
    if by_label.exists() {
        Disk::Formatted(by_label)
    } else if by_partlabel.exists() {
        Disk::Unformatted(by_partlabel)
    } else {
        Disk::None
    }
}

/// Copies `from` into `to`, every file and directory synced: the copy must survive a power cut
/// right after the phase that made it.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &dest)?;
            std::fs::set_permissions(&dest, entry.metadata()?.permissions())?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &dest)?;
            std::fs::File::open(&dest)?.sync_all()?;
        }
    }
    std::fs::File::open(to)?.sync_all()
}

/// Carries `in_ram` over to `on_disk` whole or not at all: copied beside it, then renamed into
/// place, so that a power cut mid-copy leaves no half-filled directory that a later boot would
/// take as complete.
fn carry_over(in_ram: &Path, on_disk: &Path) -> std::io::Result<()> {
    let partial = on_disk.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial)?;
    }
    copy_tree(in_ram, &partial)?;
    std::fs::set_permissions(&partial, std::fs::metadata(in_ram)?.permissions())?;
    if on_disk.exists() {
        std::fs::remove_dir(on_disk)?;
    }
    std::fs::rename(&partial, on_disk)?;
    match on_disk.parent() {
        Some(parent) => std::fs::File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

/// Whether the data disk was attached earlier in this boot.
fn attached(root: &Path) -> Result<bool, StorageError> {
    Ok(fsutil::under_root(root, ATTACHED_MARKER)?.exists())
}

/// Whether this host's state lives on its data disk in this boot.
pub fn data_disk_attached(root: &Path) -> Result<bool, StorageError> {
    attached(root)
}

/// Marks the attached data disk to be cleared at the next boot (the seed's `reset`), durably.
pub fn mark_for_reset(root: &Path) -> Result<(), StorageError> {
    let marker = fsutil::under_root(root, DATA_MOUNT)?.join(RESET_MARKER);
    durable::write_atomic(&marker, b"reset asked by the seed\n", 0o600)?;
    Ok(())
}

/// Clears what a reset asked for on the data disk mounted at `mount_point`: every state
/// directory (the identity key and journal first), then the marker, so that a power cut
/// half-way clears again at the next boot.
fn clear_for_reset(mount_point: &Path) -> Result<(), StorageError> {
    let marker = mount_point.join(RESET_MARKER);
    if !marker.exists() {
        return Ok(());
    }
    tracing::warn!(
        "the seed asked for a reset: clearing {}",
        mount_point.display()
    );
    for (name, _) in STATE_DIRS {
        for dir in [
            mount_point.join(name),
            mount_point.join(format!("{name}.partial")),
        ] {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(FsError::Io {
                        what: "clearing for a reset",
                        path: dir,
                        source,
                    }
                    .into());
                }
            }
        }
    }
    std::fs::File::open(mount_point)
        .and_then(|d| d.sync_all())
        .map_err(|source| FsError::Io {
            what: "syncing",
            path: mount_point.to_path_buf(),
            source,
        })?;
    std::fs::remove_file(&marker).map_err(|source| FsError::Io {
        what: "removing",
        path: marker.clone(),
        source,
    })?;
    Ok(())
}

/// Mounts a formatted data disk and binds the state directories onto it, once per boot.
/// Returns whether the host's state lives on a data disk.
pub fn attach(root: &Path, os: &dyn Os) -> Result<bool, StorageError> {
    if attached(root)? {
        return Ok(true);
    }
    let Disk::Formatted(device) = find(root) else {
        return Ok(false);
    };
    attach_device(root, os, &device)
}

fn attach_device(root: &Path, os: &dyn Os, device: &Path) -> Result<bool, StorageError> {
    let marker = fsutil::under_root(root, ATTACHED_MARKER)?;
    let mount_point = fsutil::under_root(root, DATA_MOUNT)?;
    std::fs::create_dir_all(&mount_point).map_err(|source| FsError::Io {
        what: "making directory",
        path: mount_point.clone(),
        source,
    })?;
    os.mount(
        &device.to_string_lossy(),
        &mount_point.to_string_lossy(),
        None,
        false,
    )?;
    clear_for_reset(&mount_point)?;
    for (name, dir) in STATE_DIRS {
        let on_disk = mount_point.join(name);
        let in_ram = fsutil::under_root(root, dir)?;
        std::fs::create_dir_all(&in_ram).map_err(|source| FsError::Io {
            what: "making directory",
            path: in_ram.clone(),
            source,
        })?;
        // First use of the disk: carry over what this boot wrote so far.
        if is_empty_dir(&on_disk) {
            carry_over(&in_ram, &on_disk).map_err(|source| StorageError::Copy {
                from: in_ram.clone(),
                to: on_disk.clone(),
                source,
            })?;
        }
        os.mount(
            &on_disk.to_string_lossy(),
            &in_ram.to_string_lossy(),
            None,
            true,
        )?;
    }
    durable::write_atomic(&marker, b"", 0o644)?;
    Ok(true)
}

/// Where an ext2/3/4 superblock keeps its magic number, and the number.
const EXT_MAGIC_AT: u64 = 1024 + 0x38;
const EXT_MAGIC: [u8; 2] = [0x53, 0xef];

/// Whether `device` holds an ext filesystem, read from the device itself: its by-label link
/// comes from udev, which may not have made it yet.
fn has_ext_filesystem(device: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut magic = [0u8; 2];
    std::fs::File::open(device)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(EXT_MAGIC_AT))?;
            f.read_exact(&mut magic)
        })
        .is_ok_and(|()| magic == EXT_MAGIC)
}

fn format_and_attach(root: &Path, os: &dyn Os, device: &Path) -> Result<bool, StorageError> {
    if has_ext_filesystem(device) {
        tracing::info!(
            "{} already has a filesystem: attaching it without formatting",
            device.display()
        );
    } else {
        let dev = device.to_string_lossy();
        os.run(&Cmd::new(
            "mkfs.ext4",
            &["-F", "-q", "-L", DATA_LABEL, &dev],
        ))?;
    }
    attach_device(root, os, device)
}

/// Formats and attaches an empty `LAUNCHER-DATA` partition now, ahead of the storage phase, if
/// `wipe` allows formatting it; otherwise does nothing and leaves the storage phase to say what
/// it found. Called before something that must outlive this boot is first written.
pub fn format_early(root: &Path, os: &dyn Os, wipe: bool) -> Result<(), StorageError> {
    if let Disk::Unformatted(device) = find(root)
        && wipe
        && !attached(root)?
    {
        format_and_attach(root, os, &device)?;
    }
    Ok(())
}

/// The phase: attach a formatted disk, format an empty one only if `wipe`, else run from RAM.
/// A disk already attached in this boot (by [`attach`] or [`format_early`]) is kept as it is:
/// its by-label link may not exist yet right after `mkfs`.
pub fn storage(root: &Path, os: &dyn Os, wipe: bool) -> Result<bool, StorageError> {
    if attached(root)? {
        return Ok(true);
    }
    match find(root) {
        Disk::Unformatted(device) if wipe => format_and_attach(root, os, &device),
        Disk::Unformatted(device) => {
            tracing::warn!(
                "{} has no filesystem; boot with launcher.wipe=1 to format it. Running from RAM",
                device.display()
            );
            Ok(false)
        }
        Disk::Formatted(_) => attach(root, os),
        Disk::None => {
            tracing::info!("no {DATA_LABEL} disk: state lives in RAM until the next boot");
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::{Action, RecordingOs};

    #[test]
    fn a_formatted_disk_is_mounted_and_state_dirs_bound_once() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("dev/disk/by-label")).unwrap();
        std::fs::write(r.join("dev/disk/by-label/LAUNCHER-DATA"), "").unwrap();
        std::fs::create_dir_all(r.join("var/lib/launcher/keys")).unwrap();
        std::fs::write(r.join("var/lib/launcher/firstboot.json"), "{}").unwrap();
        let os = RecordingOs::new(std::time::Duration::ZERO, false);
        assert!(storage(r, &os, false).unwrap());
        let actions = os.actions();
        assert_eq!(actions.len(), 5);
        assert!(matches!(&actions[0], Action::Mount { bind: false, .. }));
        assert!(
            matches!(&actions[1], Action::Mount { bind: true, target, .. } if target.ends_with("var/lib/launcher"))
        );
        assert_eq!(
            std::fs::read_to_string(r.join("var/lib/launcher-data/launcher/firstboot.json"))
                .unwrap(),
            "{}"
        );
        assert!(attach(r, &os).unwrap());
        assert_eq!(os.actions().len(), 5, "attached once per boot");
    }

    #[test]
    fn a_disk_marked_for_reset_is_cleared_when_attached_and_only_then() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("dev/disk/by-label")).unwrap();
        std::fs::write(r.join("dev/disk/by-label/LAUNCHER-DATA"), "").unwrap();
        let data = r.join("var/lib/launcher-data");
        for (name, _) in STATE_DIRS {
            std::fs::create_dir_all(data.join(name)).unwrap();
            std::fs::write(data.join(name).join("state"), name).unwrap();
        }
        std::fs::create_dir_all(data.join("lost+found")).unwrap();
        // Not marked: attached as it is.
        let os = RecordingOs::new(std::time::Duration::ZERO, false);
        assert!(storage(r, &os, false).unwrap());
        assert!(data.join("launcher/state").exists());
        assert!(data_disk_attached(r).unwrap());

        // Marked (as the agent does on `reset`), then the next boot attaches it cleared.
        mark_for_reset(r).unwrap();
        std::fs::remove_file(r.join("run/launcher/data-attached")).unwrap();
        std::fs::create_dir_all(r.join("var/lib/launcher")).unwrap();
        std::fs::write(r.join("var/lib/launcher/written-this-boot"), "new").unwrap();
        assert!(storage(r, &os, false).unwrap());
        for (name, _) in STATE_DIRS {
            assert!(!data.join(name).join("state").exists(), "{name} kept");
        }
        assert!(!data.join(RESET_MARKER).exists());
        assert!(data.join("lost+found").is_dir());
        // What this boot wrote before the disk was attached is carried over onto it.
        assert_eq!(
            std::fs::read_to_string(data.join("launcher/written-this-boot")).unwrap(),
            "new"
        );
    }

    #[test]
    fn a_copy_cut_short_by_a_power_loss_is_redone_whole() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("dev/disk/by-label")).unwrap();
        std::fs::write(r.join("dev/disk/by-label/LAUNCHER-DATA"), "").unwrap();
        std::fs::create_dir_all(r.join("var/lib/launcher/keys")).unwrap();
        std::fs::write(r.join("var/lib/launcher/keys/kubelet-client.key"), "KEY").unwrap();
        // The last boot died copying: a partial tree beside an empty directory.
        let data = r.join("var/lib/launcher-data");
        std::fs::create_dir_all(data.join("launcher.partial/keys")).unwrap();
        std::fs::write(data.join("launcher.partial/keys/kubelet-client.key"), "").unwrap();
        std::fs::create_dir_all(data.join("launcher")).unwrap();
        let os = RecordingOs::new(std::time::Duration::ZERO, false);
        assert!(storage(r, &os, false).unwrap());
        assert_eq!(
            std::fs::read_to_string(data.join("launcher/keys/kubelet-client.key")).unwrap(),
            "KEY"
        );
        assert!(!data.join("launcher.partial").exists());
        let mode = std::fs::metadata(data.join("launcher/keys"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(r.join("var/lib/launcher/keys"))
                    .unwrap()
                    .permissions()
            ) & 0o777
        );
    }

    #[test]
    fn an_empty_partition_is_formatted_only_with_wipe() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("dev/disk/by-partlabel")).unwrap();
        std::fs::write(r.join("dev/disk/by-partlabel/LAUNCHER-DATA"), "").unwrap();
        let os = RecordingOs::new(std::time::Duration::ZERO, false);
        assert!(!storage(r, &os, false).unwrap());
        assert!(os.actions().is_empty());
        assert!(storage(r, &os, true).unwrap());
        let first = os.actions()[0].clone();
        assert!(matches!(first, Action::Run { cmd } if cmd.program == "mkfs.ext4"));
    }

    #[test]
    fn a_partition_formatted_early_is_not_formatted_again_by_the_phase() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("dev/disk/by-partlabel")).unwrap();
        std::fs::write(r.join("dev/disk/by-partlabel/LAUNCHER-DATA"), "").unwrap();
        let os = RecordingOs::new(std::time::Duration::ZERO, false);
        format_early(r, &os, false).unwrap();
        assert!(os.actions().is_empty(), "formatted without wipe");
        format_early(r, &os, true).unwrap();
        format_early(r, &os, true).unwrap();
        // The fake's mkfs makes no by-label link: only the marker says the disk is attached.
        assert!(storage(r, &os, true).unwrap());
        let formats = os
            .actions()
            .into_iter()
            .filter(|a| matches!(a, Action::Run { cmd } if cmd.program == "mkfs.ext4"))
            .count();
        assert_eq!(formats, 1, "{:?}", os.actions());
        assert_eq!(os.actions().len(), 6, "mkfs, the mount and four binds");
    }

    #[test]
    fn a_filesystem_udev_has_not_labelled_yet_is_attached_not_formatted() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let mut device = vec![0u8; 4096];
        device[EXT_MAGIC_AT as usize..][..2].copy_from_slice(&EXT_MAGIC);
        std::fs::create_dir_all(r.join("dev/disk/by-partlabel")).unwrap();
        std::fs::write(r.join("dev/disk/by-partlabel/LAUNCHER-DATA"), device).unwrap();
        let os = RecordingOs::new(std::time::Duration::ZERO, false);
        format_early(r, &os, true).unwrap();
        let actions = os.actions();
        assert!(
            matches!(&actions[0], Action::Mount { bind: false, .. }),
            "{actions:?}"
        );
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Run { .. })),
            "{actions:?}"
        );
    }

    #[test]
    fn no_disk_means_ram() {
        let root = tempfile::tempdir().unwrap();
        let os = RecordingOs::new(std::time::Duration::ZERO, false);
        assert!(!storage(root.path(), &os, true).unwrap());
        assert!(os.actions().is_empty());
    }
}
