//! The lab's state file: the namespace and every process `up` started (pid and start time), so
//! that `down` stops exactly those, whatever happened to their binaries, and nothing else.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::plan::LabOptions;
use crate::procs::{Procfs, named_namespace_inode, stop_all};

/// File name of the state file in the run directory.
pub const STATE_FILE: &str = "lab-state.json";

/// One process the lab started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// `seed`, `dnsmasq`, `vm m1`, …
    pub name: String,
    pub pid: u32,
    /// The program's file name, for messages.
    pub program: String,
    /// When the kernel started it (`/proc/<pid>/stat` field 22): with the pid, what tells it
    /// from a later process given the same pid. `ip netns exec` becoming the program keeps it,
    /// and so does a binary deleted or relinked while it runs.
    #[serde(default)]
    pub start_ticks: u64,
    /// When it was started (Unix milliseconds): a VM's host counts as done only for a `done`
    /// reported after its latest power-on.
    #[serde(default)]
    pub started_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LabState {
    pub namespace: String,
    /// The namespace's inode: its processes are found by it even after its name was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_inode: Option<u64>,
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

    /// Writes the state whole or not at all.
    pub fn save(&self, run_dir: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        durable::write_atomic(&state_path(run_dir), text.as_bytes(), 0o644)?;
        Ok(())
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

impl Started {
    /// Whether the recorded process still runs (a recycled pid does not count).
    pub fn runs(&self, proc: &Procfs) -> bool {
        proc.is_running(self.pid, self.start_ticks)
    }
}

impl LabState {
    /// Stops every process the lab started: those it recorded, and whatever else lives in its
    /// network namespace (found by the namespace's inode, so also once its name is gone).
    /// Returns how many were running.
    pub fn stop_everything(&self, proc: &Procfs, grace: Duration) -> usize {
        let recorded: Vec<(u32, u64)> = self
            .processes
            .iter()
            .map(|p| (p.pid, p.start_ticks))
            .collect();
        let mut stopped = stop_all(proc, &recorded, grace);
        let inode = self
            .namespace_inode
            .or_else(|| named_namespace_inode(&self.namespace));
        // Never the namespace `down` itself runs in: that is the host's, not the lab's.
        let own = proc.net_namespace(std::process::id());
        if let Some(inode) = inode.filter(|i| Some(*i) != own) {
            let rest: Vec<(u32, u64)> = proc
                .in_net_namespace(inode)
                .into_iter()
                .filter_map(|pid| Some((pid, proc.stat(pid)?.start_ticks)))
                .collect();
            stopped += stop_all(proc, &rest, grace);
        }
        stopped
    }
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
                start_ticks: 123_456,
                started_ms: 1_700_000_000_000,
            }],
            namespace_inode: Some(4026532281),
            options: None,
            added: vec!["m4".into()],
        };
        state.save(dir.path()).unwrap();
        assert_eq!(LabState::load(dir.path()).unwrap(), Some(state));
        LabState::remove(dir.path()).unwrap();
        LabState::remove(dir.path()).unwrap();
        assert_eq!(LabState::load(dir.path()).unwrap(), None);
    }

    fn sleeper(name: &str, proc: &Procfs) -> (std::process::Child, Started) {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let started = Started {
            name: name.into(),
            pid: child.id(),
            program: "sleep".into(),
            start_ticks: proc.stat(child.id()).unwrap().start_ticks,
            started_ms: 0,
        };
        (child, started)
    }

    #[test]
    fn down_stops_what_was_recorded_and_spares_a_recycled_pid_and_the_host_namespace() {
        let proc = Procfs::system();
        let (mut recorded, started) = sleeper("seed", &proc);
        let (mut other, reused) = sleeper("vm m1", &proc);
        let recycled = Started {
            start_ticks: reused.start_ticks + 1,
            ..reused
        };
        assert!(started.runs(&proc));
        assert!(!recycled.runs(&proc));
        let state = LabState {
            namespace: "launcher-lab-test-none".into(),
            namespace_inode: proc.net_namespace(std::process::id()),
            processes: vec![started.clone(), recycled],
            options: None,
            added: Vec::new(),
        };
        assert_eq!(state.stop_everything(&proc, Duration::from_secs(5)), 1);
        recorded.wait().unwrap();
        assert!(!started.runs(&proc));
        assert_eq!(
            other.try_wait().unwrap(),
            None,
            "an unrecorded process was stopped"
        );
        other.kill().unwrap();
        other.wait().unwrap();
    }
}
