//! Admin routes under `/v1/admin`: only with the admin bearer token. Reads answer at once;
//! changes start a job and answer `{"job": id}`; an etcd client credential is made for the
//! answer alone, never stored.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use cluster::api::codes;
use cluster::pki::{CaKind, CaSet, CertProfile, SubjectKey, Usage};

use super::{ApiFailure, JsonBody, blocking};
use crate::enroll::apply::constant_time_eq;
use crate::jobs::{self, JobRequest};
use crate::seed::Seed;
use crate::store::records::{HostRecord, JobRecord, now_ms};
use crate::store::{Table, get_json, list_json, read_with};
use crate::views::{
    EtcdClientRequest, EtcdClientView, JobAccepted, StatusView, TokenRequest, host_view,
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
        .route("/tokens", post(create_token))
        .route("/jobs/{id}", get(get_job))
        .route("/clusters", post(create_cluster))
        .route("/etcd-client", post(create_etcd_client))
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
    Ok(Json(StatusView {
        cluster: seed.facts.name.clone(),
        now_ms: now_ms(),
        hosts: hosts.iter().map(host_view).collect(),
    }))
}

async fn get_job(
    State(seed): State<Arc<Seed>>,
    Path(id): Path<String>,
) -> Result<Json<JobRecord>, ApiFailure> {
    let job = blocking("reading the job", move || {
        let job = read_with(&*seed.store, |tx| {
            get_json::<JobRecord>(tx, Table::Jobs, &id)
        })
        .map_err(|e| ApiFailure::internal("reading the job", &e))?;
        job.map(|job| jobs::opened(&seed.seal, job))
            .transpose()
            .map_err(|e| ApiFailure::internal("reading the job", &e))
    })
    .await?;
    job.map(Json)
        .ok_or_else(|| ApiFailure::new(codes::NOT_FOUND, "no job with this id"))
}

/// Starts a job and answers 202 `{"job": id}`.
async fn start(seed: &Arc<Seed>, request: JobRequest) -> Result<Response, ApiFailure> {
    let seed2 = seed.clone();
    let id = blocking("recording the job", move || {
        jobs::submit(&seed2, request).map_err(|e| ApiFailure::internal("recording the job", &e))
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(JobAccepted { job: id })).into_response())
}

async fn host_exists(seed: &Arc<Seed>, id: &str) -> Result<(), ApiFailure> {
    let (seed2, id2) = (seed.clone(), id.to_string());
    let host = blocking("reading the host", move || {
        read_with(&*seed2.store, |tx| {
            get_json::<HostRecord>(tx, Table::Hosts, &id2)
        })
        .map_err(|e| ApiFailure::internal("reading the host", &e))
    })
    .await?;
    match host {
        Some(_) => Ok(()),
        None => Err(ApiFailure::new(codes::NOT_FOUND, format!("no host {id}"))),
    }
}

async fn approve_host(
    State(seed): State<Arc<Seed>>,
    Path(id): Path<String>,
) -> Result<Response, ApiFailure> {
    host_exists(&seed, &id).await?;
    start(&seed, JobRequest::ApproveHost { host: id }).await
}

async fn remove_host(
    State(seed): State<Arc<Seed>>,
    Path(id): Path<String>,
) -> Result<Response, ApiFailure> {
    host_exists(&seed, &id).await?;
    start(&seed, JobRequest::RemoveHost { host: id }).await
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
    let job = JobRequest::CreateToken {
        ttl_secs: request.ttl_secs,
        role: request.role,
    };
    start(&seed, job).await
}

/// A fresh etcd client certificate and key from the cluster's etcd CA, with that CA.
async fn create_etcd_client(
    State(seed): State<Arc<Seed>>,
    JsonBody(request): JsonBody<EtcdClientRequest>,
) -> Result<Json<EtcdClientView>, ApiFailure> {
    let (ttl_secs, holder) = etcd_client_terms(&request)?;
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

/// The lifetime and holder a request asks for, or the `bad_request` that refuses it.
fn etcd_client_terms(request: &EtcdClientRequest) -> Result<(u64, String), ApiFailure> {
    let ttl_secs = request.ttl_secs.unwrap_or(DEFAULT_ETCD_CLIENT_TTL_SECS);
    if ttl_secs == 0 || ttl_secs > MAX_ETCD_CLIENT_TTL_SECS {
        return Err(ApiFailure::new(
            codes::BAD_REQUEST,
            format!("ttl_secs must be between 1 and {MAX_ETCD_CLIENT_TTL_SECS}"),
        ));
    }
    let holder = request.holder.as_deref().unwrap_or("admin");
    let fits = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if holder.is_empty() || holder.len() > MAX_HOLDER_LEN || !holder.chars().all(fits) {
        return Err(ApiFailure::new(
            codes::BAD_REQUEST,
            format!("holder must be 1 to {MAX_HOLDER_LEN} ASCII letters, digits, '.', '_' or '-'"),
        ));
    }
    Ok((ttl_secs, holder.to_string()))
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
