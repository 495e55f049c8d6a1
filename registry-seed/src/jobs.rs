//! Admin jobs: the one way the seed changes a running cluster. A job is recorded (durably)
//! when asked for, then done by the seed in the background step by step, each step's start and
//! end recorded as they happen, and polled by the operator at `GET /v1/admin/jobs/{id}`.
//!
//! - Every step can be done again: a seed that restarts goes on from the step it was in.
//! - An operator may cancel a job (it stops after its current step) and resume a failed or
//!   cancelled one (from the step that did not end).
//! - At most one unfinished job changes etcd membership: a second is refused when asked for.
//! - Each driving of a job carries the job's `run`, which `resume` moves on, so that a job
//!   is never driven twice at once.

use std::sync::Arc;
use std::time::Duration;

use cluster::api::Role;
use serde::{Deserialize, Serialize};

use crate::enroll::apply::{expire_pending, forget_host, retire_key, token_hash, write_host};
use crate::membership::{ChangeError, MembershipError};
use crate::seed::{Seed, random_secret};
use crate::store::records::{
    HostRecord, HostStatus, JobRecord, JobState, StepRecord, StepState, TokenRecord, meta, now_ms,
};
use crate::store::{StoreError, Table, Txn, get_json, list_json, put_json, read_with, write_with};

/// What a job does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobRequest {
    /// Let a pending host in at its next enrollment.
    ApproveHost { host: String },
    /// Forget a host; a master leaves etcd first. `force` lets a master go even when fewer
    /// masters than the cluster file asks for would be left (never the last one).
    RemoveHost {
        host: String,
        #[serde(default)]
        force: bool,
    },
}

impl JobRequest {
    fn kind(&self) -> &'static str {
        match self {
            JobRequest::ApproveHost { .. } => "approve_host",
            JobRequest::RemoveHost { .. } => "remove_host",
        }
    }

    /// The job's steps, in order.
    pub fn steps(&self) -> &'static [&'static str] {
        match self {
            JobRequest::ApproveHost { .. } => &[STEP_APPROVE],
            JobRequest::RemoveHost { .. } => &[STEP_LEAVE_ETCD, STEP_FORGET],
        }
    }

    fn host(&self) -> &str {
        match self {
            JobRequest::ApproveHost { host } | JobRequest::RemoveHost { host, .. } => host,
        }
    }
}

const STEP_APPROVE: &str = "approve";
/// A master's etcd member is removed (etcd's leadership moved away first if it leads).
const STEP_LEAVE_ETCD: &str = "leave_etcd";
/// The host's record and the indexes of its identity, hostname and address are deleted.
const STEP_FORGET: &str = "forget";

/// Why a job was not recorded, or not cancelled or resumed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the state of the job, of another job or of the cluster;
    /// `code` is the API error code that says which.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// API error codes of [`JobError::Refused`].
pub mod refusal {
    /// The job is in a state that does not allow it (cancel an ended job, resume a running one).
    pub const JOB_STATE: &str = "job_state";
    /// Another unfinished job already changes etcd membership, or already removes this host.
    pub const CHANGE_IN_PROGRESS: &str = "change_in_progress";
    /// Removing this master would leave the cluster with too few.
    pub const TOO_FEW_MASTERS: &str = "too_few_masters";
}

fn refused(code: &'static str, message: String) -> JobError {
    JobError::Refused { code, message }
}

/// How long a host that waits for approval is kept without asking again: a pending machine
/// asks every few seconds, so only records of machines gone (or of made-up identities) expire.
pub const PENDING_EXPIRY: Duration = Duration::from_secs(15 * 60);

/// Forgets, once a minute, the hosts that wait for approval and stopped asking
/// ([`PENDING_EXPIRY`]).
pub fn spawn_pending_expiry(seed: Arc<Seed>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let seed = seed.clone();
            let swept = tokio::task::spawn_blocking(move || {
                let before = now_ms() - PENDING_EXPIRY.as_millis() as i64;
                expire_pending(&*seed.store, before)
            })
            .await;
            match swept {
                Ok(Ok(ids)) if !ids.is_empty() => {
                    tracing::info!(count = ids.len(), hosts = ?ids, "pending hosts expired");
                }
                Ok(Ok(_)) => {}
                Ok(Err(err)) => tracing::warn!(error = %err, "expiring pending hosts"),
                Err(err) => tracing::warn!(error = %err, "expiring pending hosts"),
            }
        }
    });
}

