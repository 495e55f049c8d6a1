//! Host routes: enrollment and progress reports. They translate: the enrollment is decided,
//! recorded and planned by [`apply::enroll`], a joining master's learner added by the
//! membership service.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cluster::api::{
    CommandBatch, CommandOutcome, EnrollRequest, EnrollResponse, ProgressReport, codes,
};
use cluster::pki::HostKeyId;

use super::{ApiFailure, ClientKey, JsonBody, PeerAddr, blocking};
use crate::commands;
use crate::enroll::apply::{self, Caller, Enrollment};
use crate::enroll::plan::{BuildError, PlanOutcome};
use crate::enroll::progress::{self, Reported};
use crate::membership::ChangeError;
use crate::seed::Seed;
use crate::store::records::now_ms;

/// How long a pending host waits before asking again.
const PENDING_RETRY_SECS: u32 = 15;
/// How long a bootstrap master waits for its peers before asking again.
const WAITING_RETRY_SECS: u32 = 3;
/// How long a host waits for missing images before asking again.
const IMAGES_RETRY_SECS: u32 = 10;
/// Longest progress message kept.
const MAX_MESSAGE: usize = 4096;

/// Who sent the request: its address and the identity key its TLS client certificate proved.
fn caller(
    peer: Option<axum::Extension<PeerAddr>>,
    key: Option<axum::Extension<ClientKey>>,
) -> Caller {
    Caller {
        key: key.map(|k| k.0.0),
        ip: peer.map(|p| p.0.0.ip().to_string()),
    }
}

/// `POST /v1/enroll`: the caller must present an identity key.
pub async fn enroll(
    State(seed): State<Arc<Seed>>,
    peer: Option<axum::Extension<PeerAddr>>,
    key: Option<axum::Extension<ClientKey>>,
    JsonBody(request): JsonBody<EnrollRequest>,
) -> Result<Response, ApiFailure> {
    let caller = caller(peer, key);
    let result = enroll_inner(&seed, request, caller).await;
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
    caller: Caller,
) -> Result<(Response, &'static str), ApiFailure> {
    if let Some(waiting) = wait_for_images(seed).await? {
        return Ok((waiting, "waiting_images"));
    }
    let seed2 = seed.clone();
    let claimed = request.identity.clone();
    let caller2 = caller.clone();
    let enrollment = blocking("recording the enrollment", move || {
        apply::enroll(&*seed2.store, seed2.cluster(), &request, &caller2, now_ms())
            .map_err(|e| ApiFailure::internal("recording the enrollment", &e))
    })
    .await?;
    let (record, plan, joins_etcd) = match enrollment {
        Enrollment::Refused { code, message } => {
            if code == codes::IDENTITY_TAKEN {
                audit_taken(&caller, &format!("{claimed:?}"), &message);
            }
            if code == codes::VERSION_MISMATCH {
                seed.refusals
                    .note(&claimed.macs, caller.ip.clone(), &message, now_ms());
            }
            return Err(ApiFailure::new(code, message));
        }
        Enrollment::Pending { record } => {
            tracing::info!(host = %record.id, "pending approval");
            let message = "not let in yet: an operator must approve this host \
                           (launcher-seed hosts approve ID), or boot it with a join token";
            return Ok((pending(&record.id, PENDING_RETRY_SECS, message), "pending"));
        }
        Enrollment::Enrolled {
            record,
            plan,
            joins_etcd,
        } => {
            seed.refusals.forget(&claimed.macs);
            (record, plan, joins_etcd)
        }
    };
    match plan.map_err(plan_failure)? {
        PlanOutcome::Ready(plan) => {
            if joins_etcd {
                seed.membership
                    .add_learner(&record)
                    .await
                    .map_err(|e| learner_failure(&record.id, e))?;
            }
            tracing::info!(host = %record.id, hostname = %plan.hostname, role = %plan.role, "enrolled");
            let body = Json(EnrollResponse::Enrolled(plan));
            Ok(((StatusCode::OK, body).into_response(), "enrolled"))
        }
        PlanOutcome::Waiting(why) => Ok((pending(&record.id, WAITING_RETRY_SECS, &why), "waiting")),
    }
}

