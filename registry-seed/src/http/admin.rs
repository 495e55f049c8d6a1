//! Admin routes under `/v1/admin`: only with the admin bearer token. Reads answer at once;
//! approvals and removals start a job and answer `{"job": id}`; a join token and an etcd client
//! credential are made for the answer alone (a token is stored only as its hash); `hosts reset`
//! unbinds a host's identity key at once.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use cluster::api::codes;
use cluster::pki::{
    CaKind, CaSet, CertProfile, ClientCredential, Convention, Kubeconfig, KubeconfigKind,
    SubjectKey, Usage,
};

use super::{ApiFailure, JsonBody, blocking};
use crate::commands::{self, CommandRecord};
use crate::enroll::apply::{constant_time_eq, reset_host as reset_host_record};
use crate::jobs::{self, JobRequest};
use crate::seed::Seed;
use crate::store::records::{HostCerts, HostRecord, JobRecord, JobState, now_ms};
use crate::store::{Table, get_json, list_json, read_with, write_with};
use crate::views::{
    CertList, CertRow, CommandList, EtcdClientRequest, EtcdClientView, HostResetView, JobAccepted,
    JobList, KubeconfigRequest, KubeconfigView, StatusView, TokenCreated, TokenRequest, host_view,
};

/// Longest join-token lifetime: 30 days.
pub const MAX_TOKEN_TTL_SECS: u64 = 30 * 24 * 3600;
/// An etcd client credential's lifetime when the request names none: a day.
pub const DEFAULT_ETCD_CLIENT_TTL_SECS: u64 = 24 * 3600;
/// Longest etcd client credential lifetime: 7 days. Nothing revokes it, so it stays short.
pub const MAX_ETCD_CLIENT_TTL_SECS: u64 = 7 * 24 * 3600;
/// Longest holder name in an etcd client credential's subject.
const MAX_HOLDER_LEN: usize = 64;

pub fn routes(seed: Arc<Seed>) -> Router<Arc<Seed>> {
    Router::new()
        .route("/hosts", get(list_hosts))
        .route("/hosts/{id}", delete(remove_host))
        .route("/hosts/{id}/approve", post(approve_host))
        .route("/hosts/{id}/reset", post(reset_host))
        .route(
            "/hosts/{id}/commands",
            post(queue_command).get(list_commands),
        )
        .route("/hosts/{id}/commands/{command}", get(get_command))
        .route("/tokens", post(create_token))
        .route("/certs", get(list_certs))
        .route("/jobs", get(list_jobs))
        .route("/jobs/{id}", get(get_job))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/jobs/{id}/resume", post(resume_job))
        .route("/clusters", post(create_cluster))
        .route("/etcd-client", post(create_etcd_client))
        .route("/kubeconfig", post(create_kubeconfig))
        .route_layer(middleware::from_fn_with_state(seed, require_admin))
}

/// Lets through only requests bearing the admin token.
async fn require_admin(
    State(seed): State<Arc<Seed>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiFailure> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        None => Err(ApiFailure::new(
            codes::UNAUTHORIZED,
            "admin routes need the seed's admin token (Authorization: Bearer …)",
        )),
        Some(token) if constant_time_eq(token.trim().as_bytes(), seed.admin_token.as_bytes()) => {
            Ok(next.run(request).await)
        }
        Some(_) => Err(ApiFailure::new(
            codes::FORBIDDEN,
            "this is not the admin token",
        )),
    }
}

