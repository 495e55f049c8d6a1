//! Host routes: enrollment and progress reports.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cluster::api::{EnrollRequest, EnrollResponse, ProgressReport, codes};
use cluster::etcd::Member;

use super::{ApiFailure, JsonBody, PeerAddr, blocking, now_ms};
use crate::enroll::apply;
use crate::enroll::decide::Decision;
use crate::enroll::plan::{BuildError, MasterSeat, PlanContext, PlanOutcome, build, master_seats};
use crate::seed::{Seed, is_master};
use crate::store::records::{EtcdMembership, HostRecord, Progress, meta};
use crate::store::{Table, get_json, list_json, put_json, read_with, write_with};

/// How long a pending host waits before asking again.
const PENDING_RETRY_SECS: u32 = 15;
/// How long a bootstrap master waits for its peers before asking again.
const WAITING_RETRY_SECS: u32 = 3;
/// Longest progress message kept.
const MAX_MESSAGE: usize = 4096;

/// `POST /v1/enroll`.
pub async fn enroll(
    State(seed): State<Arc<Seed>>,
    peer: Option<axum::Extension<PeerAddr>>,
    JsonBody(request): JsonBody<EnrollRequest>,
) -> Result<Response, ApiFailure> {
    let peer_ip = peer.map(|p| p.0.0.ip().to_string());
    let result = enroll_inner(&seed, request, peer_ip).await;
    let label = match &result {
        Ok((_, label)) => label,
        Err(failure) => failure.code,
    };
    seed.metrics.enrollment(label);
    result.map(|(response, _)| response)
}

async fn enroll_inner(
    seed: &Arc<Seed>,
    request: EnrollRequest,
    peer_ip: Option<String>,
) -> Result<(Response, &'static str), ApiFailure> {
    let (seed2, request2) = (seed.clone(), request.clone());
    let decision = blocking("recording the enrollment", move || {
        apply::enroll(
            &*seed2.store,
            &seed2.facts,
            &request2,
            peer_ip.as_deref(),
            now_ms(),
        )
        .map_err(|e| ApiFailure::internal("recording the enrollment", &e))
    })
    .await?;
    let mut record = match decision {
        Decision::Refused { code, message } => return Err(ApiFailure::new(code, message)),
        Decision::Pending { record, .. } => {
            tracing::info!(host = %record.id, "pending approval");
            let message = "not let in yet: an operator must approve this host \
                           (launcher-seed hosts approve ID), or boot it with a join token";
            return Ok((pending(&record.id, PENDING_RETRY_SECS, message), "pending"));
        }
        Decision::Enrolled { record, .. } => record,
    };
    let seed2 = seed.clone();
    let host = record.clone();
    if blocking("reading etcd's first members", move || {
        needs_learner_add(&seed2, &host)
    })
    .await?
    {
        record = add_learner(seed, record).await?;
    }
    let seed2 = seed.clone();
    let host = record.clone();
    let outcome = blocking("making the plan", move || plan_for(&seed2, &host, &request)).await?;
    match outcome {
        PlanOutcome::Ready(plan) => {
            tracing::info!(host = %record.id, hostname = %plan.hostname, role = %plan.role, "enrolled");
            let body = Json(EnrollResponse::Enrolled(plan));
            Ok(((StatusCode::OK, body).into_response(), "enrolled"))
        }
        PlanOutcome::Waiting(why) => Ok((pending(&record.id, WAITING_RETRY_SECS, &why), "waiting")),
    }
}

