//! What the control plane's containers said: the last lines of each one's latest run, read
//! where the kubelet keeps them, for the report of a failed `kubeadm`.

use crate::fsutil;
use std::path::Path;

/// Where the kubelet keeps each container's output:
/// `<namespace>_<pod>_<uid>/<container>/<restart count>.log`.
const POD_LOGS: &str = "/var/log/pods";
/// The static Pods kubeadm writes on a master, each with one container of the same name.
const CONTROL_PLANE: [&str; 3] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];
/// Lines of each container's output carried in a failure, and how much of its end is read.
const POD_LOG_LINES: usize = 3;
const POD_LOG_TAIL: u64 = 16 * 1024;

/// The last lines each control-plane container of `node` wrote in its latest run, one block
/// per container that wrote any.
pub fn control_plane_output(root: &Path, node: &str) -> String {
    let Ok(dir) = fsutil::under_root(root, POD_LOGS) else {
        return String::new();
    };
    let pods: Vec<std::fs::DirEntry> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(Result::ok).collect())
        .unwrap_or_default();
    let mut out = String::new();
    for component in CONTROL_PLANE {
        let prefix = format!("kube-system_{component}-{node}_");
        let newest = pods
            .iter()
            .filter(|pod| pod.file_name().to_string_lossy().starts_with(&prefix))
            .flat_map(|pod| std::fs::read_dir(pod.path().join(component)).into_iter())
            .flat_map(|logs| logs.filter_map(Result::ok))
            .filter_map(|log| Some((log.metadata().ok()?.modified().ok()?, log.path())))
            .max();
        let Some((_, path)) = newest else { continue };
        let lines = last_lines(&path);
        if !lines.is_empty() {
            let shown = path.strip_prefix(root).unwrap_or(&path);
            out.push_str(&format!(
                "\nlast output of {component} (/{}):\n{lines}",
                shown.display()
            ));
        }
    }
    out
}

/// The last [`POD_LOG_LINES`] lines of a container log, each without the CRI logger's
/// `<time> <stream> <F|P> ` prefix when it has one, controls removed, at most 300 characters.
fn last_lines(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(POD_LOG_TAIL)));
        let _ = file.take(POD_LOG_TAIL).read_to_end(&mut text);
    }
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let parts: Vec<&str> = line.splitn(4, ' ').collect();
            let cri = parts.len() == 4
                && matches!(parts[1], "stdout" | "stderr")
                && matches!(parts[2], "F" | "P");
            let message = if cri { parts[3] } else { line };
            message
                .chars()
                .filter(|c| !c.is_control())
                .take(300)
                .collect::<String>()
        })
        .filter(|l| !l.trim().is_empty())
        .collect();
    let start = lines.len().saturating_sub(POD_LOG_LINES);
    lines[start..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