async fn list_hosts(State(seed): State<Arc<Seed>>) -> Result<Json<StatusView>, ApiFailure> {
    let seed2 = seed.clone();
    let hosts = blocking("listing hosts", move || {
        read_with(&*seed2.store, |tx| {
            list_json::<HostRecord>(tx, Table::Hosts)
        })
        .map_err(|e| ApiFailure::internal("listing hosts", &e))
    })
    .await?;
    let missing_images = match seed.missing_images.clone() {
        Some(missing) => {
            blocking("reading the registry's catalog", move || {
                missing().map_err(|e| ApiFailure::internal("reading the registry's catalog", &e))
            })
            .await?
        }
        None => vec![],
    };
    Ok(Json(StatusView {
        cluster: seed.facts.name.clone(),
        now_ms: now_ms(),
        hosts: hosts.iter().map(host_view).collect(),
        missing_images,
        refused: seed.refusals.list(),
    }))
}

/// Every leaf certificate of every host's last plan, soonest to expire first.
async fn list_certs(State(seed): State<Arc<Seed>>) -> Result<Json<CertList>, ApiFailure> {
    let (hosts, certs) = blocking("reading the certificates", move || {
        read_with(&*seed.store, |tx| {
            Ok((
                list_json::<HostRecord>(tx, Table::Hosts)?,
                list_json::<HostCerts>(tx, Table::Certs)?,
            ))
        })
        .map_err(|e| ApiFailure::internal("reading the certificates", &e))
    })
    .await?;
    let hostnames: std::collections::BTreeMap<&str, &str> = hosts
        .iter()
        .map(|h| (h.id.as_str(), h.hostname().unwrap_or("")))
        .collect();
    let mut rows: Vec<CertRow> = Vec::new();
    for record in certs {
        let host = record.host;
        let hostname = hostnames
            .get(host.as_str())
            .copied()
            .unwrap_or("")
            .to_string();
        rows.extend(record.certs.into_iter().map(|cert| CertRow {
            host: host.clone(),
            hostname: hostname.clone(),
            cert,
        }));
    }
    rows.sort_by(|a, b| {
        (a.cert.not_after, &a.host, &a.cert.path).cmp(&(b.cert.not_after, &b.host, &b.cert.path))
    });
    Ok(Json(CertList {
        now_ms: now_ms(),
        certs: rows,
    }))
}

/// `POST /v1/admin/hosts/{id}/commands`: the body names the command.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    pub kind: cluster::api::CommandKind,
}

/// Queues a command for the host's agent and wakes the polls waiting for one.
async fn queue_command(
    State(seed): State<Arc<Seed>>,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<CommandRequest>,
) -> Result<(StatusCode, Json<CommandRecord>), ApiFailure> {
    let seed2 = seed.clone();
    let queued = blocking("queueing a command", move || {
        Ok(commands::queue(&*seed2.store, &id, request.kind, now_ms()))
    })
    .await?
    .map_err(admin_command_failure)?;
    tracing::info!(host = %queued.host, command = %queued.id, kind = queued.kind.as_str(), "queued a command");
    seed.commands_queued.notify_waiters();
    Ok((StatusCode::ACCEPTED, Json(queued)))
}

/// Every command of host `id`, newest first, or not found.
async fn host_commands(seed: Arc<Seed>, id: String) -> Result<Vec<CommandRecord>, ApiFailure> {
    let listed = blocking("reading commands", move || {
        read_with(&*seed.store, |tx| commands::list(tx, &id))
            .map_err(|e| ApiFailure::internal("reading commands", &e))
    })
    .await?;
    listed.ok_or_else(|| ApiFailure::new(codes::NOT_FOUND, "no host with this id"))
}

async fn list_commands(
    State(seed): State<Arc<Seed>>,
    Path(id): Path<String>,
) -> Result<Json<CommandList>, ApiFailure> {
    Ok(Json(CommandList {
        now_ms: now_ms(),
        commands: host_commands(seed, id).await?,
    }))
}

async fn get_command(
    State(seed): State<Arc<Seed>>,
    Path((id, command)): Path<(String, String)>,
) -> Result<Json<CommandRecord>, ApiFailure> {
    host_commands(seed, id)
        .await?
        .into_iter()
        .find(|c| c.id == command)
        .map(Json)
        .ok_or_else(|| ApiFailure::new(codes::NOT_FOUND, "the host has no command with this id"))
}

