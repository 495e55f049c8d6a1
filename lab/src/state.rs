//! The lab's state file: the namespace and every process `up` started (pid and program), so that
//! `down` stops exactly those and nothing else.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::plan::LabOptions;

/// File name of the state file in the run directory.
pub const STATE_FILE: &str = "lab-state.json";

/// One process the lab started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// `seed`, `dnsmasq`, `vm m1`, …
    pub name: String,
    pub pid: u32,
    /// The program's file name, checked against `/proc/<pid>/exe` before a signal is sent.
    pub program: String,
    /// When it was started (Unix milliseconds): a VM's host counts as done only for a `done`
    /// reported after its latest power-on.
    #[serde(default)]
    pub started_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LabState {
    pub namespace: String,
    pub processes: Vec<Started>,
    /// What `up` was asked for, so that `power` and `wait` rebuild the same plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<LabOptions>,
    /// Spare masters powered on since `up`, in order; the cluster file lists them from then on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<String>,
}

pub fn state_path(run_dir: &Path) -> PathBuf {
    run_dir.join(STATE_FILE)
}

impl LabState {
    pub fn load(run_dir: &Path) -> anyhow::Result<Option<LabState>> {
        let path = state_path(run_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| {
                format!("reading the lab state {}", path.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the state (atomically: a new file renamed over the old one).
    pub fn save(&self, run_dir: &Path) -> anyhow::Result<()> {
        let path = state_path(run_dir);
        let tmp = path.with_extension("json.new");
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    pub fn remove(run_dir: &Path) -> anyhow::Result<()> {
        let path = state_path(run_dir);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        }
    }
}

/// Whether `pid` still runs `program`, or `ip` just before `ip netns exec` becomes it (a recycled
/// pid running something else does not count).
pub fn runs(pid: u32, program: &str) -> bool {
    let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
        return false;
    };
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !matches!(stat_state(&s), Some('Z' | 'X')))
        .unwrap_or(false);
    let name = exe.file_name().and_then(|n| n.to_str());
    alive && (name == Some(program) || name == Some("ip"))
}

/// The state letter of a `/proc/<pid>/stat` line (after the parenthesised command).
fn stat_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Stops one process: SIGTERM, up to `grace` for it to end, then SIGKILL.
pub fn stop(process: &Started, grace: Duration) {
    if !runs(process.pid, &process.program) {
        return;
    }
    let pid = Pid::from_raw(process.pid as i32);
    tracing::info!(name = %process.name, pid = process.pid, "stopping");
    let _ = kill(pid, Signal::SIGTERM);
    let started = Instant::now();
    while started.elapsed() < grace {
        if !runs(process.pid, &process.program) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = kill(pid, Signal::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_round_trips_and_a_missing_file_is_no_lab() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(LabState::load(dir.path()).unwrap(), None);
        let state = LabState {
            namespace: "launcher-lab-0123abcd".into(),
            processes: vec![Started {
                name: "seed".into(),
                pid: 42,
                program: "launcher-seed".into(),
                started_ms: 1_700_000_000_000,
            }],
            options: None,
            added: vec!["m4".into()],
        };
        state.save(dir.path()).unwrap();
        assert_eq!(LabState::load(dir.path()).unwrap(), Some(state));
        LabState::remove(dir.path()).unwrap();
        LabState::remove(dir.path()).unwrap();
        assert_eq!(LabState::load(dir.path()).unwrap(), None);
    }

    #[test]
    fn a_pid_counts_only_while_it_runs_the_recorded_program() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(runs(child.id(), "sleep"));
        assert!(!runs(child.id(), "qemu-system-x86_64"));
        let process = Started {
            name: "sleeper".into(),
            pid: child.id(),
            program: "sleep".into(),
            started_ms: 0,
        };
        stop(&process, Duration::from_secs(5));
        child.wait().unwrap();
        assert!(!runs(child.id(), "sleep"));
    }

    #[test]
    fn stat_lines_give_their_state_even_with_parentheses_in_the_name() {
        assert_eq!(stat_state("42 (a) b) Z 1 2"), Some('Z'));
        assert_eq!(stat_state("42 (qemu) S 1"), Some('S'));
        assert_eq!(stat_state("garbage"), None);
    }
}