/// While the seed's registry lacks an image the cluster pulls, no host is let in to install:
/// it would stall halfway, at a pull. The answer names the images; nothing is recorded, and
/// the host asks again. An import releases every host at its next request.
async fn wait_for_images(seed: &Arc<Seed>) -> Result<Option<Response>, ApiFailure> {
    let Some(missing) = seed.missing_images.clone() else {
        return Ok(None);
    };
    let missing = blocking("reading the registry's catalog", move || {
        missing().map_err(|e| ApiFailure::internal("reading the registry's catalog", &e))
    })
    .await?;
    if missing.is_empty() {
        return Ok(None);
    }
    let message = format!(
        "the seed's registry lacks {} image{} this cluster pulls: {}; no host installs until \
         they are imported (launcher-seed images import)",
        missing.len(),
        if missing.len() == 1 { "" } else { "s" },
        missing.join(", ")
    );
    let body = EnrollResponse::Waiting {
        retry_after_secs: IMAGES_RETRY_SECS,
        message,
        missing_images: missing,
    };
    Ok(Some((StatusCode::ACCEPTED, Json(body)).into_response()))
}

fn pending(host_id: &str, retry_after_secs: u32, message: &str) -> Response {
    let body = EnrollResponse::Pending {
        host_id: host_id.to_string(),
        retry_after_secs,
        message: message.to_string(),
    };
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// A CSR the seed cannot sign is the host's fault; anything else is the seed's.
fn plan_failure(err: BuildError) -> ApiFailure {
    use cluster::plan::PlanError;
    match &err {
        BuildError::Plan(PlanError::UnknownCsr { .. })
        | BuildError::Plan(PlanError::Pki(cluster::pki::PkiError::BadCsr { .. })) => {
            ApiFailure::new(codes::BAD_CSR, err.to_string())
        }
        _ => ApiFailure::internal("making the plan", &err),
    }
}

/// The master was let in, and must come back once etcd takes it as a learner.
fn learner_failure(host: &str, err: ChangeError) -> ApiFailure {
    match err {
        ChangeError::NoEndpoints => {
            tracing::warn!(%host, error = %err, "no etcd membership client");
            ApiFailure::new(
                codes::BUSY,
                "this master joins a running etcd, and the seed cannot reach etcd yet; retry",
            )
        }
        ChangeError::Etcd(_) => {
            tracing::warn!(%host, error = %err, "adding the etcd learner failed");
            ApiFailure::new(codes::BUSY, "etcd did not take the new member yet; retry")
        }
        ChangeError::NoAddress { .. } => {
            ApiFailure::new(codes::BAD_REQUEST, "a master needs an IP address")
        }
        ChangeError::HostGone { .. } => {
            ApiFailure::new(codes::NOT_FOUND, "the host was removed meanwhile")
        }
        ChangeError::Unassigned { .. }
        | ChangeError::BadMemberId { .. }
        | ChangeError::Store(_)
        | ChangeError::Task(_) => ApiFailure::internal("adding the etcd learner", &err),
    }
}

/// A request that claimed a host bound to another key: logged for the operator at `warn`,
/// under the `audit` target.
fn audit_taken(caller: &Caller, claimed: &str, message: &str) {
    let key = caller.key.map(|k| k.to_string()).unwrap_or_default();
    let peer = caller.ip.as_deref().unwrap_or("-");
    tracing::warn!(target: "audit", %peer, %key, claimed, "refused: {message}");
}

/// `POST /v1/hosts/{id}/progress`: only from the key host `id` is bound to.
pub async fn progress(
    State(seed): State<Arc<Seed>>,
    Path(id): Path<String>,
    peer: Option<axum::Extension<PeerAddr>>,
    key: Option<axum::Extension<ClientKey>>,
    JsonBody(report): JsonBody<ProgressReport>,
) -> Result<StatusCode, ApiFailure> {
    if report.message.len() > MAX_MESSAGE {
        return Err(ApiFailure::new(
            codes::BAD_REQUEST,
            format!("progress messages are limited to {MAX_MESSAGE} bytes"),
        ));
    }
    let caller = caller(peer, key);
    let Some(client_key) = caller.key else {
        return Err(ApiFailure::new(
            codes::IDENTITY_REQUIRED,
            "progress reports need the host's identity key, presented as its TLS client \
             certificate",
        ));
    };
    let id2 = id.clone();
    let outcome = blocking("recording progress", move || {
        progress::record(&*seed.store, &id2, &client_key, &report, now_ms())
            .map_err(|e| ApiFailure::internal("recording progress", &e))
    })
    .await?;
    match outcome {
        Reported::Recorded => Ok(StatusCode::NO_CONTENT),
        Reported::NoHost => Err(ApiFailure::new(codes::NOT_FOUND, "no host with this id")),
        Reported::OtherKey => {
            let message = format!("host {id} is bound to another identity key");
            audit_taken(&caller, &format!("progress of {id}"), &message);
            Err(ApiFailure::new(codes::IDENTITY_TAKEN, message))
        }
    }
}

/// Longest a host's command poll is held open (`wait=`), within the seed's idle deadline.
pub const MAX_POLL_WAIT_SECS: u64 = 30;

/// `wait=S` of `GET /v1/hosts/{id}/commands`, the only parameter it takes: 0 by default.
fn poll_wait(query: Option<&str>) -> Result<std::time::Duration, ApiFailure> {
    let mut wait = 0;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let parsed = match pair.split_once('=') {
            Some(("wait", value)) => value.parse::<u64>().ok(),
            _ => None,
        };
        wait = parsed.filter(|w| *w <= MAX_POLL_WAIT_SECS).ok_or_else(|| {
            ApiFailure::new(
                codes::BAD_REQUEST,
                format!(
                    "{:?}: commands are asked for with wait=SECONDS, at most {MAX_POLL_WAIT_SECS}",
                    cluster::text::printable(pair)
                ),
            )
        })?;
    }
    Ok(std::time::Duration::from_secs(wait))
}

