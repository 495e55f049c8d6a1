//! The records the seed keeps, as stored (JSON values of the [`super::Table`]s).

use cluster::api::{HostIdentity, Phase, PhaseState, Role};
use cluster::pki::HostKeyId;
use serde::{Deserialize, Serialize};

/// Whether a host is let in yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostStatus {
    /// Seen, not let in: waits for an operator's approval (or a token).
    Pending,
    /// Approved by an operator; gets its role at its next enrollment.
    Approved,
    /// Has a role and hostname.
    Enrolled,
}

/// How a host was let in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Admission {
    /// The spec's inventory entry at this index.
    Inventory { index: usize },
    /// A one-time join token.
    Token { token_id: String },
    /// An operator approved the pending host.
    Approval,
}

/// What the seed decided about a host: stable across re-enrollments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub role: Role,
    pub hostname: String,
    #[serde(default)]
    pub ip: Option<String>,
    /// 1-based order among masters; the first `masters` bootstrap etcd together.
    #[serde(default)]
    pub master_ordinal: Option<u32>,
    pub admission: Admission,
    pub enrolled_at_ms: i64,
}

/// The last progress report of a host, with the seed's own clock for "time in phase".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub phase: Phase,
    pub state: PhaseState,
    pub message: String,
    /// The host's clock in its report.
    pub host_at_unix_ms: i64,
    /// The seed's clock when the current phase was first reported.
    pub phase_since_ms: i64,
    /// The seed's clock at the last report.
    pub received_ms: i64,
}

/// etcd membership of a master that joined an existing cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdMembership {
    /// The member id etcd gave when the seed added the learner (hex).
    pub member_id: Option<String>,
    pub learner: bool,
    pub added_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub id: String,
    pub status: HostStatus,
    pub identity: HostIdentity,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    #[serde(default)]
    pub assignment: Option<Assignment>,
    #[serde(default)]
    pub progress: Option<Progress>,
    #[serde(default)]
    pub etcd: Option<EtcdMembership>,
    /// The identity key the host proved it holds at its first enrollment: every later request
    /// for this host must present it. `None` until then, and after `hosts reset`.
    #[serde(default)]
    pub key: Option<HostKeyId>,
    /// When the seed first gave the host a plan (the seed's clock): from then on a master may
    /// hold an etcd member, whatever the host reports.
    #[serde(default)]
    pub planned_ms: Option<i64>,
}

impl HostRecord {
    pub fn role(&self) -> Option<Role> {
        self.assignment.as_ref().map(|a| a.role)
    }
    pub fn hostname(&self) -> Option<&str> {
        self.assignment.as_ref().map(|a| a.hostname.as_str())
    }
    pub fn is_master(&self) -> bool {
        self.role() == Some(Role::Master)
    }
    /// The master's seat among the masters (1 = the first), if it is one.
    pub fn master_ordinal(&self) -> Option<u32> {
        self.assignment.as_ref().and_then(|a| a.master_ordinal)
    }
}

/// The leaf certificates of the last plan the seed gave a host (`cluster::certs`), kept so
/// that `launcher-seed certs` can say when each expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCerts {
    pub host: String,
    /// When that plan was made (the seed's clock).
    pub planned_ms: i64,
    pub certs: Vec<cluster::certs::LeafCert>,
}

/// The seed's clock, Unix milliseconds: the unit of every `*_ms` field of the records.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

/// A one-time join token. Only the SHA-256 of its secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub secret_sha256: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    /// The role the token grants; `None` lets the seed decide as for `auto`.
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub used_by: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    /// Stopped by an operator between two steps; `resume` goes on from the next one.
    Cancelled,
}

impl JobState {
    /// Whether the job will do nothing more unless an operator resumes it.
    pub fn ended(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Running,
    Done,
    /// Nothing to do for this host (a worker has no etcd member to remove).
    Skipped,
    Failed,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Done => "done",
            StepState::Skipped => "skipped",
            StepState::Failed => "failed",
        }
    }
}

/// One step of a job, as far as it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub state: StepState,
    #[serde(default)]
    pub started_ms: Option<i64>,
    #[serde(default)]
    pub ended_ms: Option<i64>,
    #[serde(default)]
    pub message: String,
}

/// An admin job: asked for, done by the seed step by step, polled by the operator. Each step's
/// start and end are recorded as they happen, so a seed that restarts goes on from the step it
/// was in (every step can be done again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub kind: String,
    /// The job's argument (a host id, a TTL, …).
    pub request: serde_json::Value,
    pub state: JobState,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub result: serde_json::Value,
    pub created_ms: i64,
    pub updated_ms: i64,
    #[serde(default)]
    pub steps: Vec<StepRecord>,
    /// An operator asked the running job to stop after its current step.
    #[serde(default)]
    pub cancel_requested: bool,
    /// The job changes etcd membership (it removes a master): no other such job is let in
    /// until it has ended.
    #[serde(default)]
    pub changes_membership: bool,
    /// Moved on by each `resume`: a driver of an earlier run leaves the job alone.
    #[serde(default)]
    pub run: u32,
}

/// Meta keys.
pub mod meta {
    pub const COUNTERS: &str = "counters";
    /// The cluster's CA set, its private keys sealed (`cluster_ca::StoredCaSet`).
    pub const CA_SET: &str = "ca_set";
    /// The name of the cluster the state belongs to.
    pub const CLUSTER: &str = "cluster";
    /// How many masters started etcd together, recorded when the first of them got its plan.
    /// Masters enrolled after that join as learners even if `cluster.masters` was raised since.
    pub const ETCD_COHORT: &str = "etcd_cohort";
    /// Set in the transaction that sealed CA keys an older seed stored in the clear: the store
    /// file is to be rewritten so that no freed page keeps them (`cluster_ca::scrub`).
    pub const REWRITE_PENDING: &str = "rewrite_pending";
}

/// Monotonic counters, in one record so they change in the same transaction as the decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub next_host: u64,
    pub next_job: u64,
    /// Masters outside the inventory given their role so far.
    pub masters_assigned: u32,
    /// Workers outside the inventory given their role so far.
    pub workers_assigned: u32,
    /// Hosts recorded but not let in yet (pending or approved).
    #[serde(default)]
    pub waiting: u32,
}