fn pending(host_id: &str, retry_after_secs: u32, message: &str) -> Response {
    let body = EnrollResponse::Pending {
        host_id: host_id.to_string(),
        retry_after_secs,
        message: message.to_string(),
    };
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

fn plan_for(
    seed: &Seed,
    record: &HostRecord,
    request: &EnrollRequest,
) -> Result<PlanOutcome, ApiFailure> {
    let master = is_master(record.role());
    let (bootstrap, masters) = read_with(&*seed.store, |tx| {
        let cohort = etcd_cohort(tx)?;
        let masters = if master {
            list_json::<HostRecord>(tx, Table::Hosts)?
                .into_iter()
                .filter(|h| is_master(h.role()))
                .collect()
        } else {
            Vec::new()
        };
        Ok((cohort, masters))
    })
    .map_err(|e| ApiFailure::internal("reading the masters", &e))?;
    let ctx = PlanContext {
        spec: &seed.spec,
        bootstrap: bootstrap.unwrap_or(seed.spec.masters),
        facts: &seed.facts,
        cas: &seed.cas,
        masters: &masters,
        now: time::OffsetDateTime::now_utc(),
    };
    let outcome = build(&ctx, record, &request.csrs).map_err(|err| match &err {
        BuildError::Plan(cluster::plan::PlanError::UnknownCsr { .. })
        | BuildError::Plan(cluster::plan::PlanError::Pki(cluster::pki::PkiError::BadCsr {
            ..
        })) => ApiFailure::new(codes::BAD_CSR, err.to_string()),
        _ => ApiFailure::internal("making the plan", &err),
    })?;
    let starts_etcd = matches!(&outcome, PlanOutcome::Ready(_))
        && record
            .assignment
            .as_ref()
            .and_then(|a| a.master_ordinal)
            .is_some_and(|o| o <= ctx.bootstrap);
    if starts_etcd && bootstrap.is_none() {
        record_cohort(seed, ctx.bootstrap)
            .map_err(|e| ApiFailure::internal("recording etcd's first members", &e))?;
    }
    Ok(outcome)
}

/// How many masters started etcd together, once the first of them got its plan.
fn etcd_cohort(
    tx: &(impl crate::store::ReadTxn + ?Sized),
) -> Result<Option<u32>, crate::store::StoreError> {
    get_json::<u32>(tx, Table::Meta, meta::ETCD_COHORT)
}

/// Records the cohort unless another enrollment did first (they all record the same number).
fn record_cohort(seed: &Seed, cohort: u32) -> Result<(), crate::store::StoreError> {
    write_with(&*seed.store, |tx| {
        if get_json::<u32>(&*tx, Table::Meta, meta::ETCD_COHORT)?.is_none() {
            put_json(tx, Table::Meta, meta::ETCD_COHORT, &cohort)?;
        }
        Ok(())
    })
}

/// A master beyond the ones that started etcd joins a running etcd: it must be added as a
/// learner before it starts. Before etcd started, the cohort is `cluster.masters`.
fn needs_learner_add(seed: &Seed, record: &HostRecord) -> Result<bool, ApiFailure> {
    let ordinal = record.assignment.as_ref().and_then(|a| a.master_ordinal);
    if record.etcd.is_some() || ordinal.is_none() {
        return Ok(false);
    }
    let cohort = read_with(&*seed.store, |tx| etcd_cohort(tx))
        .map_err(|e| ApiFailure::internal("reading etcd's first members", &e))?
        .unwrap_or(seed.spec.masters);
    Ok(ordinal.is_some_and(|o| o > cohort))
}

async fn add_learner(seed: &Arc<Seed>, record: HostRecord) -> Result<HostRecord, ApiFailure> {
    let a = record
        .assignment
        .clone()
        .ok_or_else(|| ApiFailure::new(codes::INTERNAL, "an enrolled host without a role"))?;
    let ordinal = a.master_ordinal.unwrap_or(u32::MAX);
    let ip =
        a.ip.as_deref()
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| ApiFailure::new(codes::BAD_REQUEST, "a master needs an IP address"))?;
    let member = Member::new(a.hostname.clone(), ip);
    let seats = master_seats_now(seed).await?;
    let endpoints: Vec<String> = seats
        .iter()
        .filter(|s| s.ordinal < ordinal)
        .map(|s| s.member.client_url())
        .collect();
    let membership = seed.membership(endpoints).map_err(|e| {
        tracing::warn!(host = %record.id, error = %e, "no etcd membership client");
        ApiFailure::new(
            codes::BUSY,
            "this master joins a running etcd, and the seed cannot reach etcd yet; retry",
        )
    })?;
    let _one_change = seed.membership_lock.lock().await;
    let member_id = membership.add_learner(&member).await.map_err(|e| {
        tracing::warn!(host = %record.id, error = %e, "adding the etcd learner failed");
        ApiFailure::new(codes::BUSY, "etcd did not take the new member yet; retry")
    })?;
    let host = record_learner(seed, &record.id, &member_id).await?;
    spawn_promotion(seed.clone(), membership, record.id.clone(), member_id);
    Ok(host)
}