fn command_failure(caller: &Caller, what: &str, err: commands::CommandError) -> ApiFailure {
    use commands::CommandError as E;
    let message = err.to_string();
    match err {
        E::NoHost(_) | E::NoCommand { .. } => ApiFailure::new(codes::NOT_FOUND, message),
        E::OtherKey(_) => {
            audit_taken(caller, what, &message);
            ApiFailure::new(codes::IDENTITY_TAKEN, message)
        }
        E::TooMany { .. } | E::Answered { .. } => ApiFailure::new(codes::COMMAND_REFUSED, message),
        E::Store(e) => ApiFailure::internal(what, &e),
    }
}

fn identity_required(caller: &Caller, what: &str) -> Result<HostKeyId, ApiFailure> {
    caller.key.ok_or_else(|| {
        ApiFailure::new(
            codes::IDENTITY_REQUIRED,
            format!(
                "{what} needs the host's identity key, presented as its TLS client certificate"
            ),
        )
    })
}

/// `GET /v1/hosts/{id}/commands[?wait=S]`: the commands host `id` has not answered, only for
/// the key it is bound to. With nothing to hand out the answer is held up to `wait` seconds
/// and given as soon as a command is queued.
pub async fn commands(
    State(seed): State<Arc<Seed>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    peer: Option<axum::Extension<PeerAddr>>,
    key: Option<axum::Extension<ClientKey>>,
) -> Result<Json<CommandBatch>, ApiFailure> {
    let wait = poll_wait(query.as_deref())?;
    let caller = caller(peer, key);
    let client_key = identity_required(&caller, "asking for commands")?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Listening before looking: a command queued in between still wakes this poll.
        let queued = seed.commands_queued.notified();
        tokio::pin!(queued);
        queued.as_mut().enable();
        let (seed2, id2) = (seed.clone(), id.clone());
        let taken = blocking("reading commands", move || {
            Ok(commands::take(&*seed2.store, &id2, &client_key, now_ms()))
        })
        .await?
        .map_err(|e| command_failure(&caller, &format!("commands of {id}"), e))?;
        if !taken.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(CommandBatch { commands: taken }));
        }
        tokio::select! {
            _ = &mut queued => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// `POST /v1/hosts/{id}/commands/{command}`: what the command came to, only from the key host
/// `id` is bound to.
pub async fn answer_command(
    State(seed): State<Arc<Seed>>,
    Path((id, command)): Path<(String, String)>,
    peer: Option<axum::Extension<PeerAddr>>,
    key: Option<axum::Extension<ClientKey>>,
    JsonBody(outcome): JsonBody<CommandOutcome>,
) -> Result<StatusCode, ApiFailure> {
    if outcome.message.len() > commands::MAX_MESSAGE {
        return Err(ApiFailure::new(
            codes::BAD_REQUEST,
            format!(
                "command outcomes are limited to {} bytes",
                commands::MAX_MESSAGE
            ),
        ));
    }
    let caller = caller(peer, key);
    let client_key = identity_required(&caller, "answering a command")?;
    let id2 = id.clone();
    blocking("recording a command's outcome", move || {
        Ok(commands::answer(
            &*seed.store,
            &id2,
            &client_key,
            &command,
            &outcome,
            now_ms(),
        ))
    })
    .await?
    .map_err(|e| command_failure(&caller, &format!("a command of {id}"), e))?;
    Ok(StatusCode::NO_CONTENT)
}
