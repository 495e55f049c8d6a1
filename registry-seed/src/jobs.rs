//! Admin jobs: recorded (durably) when asked for, done by the seed in the background, polled by
//! the operator at `GET /v1/admin/jobs/{id}`.

use std::sync::Arc;

use cluster::api::{Phase, Role};
use serde::{Deserialize, Serialize};

use crate::enroll::apply::{forget_host, token_hash};
use crate::membership::ChangeError;
use crate::seal::{Purpose, SealKey, Sealed};
use crate::seed::{Seed, random_secret};
use crate::store::records::{
    HostRecord, HostStatus, JobRecord, JobState, TokenRecord, meta, now_ms,
};
use crate::store::{StoreError, Table, get_json, list_json, put_json, read_with, write_with};

/// What a job does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobRequest {
    /// Let a pending host in at its next enrollment.
    ApproveHost { host: String },
    /// Forget a host; a master leaves etcd first.
    RemoveHost { host: String },
    /// Make a one-time join token.
    CreateToken { ttl_secs: u64, role: Option<Role> },
}

impl JobRequest {
    fn kind(&self) -> &'static str {
        match self {
            JobRequest::ApproveHost { .. } => "approve_host",
            JobRequest::RemoveHost { .. } => "remove_host",
            JobRequest::CreateToken { .. } => "create_token",
        }
    }
}

/// How a job ended.
type Outcome = Result<(String, serde_json::Value), String>;

/// Records a queued job and starts it; returns its id.
pub fn submit(seed: &Arc<Seed>, request: JobRequest) -> Result<String, StoreError> {
    let now = now_ms();
    let value = serde_json::to_value(&request).unwrap_or_default();
    let id = write_with(&*seed.store, |tx| {
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
            result: serde_json::Value::Null,
            created_ms: now,
            updated_ms: now,
        };
        put_json(tx, Table::Jobs, &id, &job)?;
        Ok(id)
    })?;
    spawn(seed.clone(), id.clone(), request);
    Ok(id)
}

fn spawn(seed: Arc<Seed>, id: String, request: JobRequest) {
    tokio::spawn(async move {
        let span = tracing::info_span!("job", id = %id, kind = request.kind());
        let _ = set_state(&seed, &id, JobState::Running, String::new(), None).await;
        let outcome = run(&seed, &request).await;
        let (state, message, result) = match outcome {
            Ok((message, result)) => (JobState::Succeeded, message, Some(result)),
            Err(message) => (JobState::Failed, message, None),
        };
        span.in_scope(|| tracing::info!(state = ?state, %message, "job ended"));
        if let Err(err) = set_state(&seed, &id, state, message, result).await {
            span.in_scope(|| tracing::error!(error = %err, "recording the job's end"));
        }
    });
}

/// At start: a job that was running when the seed stopped is failed (it may have been half
/// done, and an operator decides whether to ask again); queued ones are started.
pub fn recover(seed: &Arc<Seed>) -> Result<(), StoreError> {
    let jobs = read_with(&*seed.store, |tx| list_json::<JobRecord>(tx, Table::Jobs))?;
    for job in jobs {
        match job.state {
            JobState::Running => {
                let mut job = job.clone();
                job.state = JobState::Failed;
                job.message = "the seed restarted while this job ran; ask again".into();
                job.updated_ms = now_ms();
                write_with(&*seed.store, |tx| put_json(tx, Table::Jobs, &job.id, &job))?;
            }
            JobState::Queued => {
                if let Ok(request) = serde_json::from_value::<JobRequest>(job.request.clone()) {
                    spawn(seed.clone(), job.id.clone(), request);
                }
            }
            JobState::Succeeded | JobState::Failed => {}
        }
    }
    Ok(())
}

async fn set_state(
    seed: &Arc<Seed>,
    id: &str,
    state: JobState,
    message: String,
    result: Option<serde_json::Value>,
) -> Result<(), String> {
    let (seed, id) = (seed.clone(), id.to_string());
    let task = tokio::task::spawn_blocking(move || {
        write_with(&*seed.store, |tx| {
            let Some(mut job) = get_json::<JobRecord>(&*tx, Table::Jobs, &id)? else {
                return Ok(());
            };
            job.state = state;
            job.message = message.clone();
            if let Some(result) = &result {
                job.result = result.clone();
            }
            job.updated_ms = now_ms();
            put_json(tx, Table::Jobs, &id, &job)
        })
    });
    match task.await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(err) => Err(err.to_string()),
    }
}

