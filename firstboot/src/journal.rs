//! The journal at `/var/lib/launcher/firstboot.json`: which phases finished and what they learnt.
//!
//! A phase is marked done only after it succeeded, and the file is replaced atomically, so a
//! crash or reboot resumes at the first unfinished phase. The plan kept here is checked against
//! its digest on every load: a tampered or truncated copy is refused.

use crate::fsutil::{self, FsError};
use cluster::api::{HostIdentity, Phase, Plan};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Path of the journal, under the root.
pub const JOURNAL_PATH: &str = "/var/lib/launcher/firstboot.json";
/// Marker written when every phase is done; the unit does not start again while it exists.
pub const DONE_MARKER: &str = "/var/lib/launcher/firstboot.done";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("reading the journal {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("the journal {0} is not valid (truncated or edited): {1}; move it away to start over")]
    Corrupt(PathBuf, String),
    #[error(
        "the plan in the journal {0} does not match its digest (tampered or truncated); move the journal away to enroll again"
    )]
    PlanDigest(PathBuf),
    #[error(transparent)]
    Write(#[from] FsError),
    #[error(transparent)]
    Durable(#[from] durable::Error),
}

/// What the time phase measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRecord {
    /// Offset of the host clock to the seed before stepping, in milliseconds.
    pub offset_before_ms: i64,
    /// Offset measured after stepping.
    pub offset_after_ms: i64,
    pub stepped: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    pub done: Vec<Phase>,
    /// The kernel boot id of the last run; a different one means the host rebooted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<HostIdentity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<TimeRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    /// The seed URL that enrolled this host; progress goes there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
    /// The seed's CA certificate (PEM), as matched against the pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_ca_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    /// Whether the storage phase mounted a data disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_disk: Option<bool>,
    /// Images the preload phase imported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preloaded: Vec<String>,
    /// The boot in which `kubeadm init`/`join` last succeeded: within it, kubeadm is not run
    /// again (see `node::kubeadm_step`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeadm_boot: Option<String>,
}

impl Journal {
    pub fn path(root: &Path) -> PathBuf {
        fsutil::under_root(root, JOURNAL_PATH).expect("constant path")
    }

    /// Loads the journal under `root`; an absent one is empty.
    pub fn load(root: &Path) -> Result<Journal, JournalError> {
        let path = Journal::path(root);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Journal::default()),
            Err(e) => return Err(JournalError::Read(path, e)),
        };
        let journal: Journal = serde_json::from_str(&text)
            .map_err(|e| JournalError::Corrupt(path.clone(), e.to_string()))?;
        if let Some(plan) = &journal.plan
            && !plan.verify()
        {
            return Err(JournalError::PlanDigest(path));
        }
        Ok(journal)
    }

    pub fn save(&self, root: &Path) -> Result<(), JournalError> {
        let bytes = serde_json::to_vec_pretty(self).expect("a journal serializes");
        durable::write_atomic(&Journal::path(root), &bytes, 0o600)?;
        Ok(())
    }

    pub fn is_done(&self, phase: Phase) -> bool {
        self.done.contains(&phase)
    }

    pub fn mark_done(&mut self, phase: Phase) {
        if !self.is_done(phase) {
            self.done.push(phase);
        }
    }

    /// After a reboot, forgets the phases whose effects a host running from RAM loses (the
    /// clock, files under /etc, started units) so that they run again. Returns whether it did.
    pub fn new_boot(&mut self, boot_id: Option<String>) -> bool {
        let rebooted = matches!((&self.boot_id, &boot_id), (Some(a), Some(b)) if a != b);
        if rebooted {
            self.done.retain(|p| {
                matches!(
                    p,
                    Phase::Identify | Phase::Enroll | Phase::Storage | Phase::Preload
                )
            });
        }
        if boot_id.is_some() {
            self.boot_id = boot_id;
        }
        rebooted
    }

    /// The plan; callers only ask after the enroll phase, which always stores one.
    pub fn plan(&self) -> &Plan {
        self.plan
            .as_ref()
            .expect("the enroll phase stores the plan")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster::api::{FileSource, PlanFile};

    pub(crate) fn plan() -> Plan {
        let ca = PlanFile {
            path: "/etc/kubernetes/pki/ca.crt".into(),
            mode: 0o644,
            source: FileSource::Text { text: "x".into() },
        };
        crate::materialize::tests::plan_for("v1.33.4", vec![ca])
    }

    #[test]
    fn a_saved_journal_loads_back() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(Journal::load(root.path()).unwrap(), Journal::default());
        let mut j = Journal {
            plan: Some(plan()),
            ..Default::default()
        };
        j.mark_done(Phase::Identify);
        j.mark_done(Phase::Identify);
        j.save(root.path()).unwrap();
        let back = Journal::load(root.path()).unwrap();
        assert_eq!(back, j);
        assert_eq!(back.done, vec![Phase::Identify]);
    }

    #[test]
    fn a_reboot_redoes_what_ram_loses() {
        let mut j = Journal::default();
        assert!(!j.new_boot(Some("a".into())));
        j.done = Phase::ALL.to_vec();
        assert!(!j.new_boot(Some("a".into())));
        assert_eq!(j.done.len(), Phase::ALL.len());
        assert!(j.new_boot(Some("b".into())));
        assert_eq!(
            j.done,
            vec![
                Phase::Identify,
                Phase::Enroll,
                Phase::Storage,
                Phase::Preload
            ]
        );
    }

    #[test]
    fn a_tampered_or_truncated_journal_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let j = Journal {
            plan: Some(plan()),
            ..Default::default()
        };
        j.save(root.path()).unwrap();
        let path = Journal::path(root.path());
        let text = std::fs::read_to_string(&path).unwrap();

        std::fs::write(&path, text.replace("demo-w1", "demo-m1")).unwrap();
        let err = Journal::load(root.path()).unwrap_err().to_string();
        assert!(err.contains("does not match its digest"), "{err}");

        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        let err = Journal::load(root.path()).unwrap_err().to_string();
        assert!(err.contains("is not valid (truncated or edited)"), "{err}");
    }
}