/// Every master seat known now (see [`crate::enroll::plan::master_seats`]).
pub async fn master_seats_now(seed: &Arc<Seed>) -> Result<Vec<MasterSeat>, ApiFailure> {
    let seed2 = seed.clone();
    let masters = blocking("reading the masters", move || {
        read_with(&*seed2.store, |tx| {
            list_json::<HostRecord>(tx, Table::Hosts)
        })
        .map_err(|e| ApiFailure::internal("reading the masters", &e))
    })
    .await?;
    let masters: Vec<HostRecord> = masters
        .into_iter()
        .filter(|h| is_master(h.role()))
        .collect();
    Ok(master_seats(&seed.facts, &masters))
}

async fn record_learner(
    seed: &Arc<Seed>,
    id: &str,
    member_id: &str,
) -> Result<HostRecord, ApiFailure> {
    let (seed2, id, member_id) = (seed.clone(), id.to_string(), member_id.to_string());
    blocking("recording the etcd learner", move || {
        update_host(&seed2, &id, |host| {
            host.etcd = Some(EtcdMembership {
                member_id: Some(member_id.clone()),
                learner: true,
                added_ms: now_ms(),
            });
        })
        .map_err(|e| ApiFailure::internal("recording the etcd learner", &e))?
        .ok_or_else(|| ApiFailure::new(codes::NOT_FOUND, "the host was removed meanwhile"))
    })
    .await
}

/// Changes a host record in one transaction; `None` when the host is gone.
pub fn update_host(
    seed: &Seed,
    id: &str,
    mut change: impl FnMut(&mut HostRecord),
) -> Result<Option<HostRecord>, crate::store::StoreError> {
    write_with(&*seed.store, |tx| {
        let Some(mut host) = get_json::<HostRecord>(&*tx, Table::Hosts, id)? else {
            return Ok(None);
        };
        change(&mut host);
        put_json(tx, Table::Hosts, id, &host)?;
        Ok(Some(host))
    })
}

/// Promotes the learner once it has caught up, and records it. A learner that never comes up
/// is removed by the membership client; its record then forgets the membership, so that the
/// host is added again when it enrolls again.
pub fn spawn_promotion(
    seed: Arc<Seed>,
    membership: Arc<dyn crate::membership::Membership>,
    host_id: String,
    member_id: String,
) {
    tokio::spawn(async move {
        let result = membership.promote(&member_id).await;
        if let Err(err) = &result {
            tracing::warn!(host = %host_id, member = %member_id, error = %err, "etcd learner not promoted");
        } else {
            tracing::info!(host = %host_id, member = %member_id, "etcd learner promoted");
        }
        let promoted = result.is_ok();
        let _ = tokio::task::spawn_blocking(move || {
            update_host(&seed, &host_id, |host| {
                if promoted {
                    if let Some(etcd) = host.etcd.as_mut() {
                        etcd.learner = false;
                    }
                } else {
                    host.etcd = None;
                }
            })
        })
        .await;
    });
}

/// `POST /v1/hosts/{id}/progress`.
pub async fn progress(
    State(seed): State<Arc<Seed>>,
    Path(id): Path<String>,
    JsonBody(report): JsonBody<ProgressReport>,
) -> Result<StatusCode, ApiFailure> {
    if report.message.len() > MAX_MESSAGE {
        return Err(ApiFailure::new(
            codes::BAD_REQUEST,
            format!("progress messages are limited to {MAX_MESSAGE} bytes"),
        ));
    }
    let seed2 = seed.clone();
    let found = blocking("recording progress", move || {
        record_progress(&seed2, &id, &report)
            .map_err(|e| ApiFailure::internal("recording progress", &e))
    })
    .await?;
    if !found {
        return Err(ApiFailure::new(codes::NOT_FOUND, "no host with this id"));
    }
    Ok(StatusCode::NO_CONTENT)
}

fn record_progress(
    seed: &Seed,
    id: &str,
    report: &ProgressReport,
) -> Result<bool, crate::store::StoreError> {
    let now = now_ms();
    write_with(&*seed.store, |tx| {
        let Some(mut host) = get_json::<HostRecord>(&*tx, Table::Hosts, id)? else {
            return Ok(false);
        };
        let since = match &host.progress {
            Some(p) if p.phase == report.phase => p.phase_since_ms,
            _ => now,
        };
        host.progress = Some(Progress {
            phase: report.phase,
            state: report.state,
            message: report.message.clone(),
            host_at_unix_ms: report.at_unix_ms,
            phase_since_ms: since,
            received_ms: now,
        });
        host.last_seen_ms = now;
        put_json(tx, Table::Hosts, id, &host)?;
        Ok(true)
    })
}