async fn run(seed: &Arc<Seed>, request: &JobRequest) -> Outcome {
    match request {
        JobRequest::ApproveHost { host } => {
            let (seed, host) = (seed.clone(), host.clone());
            blocking(move || approve(&seed, &host)).await
        }
        JobRequest::CreateToken { ttl_secs, role } => {
            let (seed, ttl, role) = (seed.clone(), *ttl_secs, *role);
            blocking(move || create_token(&seed, ttl, role)).await
        }
        JobRequest::RemoveHost { host } => remove_host(seed, host).await,
    }
}

async fn blocking(f: impl FnOnce() -> Outcome + Send + 'static) -> Outcome {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(format!("the job failed: {e}")))
}

fn approve(seed: &Seed, id: &str) -> Outcome {
    write_with(&*seed.store, |tx| {
        let Some(mut host) = get_json::<HostRecord>(&*tx, Table::Hosts, id)? else {
            return Ok(Err(format!("no host {id}")));
        };
        if host.status != HostStatus::Pending {
            return Ok(Ok((
                format!("host {id} was already let in"),
                serde_json::json!({}),
            )));
        }
        host.status = HostStatus::Approved;
        put_json(tx, Table::Hosts, id, &host)?;
        Ok(Ok((
            format!("host {id} approved; it gets its role at its next enrollment"),
            serde_json::json!({"host": id}),
        )))
    })
    .unwrap_or_else(|e| Err(format!("recording the approval: {e}")))
}

fn create_token(seed: &Seed, ttl_secs: u64, role: Option<Role>) -> Outcome {
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
    write_with(&*seed.store, |tx| put_json(tx, Table::Tokens, &id, &record))
        .map_err(|e| format!("recording the token: {e}"))?;
    // The job record keeps the token until the operator reads it: sealed, as the CA keys are.
    let sealed = seed
        .seal
        .seal(Purpose::JOIN_TOKEN, token.as_bytes())
        .map_err(|e| format!("sealing the token: {e}"))?;
    Ok((
        format!("token {id} made; it works once until it expires"),
        serde_json::json!({"token": sealed, "expires_ms": expires_ms}),
    ))
}

/// A job as the operator reads it: a join token sealed in its result is opened. (Results of
/// seeds before sealing hold the token as a string.)
pub fn opened(seal: &SealKey, mut job: JobRecord) -> Result<JobRecord, String> {
    let Some(token) = job.result.get("token").filter(|t| t.is_object()) else {
        return Ok(job);
    };
    let sealed: Sealed = serde_json::from_value(token.clone())
        .map_err(|e| format!("reading the job's sealed token: {e}"))?;
    let plain = seal
        .open(Purpose::JOIN_TOKEN, &sealed)
        .map_err(|e| format!("opening the job's token: {e}"))?;
    let token = String::from_utf8(plain).map_err(|_| "the job's token is not text".to_string())?;
    job.result["token"] = serde_json::Value::String(token);
    Ok(job)
}

/// Whether a master may hold an etcd member: added as a learner, or past the etcd phase.
fn may_be_etcd_member(host: &HostRecord) -> bool {
    host.role() == Some(Role::Master)
        && (host.etcd.is_some()
            || host
                .progress
                .as_ref()
                .is_some_and(|p| p.phase >= Phase::Etcd))
}

async fn remove_host(seed: &Arc<Seed>, id: &str) -> Outcome {
    let seed2 = seed.clone();
    let id2 = id.to_string();
    let host = tokio::task::spawn_blocking(move || {
        read_with(&*seed2.store, |tx| {
            get_json::<HostRecord>(tx, Table::Hosts, &id2)
        })
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("reading host {id}: {e}"))?
    .ok_or_else(|| format!("no host {id}"))?;
    if may_be_etcd_member(&host) {
        seed.membership.remove(&host).await.map_err(|e| match e {
            ChangeError::Etcd(e) => format!(
                "removing etcd member {}: {e}",
                host.hostname().unwrap_or(id)
            ),
            e => format!("{id} is an etcd member, and the seed cannot change etcd membership: {e}"),
        })?;
    }
    let (seed2, id2) = (seed.clone(), id.to_string());
    blocking(move || {
        write_with(&*seed2.store, |tx| forget_host(tx, &id2))
            .map_err(|e| format!("forgetting host {id2}: {e}"))?;
        Ok((
            format!("host {id2} removed"),
            serde_json::json!({"host": id2}),
        ))
    })
    .await
}
