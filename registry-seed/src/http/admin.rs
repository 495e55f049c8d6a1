//! Admin routes under `/v1/admin`: only with the admin bearer token. Reads answer at once;
//! changes start a job and answer `{"job": id}`.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use cluster::api::codes;

use super::{ApiFailure, JsonBody, blocking};
use crate::enroll::apply::constant_time_eq;
use crate::jobs::{self, JobRequest};
use crate::seed::Seed;
use crate::store::records::{HostRecord, JobRecord, now_ms};
use crate::store::{Table, get_json, list_json, read_with};
use crate::views::{JobAccepted, StatusView, TokenRequest, host_view};

/// Longest join-token lifetime: 30 days.
pub const MAX_TOKEN_TTL_SECS: u64 = 30 * 24 * 3600;

pub fn routes(seed: Arc<Seed>) -> Router<Arc<Seed>> {
    Router::new()
        .route("/hosts", get(list_hosts))
        .route("/hosts/{id}", delete(remove_host))
        .route("/hosts/{id}/approve", post(approve_host))
        .route("/tokens", post(create_token))
        .route("/jobs/{id}", get(get_job))
        .route("/clusters", post(create_cluster))
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
        read_with(&*seed.store, |tx| {
            get_json::<JobRecord>(tx, Table::Jobs, &id)
        })
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

/// One seed serves the one cluster of its `--cluster` file.
async fn create_cluster() -> ApiFailure {
    ApiFailure::new(
        codes::BAD_REQUEST,
        "this seed serves the one cluster of its --cluster file; start another seed (with its \
         own state directory) for another cluster",
    )
}
