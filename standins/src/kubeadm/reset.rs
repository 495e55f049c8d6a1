//! `kubeadm reset --force`, as kubeadm v1.33's `cleanup-node` phase does it on a node with an
//! external etcd (so nothing of etcd is touched): the kubelet service stopped, the containers
//! of the static Pods removed through the container runtime, the contents of the manifests
//! directory, `/var/lib/kubelet` and the certificates directory deleted, then the kubeconfig
//! files kubeadm writes. As kubeadm, each step that fails is a warning and the next one runs:
//! a reset is how a half-done init is cleared, so it goes as far as it can.

use std::cell::RefCell;

use crate::Root;
use crate::kubelet::pods::Ctr;

/// The directories whose contents kubeadm deletes.
pub const CLEANED_DIRS: [&str; 3] = [
    "/etc/kubernetes/manifests",
    "/var/lib/kubelet",
    "/etc/kubernetes/pki",
];
/// The files kubeadm deletes.
pub const DELETED_FILES: [&str; 6] = [
    "/etc/kubernetes/admin.conf",
    "/etc/kubernetes/super-admin.conf",
    "/etc/kubernetes/kubelet.conf",
    "/etc/kubernetes/bootstrap-kubelet.conf",
    "/etc/kubernetes/controller-manager.conf",
    "/etc/kubernetes/scheduler.conf",
];

/// What a reset did, and the steps that failed (kubeadm's warnings).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reset {
    pub lines: Vec<String>,
    pub warnings: Vec<String>,
}

/// Resets the node under `root`; `cri_socket` is the runtime's endpoint (`unix://` or a path).
/// On a real host (`root` is `/`) the kubelet service is stopped with systemctl; under another
/// root (tests) there is no service to stop, which is said.
pub fn run(root: &Root, cri_socket: &str) -> Reset {
    let mut out = Reset::default();
    if root.0 == std::path::Path::new("/") {
        out.lines
            .push("[reset] Stopping the kubelet service".into());
        let stopped = std::process::Command::new("systemctl")
            .args(["stop", "kubelet"])
            .status();
        if !matches!(stopped, Ok(s) if s.success()) {
            out.warnings.push(
                "[reset] The kubelet service could not be stopped by kubeadm: please ensure kubelet is stopped manually".into(),
            );
        }
    } else {
        out.lines
            .push("[reset] Not stopping a kubelet service: LAUNCHER_STANDIN_ROOT is set".into());
    }
    let ctr = Ctr {
        address: root
            .path(cri_socket.trim_start_matches("unix://"))
            .to_string_lossy()
            .into_owned(),
        hosts_dir: String::new(),
        log_dir: String::new(),
        root: root.clone(),
        no_pivot: false,
        known: RefCell::new(None),
    };
    match ctr.remove_static_pods() {
        Ok(removed) => out.lines.push(format!(
            "[reset] Removed Kubernetes-managed containers: {removed:?}"
        )),
        Err(e) => out
            .warnings
            .push(format!("[reset] Failed to remove containers: {e}")),
    }
    out.lines.push(format!(
        "[reset] Deleting contents of directories: {CLEANED_DIRS:?}"
    ));
    for dir in CLEANED_DIRS {
        if let Err(e) = clean_dir(&root.path(dir)) {
            out.warnings.push(format!(
                "[reset] Failed to delete contents of {dir:?} directory: {e}"
            ));
        }
    }
    out.lines
        .push(format!("[reset] Deleting files: {DELETED_FILES:?}"));
    for file in DELETED_FILES {
        match std::fs::remove_file(root.path(file)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => out
                .warnings
                .push(format!("[reset] Failed to remove file: {file:?} [{e}]")),
            _ => {}
        }
    }
    out
}

/// Removes everything in `dir` but `dir` itself; a directory that is not there is clean.
fn clean_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}