fn admin_command_failure(err: commands::CommandError) -> ApiFailure {
    use commands::CommandError as E;
    let message = err.to_string();
    match err {
        E::NoHost(_) | E::NoCommand { .. } => ApiFailure::new(codes::NOT_FOUND, message),
        E::Store(e) => ApiFailure::internal("queueing a command", &e),
        E::OtherKey(_) | E::TooMany { .. } | E::Answered { .. } => {
            ApiFailure::new(codes::COMMAND_REFUSED, message)
        }
    }
}

/// `state=S` of `GET /v1/admin/jobs`, the only parameter it takes.
fn job_state_filter(query: Option<&str>) -> Result<Option<JobState>, ApiFailure> {
    let mut state = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let Some(("state", value)) = pair.split_once('=') else {
            return Err(ApiFailure::new(
                codes::BAD_REQUEST,
                format!(
                    "unknown query parameter {:?}: jobs are listed whole or by state=…",
                    cluster::text::printable(pair)
                ),
            ));
        };
        let parsed =
            serde_json::from_value(serde_json::Value::String(value.to_string())).map_err(|_| {
                ApiFailure::new(
                    codes::BAD_REQUEST,
                    format!(
                        "state {:?} is not one of queued, running, succeeded, failed, cancelled",
                        cluster::text::printable(value)
                    ),
                )
            })?;
        state = Some(parsed);
    }
    Ok(state)
}

/// Every job, newest first, or those in the state asked for.
async fn list_jobs(
    State(seed): State<Arc<Seed>>,
    RawQuery(query): RawQuery,
) -> Result<Json<JobList>, ApiFailure> {
    let state = job_state_filter(query.as_deref())?;
    let mut jobs = blocking("reading the jobs", move || {
        read_with(&*seed.store, |tx| list_json::<JobRecord>(tx, Table::Jobs))
            .map_err(|e| ApiFailure::internal("reading the jobs", &e))
    })
    .await?;
    jobs.retain(|j| state.is_none_or(|s| j.state == s));
    jobs.sort_by(|a, b| (b.created_ms, &b.id).cmp(&(a.created_ms, &a.id)));
    Ok(Json(JobList {
        now_ms: now_ms(),
        jobs,
    }))
}

async fn get_job(
    State(seed): State<Arc<Seed>>,
    Path(id): Path<String>,
) -> Result<Json<JobRecord>, ApiFailure> {
    let job = blocking("reading the job", move || {
        read_with(&*seed.store, |tx| {
            get_json::<JobRecord>(tx, Table::Jobs, &id)
        })
        .map_err(|e| ApiFailure::internal("reading the job", &e))
    })
    .await?;
    job.map(Json)
        .ok_or_else(|| ApiFailure::new(codes::NOT_FOUND, "no job with this id"))
}

/// The answer that refuses a job, or a cancel or resume of one.
fn job_failure(context: &str, err: jobs::JobError) -> ApiFailure {
    match err {
        jobs::JobError::NotFound(message) => ApiFailure::new(codes::NOT_FOUND, message),
        jobs::JobError::Refused { code, message } => ApiFailure::new(code, message),
        jobs::JobError::Store(e) => ApiFailure::internal(context, &e),
    }
}

/// Starts a job and answers 202 `{"job": id}`.
async fn start(seed: &Arc<Seed>, request: JobRequest) -> Result<Response, ApiFailure> {
    let seed2 = seed.clone();
    let id = blocking("recording the job", move || {
        jobs::submit(&seed2, request).map_err(|e| job_failure("recording the job", e))
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(JobAccepted { job: id })).into_response())
}