fn fresh_steps(request: &JobRequest) -> Vec<StepRecord> {
    request
        .steps()
        .iter()
        .map(|name| StepRecord {
            name: name.to_string(),
            state: StepState::Pending,
            started_ms: None,
            ended_ms: None,
            message: String::new(),
        })
        .collect()
}

fn request_of(job: &JobRecord) -> Option<JobRequest> {
    serde_json::from_value(job.request.clone()).ok()
}

/// The unfinished job other than `except` that changes etcd membership or removes `host`, with
/// what it does, if there is one.
fn conflicting(
    tx: &dyn Txn,
    except: Option<&str>,
    host: &str,
    membership: bool,
) -> Result<Option<JobError>, StoreError> {
    for job in list_json::<JobRecord>(tx, Table::Jobs)? {
        if job.state.ended() || Some(job.id.as_str()) == except {
            continue;
        }
        let same_host = matches!(
            request_of(&job),
            Some(JobRequest::RemoveHost { host: h, .. }) if h == host
        );
        if same_host {
            return Ok(Some(refused(
                refusal::CHANGE_IN_PROGRESS,
                format!("job {} already removes host {host}", job.id),
            )));
        }
        if membership && job.changes_membership {
            return Ok(Some(refused(
                refusal::CHANGE_IN_PROGRESS,
                format!(
                    "job {} ({} {}) has not ended: etcd membership changes one job at a time; wait for it, or cancel it with `launcher-seed jobs cancel {}`",
                    job.id,
                    job.kind,
                    request_of(&job)
                        .map(|r| r.host().to_string())
                        .unwrap_or_default(),
                    job.id
                ),
            )));
        }
    }
    Ok(None)
}

/// Whether the job may be asked for now: its host exists, and a removal neither collides with
/// another unfinished one nor leaves too few masters. Returns whether it changes etcd
/// membership.
fn admissible(seed: &Seed, tx: &dyn Txn, request: &JobRequest) -> Result<bool, JobError> {
    let id = request.host();
    let Some(host) = get_json::<HostRecord>(tx, Table::Hosts, id)? else {
        return Err(JobError::NotFound(format!("no host {id}")));
    };
    let JobRequest::RemoveHost { force, .. } = request else {
        return Ok(false);
    };
    let membership = may_be_etcd_member(&host);
    if let Some(conflict) = conflicting(tx, None, id, membership)? {
        return Err(conflict);
    }
    if host.is_master() {
        let masters = list_json::<HostRecord>(tx, Table::Hosts)?
            .iter()
            .filter(|h| h.is_master())
            .count();
        if masters <= 1 {
            return Err(refused(
                refusal::TOO_FEW_MASTERS,
                format!(
                    "host {id} is the cluster's only master: removing it would leave no control plane"
                ),
            ));
        }
        let wanted = seed.spec.masters as usize;
        if masters - 1 < wanted && !force {
            return Err(refused(
                refusal::TOO_FEW_MASTERS,
                format!(
                    "removing master {id} would leave {} of the cluster file's {wanted} masters; lower masters in the cluster file, or force the removal",
                    masters - 1
                ),
            ));
        }
    }
    Ok(membership)
}

/// Records a queued job and starts it; returns its id. Refused, with nothing recorded, when
/// its host does not exist or it conflicts with an unfinished job or the masters it would leave.
pub fn submit(seed: &Arc<Seed>, request: JobRequest) -> Result<String, JobError> {
    let now = now_ms();
    let value = serde_json::to_value(&request).unwrap_or_default();
    let id = write_with(&*seed.store, |tx| {
        let membership = match admissible(seed, &*tx, &request) {
            Ok(membership) => membership,
            Err(JobError::Store(e)) => return Err(e),
            Err(refusal) => return Ok(Err(refusal)),
        };
        let mut counters = crate::enroll::apply::counters(&*tx)?;
        counters.next_job += 1;
        put_json(tx, Table::Meta, meta::COUNTERS, &counters)?;
        let id = format!("j-{:04}", counters.next_job);
        let job = JobRecord {
            id: id.clone(),
            kind: request.kind().to_string(),
            request: value.clone(),
            state: JobState::Queued,
            message: String::new(),
            result: serde_json::json!({ "host": request.host() }),
            created_ms: now,
            updated_ms: now,
            steps: fresh_steps(&request),
            cancel_requested: false,
            changes_membership: membership,
            run: 0,
        };
        put_json(tx, Table::Jobs, &id, &job)?;
        Ok(Ok(id))
    })??;
    spawn(seed.clone(), id.clone(), 0);
    Ok(id)
}

