//! The seed's HTTP API: `fn app(seed) -> Router`, its one error shape and its body limit.
//!
//! Routes (HTTPS):
//! - `GET /healthz`, `GET /metrics` (Prometheus text).
//! - `POST /v1/enroll` (`EnrollRequest` → 200 `Enrolled` plan, or 202 `Pending`; 429
//!   `rate_limited` with `Retry-After` past the seed's per-source limit), and
//!   `POST /v1/hosts/{id}/progress` (`ProgressReport` → 204): host routes, with the host's
//!   identity key as the TLS client certificate ([`ClientKey`]); a progress report only from
//!   the key its host is bound to.
//! - `/v1/admin/…` with `Authorization: Bearer <state-dir>/admin.token`: `GET hosts` (the
//!   status view), `GET jobs/{id}`; `POST hosts/{id}/approve`, `DELETE hosts/{id}` answer
//!   202 `{"job": id}` at once; `POST tokens {"ttl_secs", "role"?}` answers 201 with the token
//!   (stored only as its hash); `POST hosts/{id}/reset` unbinds a host's identity key;
//!   `POST etcd-client {"ttl_secs"?, "holder"?}` answers 200 with the etcd CA and a fresh
//!   client certificate and key (a day by default, at most seven), stored nowhere.
//!   `POST clusters` is refused: a seed serves the one cluster of its `--cluster` file.
//! - `GET /boot.ipxe`, `GET /ipxe?mac=&uuid=&serial=`, `GET /boot/{vmlinuz,initrd.img}` (also
//!   on the plain HTTP listener, see [`plain_app`]), and `/v2/` (the image registry, mounted by
//!   `serve`).
//!
//! Host routes take only a host's identity key; admin routes take only the admin bearer token,
//! so neither kind reaches the other. Every error is `{"code","message"}` with a code of `api::codes`.
//! Routes translate requests for the services the seed holds (enrollment, membership, jobs)
//! and map their errors to that shape; they decide nothing themselves.

mod admin;
mod boot;
mod hosts;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cluster::api::{self, ApiError, codes};
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::limits::body_timed_out;
use crate::seed::Seed;

/// Builds the router of every route the seed serves over HTTPS.
pub fn app(seed: Arc<Seed>) -> Router {
    let admin = admin::routes(seed.clone());
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route(
            "/v1/enroll",
            post(hosts::enroll)
                .route_layer(middleware::from_fn_with_state(seed.clone(), limit_enroll)),
        )
        .route("/v1/hosts/{id}/progress", post(hosts::progress))
        .route("/v1/hosts/{id}/commands", get(hosts::commands))
        .route(
            "/v1/hosts/{id}/commands/{command}",
            post(hosts::answer_command),
        )
        .nest("/v1/admin", admin)
        .merge(boot::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(seed.clone(), observe))
        .with_state(seed)
}

/// The routes served without TLS, for machines and tools that cannot pin the seed's CA:
/// health and network boot. Enrollment and admin routes are never among them.
pub fn plain_app(seed: Arc<Seed>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .merge(boot::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(seed.clone(), observe))
        .with_state(seed)
}

/// The address a request came from, put in its extensions by the server for each connection.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The scheme the machine reached the seed with, for absolute URLs in boot scripts; put in
/// its extensions by the server for each connection.
#[derive(Debug, Clone, Copy)]
pub struct Scheme(pub &'static str);

/// The identity key the client proved it holds in its TLS handshake (its client certificate),
/// set by the server for HTTPS connections that presented one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientKey(pub cluster::pki::HostKeyId);

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(seed): State<Arc<Seed>>) -> Response {
    let mut extra = missing_images_metric(&seed).await;
    if let Some(stats) = &seed.ntp_stats {
        extra.push_str(&stats.render_prometheus());
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        seed.metrics.render(&extra),
    )
        .into_response()
}

/// The images the cluster pulls that the registry lacks, when enrollment waits on them.
async fn missing_images_metric(seed: &Arc<Seed>) -> String {
    let Some(missing) = seed.missing_images.clone() else {
        return String::new();
    };
    let Ok(Ok(missing)) = tokio::task::spawn_blocking(move || missing()).await else {
        return String::new();
    };
    format!(
        "# HELP launcher_seed_images_missing Images the cluster pulls that the seed's registry lacks; hosts wait to enroll while any is.\n\
         # TYPE launcher_seed_images_missing gauge\n\
         launcher_seed_images_missing {}\n",
        missing.len()
    )
}

async fn not_found() -> ApiFailure {
    ApiFailure::new(codes::NOT_FOUND, "no such route")
}

async fn method_not_allowed() -> ApiFailure {
    ApiFailure::new(codes::BAD_REQUEST, "this route does not take that method")
        .with_status(StatusCode::METHOD_NOT_ALLOWED)
}

/// A span per request, the latency histogram and the error counter.
async fn observe(State(seed): State<Arc<Seed>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
    );
    let response = next.run(request).instrument(span.clone()).await;
    let took = started.elapsed();
    seed.metrics.latency(took);
    if let Some(code) = response.extensions().get::<ErrorCode>() {
        seed.metrics.error(code.0);
    }
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            took_ms = took.as_millis() as u64,
            "answered"
        );
    });
    response
}