/// `POST /v1/admin/jobs/{id}/cancel`: a queued job is cancelled at once, a running one stops
/// after its current step. Answers the job.
async fn cancel_job(
    State(seed): State<Arc<Seed>>,
    Path(id): Path<String>,
) -> Result<Json<JobRecord>, ApiFailure> {
    let job = blocking("cancelling the job", move || {
        jobs::cancel(&seed, &id).map_err(|e| job_failure("cancelling the job", e))
    })
    .await?;
    tracing::info!(job = %job.id, state = job.state.as_str(), "job cancel asked");
    Ok(Json(job))
}

/// `POST /v1/admin/jobs/{id}/resume`: a failed or cancelled job goes on from the step that did
/// not end. Answers 202 and the job.
async fn resume_job(
    State(seed): State<Arc<Seed>>,
    Path(id): Path<String>,
) -> Result<Response, ApiFailure> {
    let job = blocking("resuming the job", move || {
        jobs::resume(&seed, &id).map_err(|e| job_failure("resuming the job", e))
    })
    .await?;
    tracing::info!(job = %job.id, run = job.run, "job resumed");
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

async fn approve_host(
    State(seed): State<Arc<Seed>>,
    Path(id): Path<String>,
) -> Result<Response, ApiFailure> {
    start(&seed, JobRequest::ApproveHost { host: id }).await
}

/// `force=true` of `DELETE /v1/admin/hosts/{id}`, the only parameter it takes.
fn force_flag(query: Option<&str>) -> Result<bool, ApiFailure> {
    match query.unwrap_or("") {
        "" | "force=false" => Ok(false),
        "force=true" => Ok(true),
        other => Err(ApiFailure::new(
            codes::BAD_REQUEST,
            format!(
                "unknown query {:?}: a host is removed as it is or with force=true",
                cluster::text::printable(other)
            ),
        )),
    }
}

async fn remove_host(
    State(seed): State<Arc<Seed>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiFailure> {
    let force = force_flag(query.as_deref())?;
    start(&seed, JobRequest::RemoveHost { host: id, force }).await
}

async fn create_token(
    State(seed): State<Arc<Seed>>,
    JsonBody(request): JsonBody<TokenRequest>,
) -> Result<Response, ApiFailure> {
    if request.ttl_secs == 0 || request.ttl_secs > MAX_TOKEN_TTL_SECS {
        return Err(ApiFailure::new(
            codes::BAD_REQUEST,
            format!("ttl_secs must be between 1 and {MAX_TOKEN_TTL_SECS}"),
        ));
    }
    let (ttl, role) = (request.ttl_secs, request.role);
    let (record, token) = blocking("recording the token", move || {
        jobs::create_token(&seed, ttl, role)
            .map_err(|e| ApiFailure::internal("recording the token", &e))
    })
    .await?;
    tracing::info!(token = %record.id, "join token made");
    let body = TokenCreated {
        id: record.id,
        token,
        expires_ms: record.expires_ms,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `POST /v1/admin/hosts/{id}/reset`: unbinds the host from its identity key, so that the
/// machine (re-imaged, or with a new disk) is let in again with a new key. Audited.
async fn reset_host(
    State(seed): State<Arc<Seed>>,
    Path(id): Path<String>,
) -> Result<Json<HostResetView>, ApiFailure> {
    let (seed2, id2) = (seed.clone(), id.clone());
    let before = blocking("resetting the host", move || {
        write_with(&*seed2.store, |tx| reset_host_record(tx, &id2))
            .map_err(|e| ApiFailure::internal("resetting the host", &e))
    })
    .await?
    .ok_or_else(|| ApiFailure::new(codes::NOT_FOUND, format!("no host {id}")))?;
    let key = before.key.map(|k| k.to_string());
    tracing::warn!(target: "audit", host = %id, key = key.as_deref().unwrap_or("-"), "identity key unbound by an operator");
    Ok(Json(HostResetView {
        host: id,
        unbound_key: key,
    }))
}

/// A kubeconfig for an operator, aimed at the control-plane endpoint, with a client
/// certificate the cluster CA signs for this answer alone: the user's name as its CN and the
/// cluster administrators' group (`kubeadm:cluster-admins`, or `system:masters` before 1.29)
/// as its O, as kubeadm's `admin.conf`, or the group asked for (to act as another identity,
/// e.g. `system:node:w1` in `system:nodes`, when checking what it may do).
async fn create_kubeconfig(
    State(seed): State<Arc<Seed>>,
    JsonBody(request): JsonBody<KubeconfigRequest>,
) -> Result<Json<KubeconfigView>, ApiFailure> {
    let (ttl_secs, _) = credential_terms(request.ttl_secs, None, "user")?;
    let user = kubernetes_name(&request.user, "user")?;
    let group = match &request.group {
        // kubeadm's super-admin group bypasses authorization altogether: the seed never
        // signs into it (nor writes super-admin.conf).
        Some(group) if group == "system:masters" => {
            return Err(ApiFailure::new(
                codes::BAD_REQUEST,
                "group system:masters is not given out: RBAC cannot limit it; leave the group unset for the cluster administrators'",
            ));
        }
        Some(group) => Some(kubernetes_name(group, "group")?),
        None => None,
    };
    let view = blocking("signing an operator's client certificate", move || {
        issue_kubeconfig(
            &seed,
            &user,
            group,
            ttl_secs,
            time::OffsetDateTime::now_utc(),
        )
    })
    .await?;
    tracing::info!(user = %view.user, group = %view.group, not_after_ms = view.not_after_ms, "issued a kubeconfig");
    Ok(Json(view))
}

fn issue_kubeconfig(
    seed: &Seed,
    user: &str,
    group: Option<String>,
    ttl_secs: u64,
    now: time::OffsetDateTime,
) -> Result<KubeconfigView, ApiFailure> {
    let spec = &seed.spec;
    let convention = Convention::for_minor(spec.kubernetes_version.minor());
    let mut profile = KubeconfigKind::Admin.profile(convention);
    profile.common_name = user.to_string();
    if group.is_some() {
        profile.organization = group;
    }
    let group = profile.organization.clone().unwrap_or_default();
    let validity = time::Duration::seconds(ttl_secs as i64);
    let issued = seed
        .cas
        .ca
        .issue_for(
            &profile,
            SubjectKey::Fresh(seed.cas.key_algorithm()),
            now,
            validity,
        )
        .map_err(|e| ApiFailure::internal("signing an operator's client certificate", &e))?;
    let key = issued.key.ok_or_else(|| {
        ApiFailure::internal(
            "signing an operator's client certificate",
            &"no key was made",
        )
    })?;
    let server = cluster::plan::api_server_url(spec);
    let config = Kubeconfig {
        cluster_name: spec.name.to_string(),
        server: server.clone(),
        ca_pem: seed.cas.ca.cert_pem().to_owned(),
        user: user.to_string(),
        credential: ClientCredential::Embedded {
            cert_pem: issued.cert_pem,
            key_pem: key.pem().to_owned(),
        },
    };
    Ok(KubeconfigView {
        kubeconfig: config.render(),
        user: user.to_string(),
        group,
        server,
        not_after_ms: ((now + validity).unix_timestamp_nanos() / 1_000_000) as i64,
    })
}

/// A fresh etcd client certificate and key from the cluster's etcd CA, with that CA.
async fn create_etcd_client(
    State(seed): State<Arc<Seed>>,
    JsonBody(request): JsonBody<EtcdClientRequest>,
) -> Result<Json<EtcdClientView>, ApiFailure> {
    let (ttl_secs, holder) =
        credential_terms(request.ttl_secs, request.holder.as_deref(), "holder")?;
    let view = blocking("signing an etcd client certificate", move || {
        issue_etcd_client(
            &seed.cas,
            &holder,
            ttl_secs,
            time::OffsetDateTime::now_utc(),
        )
    })
    .await?;
    tracing::info!(
        common_name = %view.common_name,
        not_after_ms = view.not_after_ms,
        "issued an etcd client certificate"
    );
    Ok(Json(view))
}

/// The lifetime and name (`what`: a holder, a user) a credential request asks for, or the
/// `bad_request` that refuses it.
fn credential_terms(
    ttl_secs: Option<u64>,
    name: Option<&str>,
    what: &str,
) -> Result<(u64, String), ApiFailure> {
    let ttl_secs = ttl_secs.unwrap_or(DEFAULT_ETCD_CLIENT_TTL_SECS);
    if ttl_secs == 0 || ttl_secs > MAX_ETCD_CLIENT_TTL_SECS {
        return Err(ApiFailure::new(
            codes::BAD_REQUEST,
            format!("ttl_secs must be between 1 and {MAX_ETCD_CLIENT_TTL_SECS}"),
        ));
    }
    let holder = name.unwrap_or("admin");
    let fits = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if holder.is_empty() || holder.len() > MAX_HOLDER_LEN || !holder.chars().all(fits) {
        return Err(ApiFailure::new(
            codes::BAD_REQUEST,
            format!("{what} must be 1 to {MAX_HOLDER_LEN} ASCII letters, digits, '.', '_' or '-'"),
        ));
    }
    Ok((ttl_secs, holder.to_string()))
}

/// A Kubernetes user or group name as a certificate carries it: 1 to [`MAX_HOLDER_LEN`]
/// ASCII letters, digits, '.', '_', '-' or ':' (`system:node:w1`, `kubeadm:cluster-admins`).
fn kubernetes_name(name: &str, what: &str) -> Result<String, ApiFailure> {
    let fits = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':');
    if name.is_empty() || name.len() > MAX_HOLDER_LEN || !name.chars().all(fits) {
        return Err(ApiFailure::new(
            codes::BAD_REQUEST,
            format!(
                "{what} must be 1 to {MAX_HOLDER_LEN} ASCII letters, digits, '.', '_', '-' or ':'"
            ),
        ));
    }
    Ok(name.to_string())
}

/// What the credential names: an admin's etcd client, and who holds it.
fn etcd_client_profile(holder: &str) -> CertProfile {
    CertProfile {
        name: "admin-etcd-client".to_owned(),
        issuer: CaKind::Etcd,
        common_name: format!("admin-etcd-client:{holder}"),
        organization: None,
        usage: Usage::Client,
        dns_names: Vec::new(),
        ips: Vec::new(),
    }
}

fn issue_etcd_client(
    cas: &CaSet,
    holder: &str,
    ttl_secs: u64,
    now: time::OffsetDateTime,
) -> Result<EtcdClientView, ApiFailure> {
    let profile = etcd_client_profile(holder);
    let validity = time::Duration::seconds(ttl_secs as i64);
    let subject = SubjectKey::Fresh(cas.key_algorithm());
    let issued = cas
        .etcd_ca
        .issue_for(&profile, subject, now, validity)
        .map_err(|e| ApiFailure::internal("signing an etcd client certificate", &e))?;
    let key = issued.key.ok_or_else(|| {
        ApiFailure::internal("signing an etcd client certificate", &"no key was made")
    })?;
    Ok(EtcdClientView {
        ca_pem: cas.etcd_ca.cert_pem().to_owned(),
        cert_pem: issued.cert_pem,
        key_pem: key.pem().to_owned(),
        common_name: profile.common_name,
        not_after_ms: ((now + validity).unix_timestamp_nanos() / 1_000_000) as i64,
    })
}

/// One seed serves the one cluster of its `--cluster` file.
async fn create_cluster() -> ApiFailure {
    ApiFailure::new(
        codes::BAD_REQUEST,
        "this seed serves the one cluster of its --cluster file; start another seed (with its \
         own state directory) for another cluster",
    )
}