/// Asks a job to stop: a queued one is cancelled at once, a running one after its current step.
/// Returns the job as it is then.
pub fn cancel(seed: &Seed, id: &str) -> Result<JobRecord, JobError> {
    write_with(&*seed.store, |tx| {
        let Some(mut job) = get_json::<JobRecord>(&*tx, Table::Jobs, id)? else {
            return Ok(Err(JobError::NotFound(format!("no job {id}"))));
        };
        match job.state {
            JobState::Queued => {
                job.state = JobState::Cancelled;
                job.message = "cancelled before it started".into();
            }
            JobState::Running => job.cancel_requested = true,
            ended => {
                return Ok(Err(refused(
                    refusal::JOB_STATE,
                    format!(
                        "job {id} already {}: there is nothing to cancel",
                        ended.as_str()
                    ),
                )));
            }
        }
        job.updated_ms = now_ms();
        put_json(tx, Table::Jobs, id, &job)?;
        Ok(Ok(job))
    })?
}

/// Starts a failed or cancelled job again from the step that did not end.
pub fn resume(seed: &Arc<Seed>, id: &str) -> Result<JobRecord, JobError> {
    let job = write_with(&*seed.store, |tx| {
        let Some(mut job) = get_json::<JobRecord>(&*tx, Table::Jobs, id)? else {
            return Ok(Err(JobError::NotFound(format!("no job {id}"))));
        };
        if !matches!(job.state, JobState::Failed | JobState::Cancelled) {
            return Ok(Err(refused(
                refusal::JOB_STATE,
                format!(
                    "job {id} {}: only a failed or cancelled job resumes",
                    match job.state {
                        JobState::Succeeded => "already succeeded",
                        JobState::Running => "is running",
                        _ => "is queued",
                    }
                ),
            )));
        }
        if let Some(request) = request_of(&job) {
            let membership = job.changes_membership;
            if let Some(conflict) = conflicting(&*tx, Some(id), request.host(), membership)? {
                return Ok(Err(conflict));
            }
            if job.steps.is_empty() {
                job.steps = fresh_steps(&request);
            }
        }
        for step in &mut job.steps {
            if step.state == StepState::Failed {
                step.state = StepState::Pending;
            }
        }
        job.state = JobState::Queued;
        job.cancel_requested = false;
        job.message = String::new();
        job.run += 1;
        job.updated_ms = now_ms();
        put_json(tx, Table::Jobs, id, &job)?;
        Ok(Ok(job))
    })??;
    spawn(seed.clone(), job.id.clone(), job.run);
    Ok(job)
}

/// At start: every job that had not ended goes on, from the step it was in.
pub fn recover(seed: &Arc<Seed>) -> Result<(), StoreError> {
    let jobs = read_with(&*seed.store, |tx| list_json::<JobRecord>(tx, Table::Jobs))?;
    for job in jobs.into_iter().filter(|j| !j.state.ended()) {
        tracing::info!(job = %job.id, state = job.state.as_str(), "job goes on after a restart");
        spawn(seed.clone(), job.id, job.run);
    }
    Ok(())
}

/// What the driver does next.
#[derive(Debug, PartialEq)]
enum Next {
    Stop,
    Step(usize, JobRequest),
}