/// Answers `rate_limited` with `Retry-After` to a source past the seed's enrollment limit.
async fn limit_enroll(State(seed): State<Arc<Seed>>, request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<PeerAddr>().map(|p| p.0.ip());
    if let (Some(limit), Some(peer)) = (&seed.enroll_limit, peer)
        && let Err(wait) = limit.check(peer, Instant::now())
    {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        seed.metrics.enrollment(codes::RATE_LIMITED);
        let message = format!("too many enrollments from {peer}; ask again in {secs} s");
        return rate_limited(message, secs);
    }
    next.run(request).await
}

/// `429 rate_limited` with `message`, and `Retry-After: secs`.
pub fn rate_limited(message: String, secs: u64) -> Response {
    let mut response = ApiFailure::new(codes::RATE_LIMITED, message).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    response
}

/// The error code of a response, for the metrics.
#[derive(Debug, Clone, Copy)]
struct ErrorCode(&'static str);

/// An error answer: `{"code","message"}` with a stable code. Detail goes to the log, never here.
#[derive(Debug)]
pub struct ApiFailure {
    pub code: &'static str,
    pub message: String,
    pub status: StatusCode,
}

impl ApiFailure {
    pub fn new(code: &'static str, message: impl Into<String>) -> ApiFailure {
        ApiFailure {
            code,
            message: message.into(),
            status: status_of(code),
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> ApiFailure {
        self.status = status;
        self
    }

    /// An internal failure: logged in full, answered without detail.
    pub fn internal(context: &str, err: &dyn std::fmt::Display) -> ApiFailure {
        tracing::error!(error = %err, "{context}");
        ApiFailure::new(
            codes::INTERNAL,
            format!("the seed failed {context}; see its log"),
        )
    }
}

/// The HTTP status of each error code.
pub fn status_of(code: &str) -> StatusCode {
    match code {
        codes::BAD_REQUEST | codes::BAD_CSR => StatusCode::BAD_REQUEST,
        codes::BODY_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
        codes::UNAUTHORIZED
        | codes::TOKEN_INVALID
        | codes::TOKEN_EXPIRED
        | codes::IDENTITY_REQUIRED => StatusCode::UNAUTHORIZED,
        codes::FORBIDDEN | codes::IDENTITY_TAKEN | codes::HOST_REMOVED => StatusCode::FORBIDDEN,
        codes::RATE_LIMITED => StatusCode::TOO_MANY_REQUESTS,
        codes::NOT_FOUND => StatusCode::NOT_FOUND,
        codes::TOKEN_USED
        | codes::IDENTITY_CONFLICT
        | codes::NO_CAPACITY
        | codes::VERSION_MISMATCH
        | crate::jobs::refusal::JOB_STATE
        | crate::jobs::refusal::CHANGE_IN_PROGRESS
        | codes::COMMAND_REFUSED
        | crate::jobs::refusal::TOO_FEW_MASTERS => StatusCode::CONFLICT,
        codes::BUSY => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "error answer");
        } else {
            tracing::info!(code = self.code, message = %self.message, "refused");
        }
        let body = ApiError {
            code: self.code.to_string(),
            message: self.message,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

/// How much of a declared-too-large body is read and dropped before the refusal is sent.
const DRAIN_BYTES: usize = 4 * api::MAX_REQUEST_BYTES;

/// A JSON request body, at most [`api::MAX_REQUEST_BYTES`], refused with `body_too_large` or
/// `bad_request` in the one error shape.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiFailure;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let too_large = || {
            ApiFailure::new(
                codes::BODY_TOO_LARGE,
                format!(
                    "request bodies are limited to {} bytes",
                    api::MAX_REQUEST_BYTES
                ),
            )
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let body: Body = request.into_body();
        if let Some(n) = declared.filter(|&n| n > api::MAX_REQUEST_BYTES) {
            // A client still writing its body when the connection closes sees a broken pipe,
            // not the answer: a body up to DRAIN_BYTES is read and dropped (under the same body
            // timeouts) so the sender learns why; anything larger is cut off unread.
            if n <= DRAIN_BYTES {
                let _ = axum::body::to_bytes(body, DRAIN_BYTES).await;
            }
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(body, api::MAX_REQUEST_BYTES)
            .await
            .map_err(|e| match body_timed_out(&e) {
                Some(late) => ApiFailure::new(codes::BAD_REQUEST, late.to_string())
                    .with_status(StatusCode::REQUEST_TIMEOUT),
                None => too_large(),
            })?;
        let value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiFailure::new(
                codes::BAD_REQUEST,
                format!("the request body is not valid: {e}"),
            )
        })?;
        Ok(JsonBody(value))
    }
}

/// Runs blocking store work off the async threads.
pub async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, ApiFailure> + Send + 'static,
) -> Result<T, ApiFailure> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(err) => Err(ApiFailure::internal(what, &err)),
    }
}