/// Picks the job's next step and records it as running; or records the job's end (succeeded
/// once every step is done or skipped, cancelled when that was asked). Nothing happens to a
/// job that is driven by another run or has ended.
fn begin(job: &mut JobRecord, run: u32, now: i64) -> Next {
    if job.run != run || job.state.ended() {
        return Next::Stop;
    }
    let Some(request) = request_of(job) else {
        job.state = JobState::Failed;
        job.message = format!("this seed does not know jobs of kind {:?}", job.kind);
        job.updated_ms = now;
        return Next::Stop;
    };
    if job.steps.is_empty() {
        job.steps = fresh_steps(&request);
    }
    let next = job
        .steps
        .iter()
        .position(|s| !matches!(s.state, StepState::Done | StepState::Skipped));
    job.updated_ms = now;
    if job.cancel_requested {
        job.cancel_requested = false;
        job.state = JobState::Cancelled;
        job.message = match next {
            Some(i) => format!(
                "cancelled after {} of {} steps; `launcher-seed jobs resume {}` goes on from step {}",
                i,
                job.steps.len(),
                job.id,
                job.steps[i].name
            ),
            None => "cancelled after its last step".into(),
        };
        return Next::Stop;
    }
    let Some(i) = next else {
        job.state = JobState::Succeeded;
        job.message = job
            .steps
            .last()
            .map(|s| s.message.clone())
            .unwrap_or_default();
        return Next::Stop;
    };
    job.state = JobState::Running;
    let step = &mut job.steps[i];
    step.state = StepState::Running;
    step.started_ms = Some(now);
    step.ended_ms = None;
    step.message.clear();
    Next::Step(i, request)
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StepEnd {
    Done(String),
    Skipped(String),
    Failed(String),
}

/// Records how step `index` ended; a failed step fails the job.
fn end(job: &mut JobRecord, run: u32, index: usize, outcome: StepEnd, now: i64) {
    if job.run != run || index >= job.steps.len() {
        return;
    }
    let step = &mut job.steps[index];
    step.ended_ms = Some(now);
    match outcome {
        StepEnd::Done(message) => (step.state, step.message) = (StepState::Done, message),
        StepEnd::Skipped(message) => (step.state, step.message) = (StepState::Skipped, message),
        StepEnd::Failed(message) => {
            step.state = StepState::Failed;
            step.message = message.clone();
            job.state = JobState::Failed;
            job.message = format!("step {}: {message}", step.name);
        }
    }
    job.updated_ms = now;
}

/// Runs `f` on the job's record in one store transaction and keeps what it made of it.
async fn update<T: Send + 'static>(
    seed: &Arc<Seed>,
    id: &str,
    mut f: impl FnMut(&mut JobRecord) -> T + Send + 'static,
) -> Result<Option<T>, String> {
    let (seed, id) = (seed.clone(), id.to_string());
    tokio::task::spawn_blocking(move || {
        write_with(&*seed.store, |tx| {
            let Some(mut job) = get_json::<JobRecord>(&*tx, Table::Jobs, &id)? else {
                return Ok(None);
            };
            let out = f(&mut job);
            put_json(tx, Table::Jobs, &id, &job)?;
            Ok(Some(out))
        })
        .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

fn spawn(seed: Arc<Seed>, id: String, run: u32) {
    tokio::spawn(async move {
        let span = tracing::info_span!("job", id = %id, run);
        loop {
            let next = update(&seed, &id, move |job| {
                (begin(job, run, now_ms()), job.clone())
            })
            .await;
            let (index, request) = match next {
                Ok(Some((Next::Step(index, request), _))) => (index, request),
                Ok(Some((Next::Stop, job))) => {
                    if job.run == run {
                        span.in_scope(|| {
                            tracing::info!(state = job.state.as_str(), message = %job.message, "job ended")
                        });
                    }
                    return;
                }
                Ok(None) => return,
                Err(err) => {
                    // The store is failing: the job stays as recorded, and goes on at the
                    // next start.
                    span.in_scope(|| tracing::error!(error = %err, "recording the job's step"));
                    return;
                }
            };
            let name = request.steps()[index];
            span.in_scope(|| tracing::info!(step = name, "step started"));
            let outcome = step(&seed, &request, name).await;
            span.in_scope(|| tracing::info!(step = name, outcome = ?outcome, "step ended"));
            if let Err(err) = update(&seed, &id, move |job| {
                end(job, run, index, outcome.clone(), now_ms())
            })
            .await
            {
                span.in_scope(|| tracing::error!(error = %err, "recording the job's step"));
                return;
            }
        }
    });
}

async fn step(seed: &Arc<Seed>, request: &JobRequest, name: &str) -> StepEnd {
    let host = request.host().to_string();
    let seed2 = seed.clone();
    match name {
        STEP_APPROVE => blocking(move || approve(&seed2, &host)).await,
        STEP_LEAVE_ETCD => leave_etcd(seed, &host).await,
        STEP_FORGET => {
            blocking(move || {
                // The host's key is retired with its record: the machine holding it is not let
                // in again by it.
                let forgotten = write_with(&*seed2.store, |tx| match forget_host(tx, &host)? {
                    Some(record) => retire_key(tx, &record),
                    None => Ok(()),
                });
                match forgotten {
                    Ok(()) => StepEnd::Done(format!("host {host} removed")),
                    Err(e) => StepEnd::Failed(format!("forgetting host {host}: {e}")),
                }
            })
            .await
        }
        other => StepEnd::Failed(format!("this seed does not know step {other:?}")),
    }
}

async fn blocking(f: impl FnOnce() -> StepEnd + Send + 'static) -> StepEnd {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| StepEnd::Failed(format!("the step failed: {e}")))
}

fn approve(seed: &Seed, id: &str) -> StepEnd {
    write_with(&*seed.store, |tx| {
        let Some(mut host) = get_json::<HostRecord>(&*tx, Table::Hosts, id)? else {
            return Ok(StepEnd::Failed(format!("no host {id}")));
        };
        if host.status != HostStatus::Pending {
            return Ok(StepEnd::Done(format!("host {id} was already let in")));
        }
        host.status = HostStatus::Approved;
        // Approved, the host owns its identifiers: no other machine can claim them now.
        write_host(tx, &host)?;
        Ok(StepEnd::Done(format!(
            "host {id} approved; it gets its role at its next enrollment"
        )))
    })
    .unwrap_or_else(|e| StepEnd::Failed(format!("recording the approval: {e}")))
}

/// A new one-time join token, recorded by the SHA-256 of its secret only: the plaintext is in
/// the answer and nowhere else.
pub fn create_token(
    seed: &Seed,
    ttl_secs: u64,
    role: Option<Role>,
) -> Result<(TokenRecord, String), StoreError> {
    let id = random_secret(6);
    let token = format!("{id}.{}", random_secret(16));
    let now = now_ms();
    let expires_ms = now.saturating_add((ttl_secs as i64).saturating_mul(1000));
    let record = TokenRecord {
        id: id.clone(),
        secret_sha256: token_hash(&token),
        created_ms: now,
        expires_ms,
        role,
        used_by: None,
    };
    write_with(&*seed.store, |tx| put_json(tx, Table::Tokens, &id, &record))?;
    Ok((record, token))
}

/// Whether a master may hold an etcd member, from the seed's own records (never from what the
/// host reported): it was added as a learner, or it was given its plan.
fn may_be_etcd_member(host: &HostRecord) -> bool {
    host.role() == Some(Role::Master) && (host.etcd.is_some() || host.planned_ms.is_some())
}

/// Removes the host's etcd member, if it may have one. Done again after a restart, it finds
/// the member gone and says so.
async fn leave_etcd(seed: &Arc<Seed>, id: &str) -> StepEnd {
    let (seed2, id2) = (seed.clone(), id.to_string());
    let host = tokio::task::spawn_blocking(move || {
        read_with(&*seed2.store, |tx| {
            get_json::<HostRecord>(tx, Table::Hosts, &id2)
        })
    })
    .await;
    let host = match host {
        Ok(Ok(Some(host))) => host,
        Ok(Ok(None)) => return StepEnd::Skipped(format!("no host {id} is recorded")),
        Ok(Err(e)) => return StepEnd::Failed(format!("reading host {id}: {e}")),
        Err(e) => return StepEnd::Failed(format!("reading host {id}: {e}")),
    };
    if !may_be_etcd_member(&host) {
        return StepEnd::Skipped(format!("host {id} holds no etcd member"));
    }
    let name = host.hostname().unwrap_or(id).to_string();
    match seed.membership.remove(&host).await {
        Ok(()) => StepEnd::Done(format!("etcd member {name} removed")),
        // Given its plan but never started etcd, or removed before a restart.
        Err(ChangeError::Etcd(MembershipError::NotFound(_))) => {
            StepEnd::Done(format!("etcd lists no member {name}"))
        }
        Err(ChangeError::Etcd(e)) => StepEnd::Failed(format!("removing etcd member {name}: {e}")),
        Err(e) => StepEnd::Failed(format!(
            "{id} is an etcd member, and the seed cannot change etcd membership: {e}"
        )),
    }
}
