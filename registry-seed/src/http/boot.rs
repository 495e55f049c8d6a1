//! Network boot routes: `/boot.ipxe`, the per-machine `/ipxe` script (the seed's scripts from
//! [`crate::boot`]), and `/boot/vmlinuz` and `/boot/initrd.img` with `Range`
//! ([`crate::range::respond`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cluster::api::{HostIdentity, codes};
use serde::Deserialize;

use super::{ApiFailure, Scheme, blocking};
use crate::boot::{FILES, boot_script, chain_script, unknown_script};
use crate::enroll::apply::is_known;
use crate::enroll::decide::identity_keys;
use crate::range::{self, RangeError};
use crate::seed::Seed;

pub fn routes() -> Router<Arc<Seed>> {
    Router::new()
        .route("/boot.ipxe", get(chain))
        .route("/ipxe", get(machine))
        .route("/boot/{file}", get(file))
}

/// The seed as the machine reached it, for absolute URLs in scripts: the connection's scheme,
/// and the authority of the request's URI (where HTTP/2 puts `:authority`), else the `Host`
/// header (HTTP/1.1).
fn base_url(uri: &Uri, headers: &HeaderMap, scheme: Option<axum::Extension<Scheme>>) -> String {
    let scheme = scheme.map_or("http", |s| s.0.0);
    let plain = |h: &&str| {
        !h.is_empty()
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
    };
    let host = uri
        .authority()
        .map(|a| a.as_str())
        .filter(plain)
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(plain)
        })
        .unwrap_or("localhost");
    format!("{scheme}://{host}")
}

fn ipxe(text: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

async fn chain(uri: Uri, headers: HeaderMap, scheme: Option<axum::Extension<Scheme>>) -> Response {
    let base = base_url(&uri, &headers, scheme);
    tracing::info!(%base, "boot script chain asked for");
    ipxe(chain_script(&base))
}

#[derive(Debug, Deserialize)]
struct MachineQuery {
    #[serde(default)]
    mac: String,
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    serial: Option<String>,
}

async fn machine(
    State(seed): State<Arc<Seed>>,
    uri: Uri,
    headers: HeaderMap,
    scheme: Option<axum::Extension<Scheme>>,
    Query(query): Query<MachineQuery>,
) -> Result<Response, ApiFailure> {
    let base = base_url(&uri, &headers, scheme);
    let Some(config) = seed.boot.clone() else {
        return Err(ApiFailure::new(
            codes::NOT_FOUND,
            "this seed serves no boot files",
        ));
    };
    let mac = query.mac.replace('-', ":").to_ascii_lowercase();
    let identity = HostIdentity {
        macs: vec![mac.clone()],
        boot_mac: None,
        product_uuid: query.uuid.filter(|u| !u.is_empty()),
        serial: query.serial.filter(|s| !s.is_empty()),
    };
    let Ok(keys) = identity_keys(&identity) else {
        return Err(ApiFailure::new(
            codes::BAD_REQUEST,
            "mac is not a MAC address",
        ));
    };
    let seed2 = seed.clone();
    let known = blocking("looking the machine up", move || {
        is_known(&*seed2.store, &seed2.facts, &keys)
            .map_err(|e| ApiFailure::internal("looking the machine up", &e))
    })
    .await?;
    tracing::info!(%base, %mac, known, "boot script asked for");
    Ok(ipxe(if known {
        boot_script(&base, &config)
    } else {
        unknown_script(&base, &mac)
    }))
}

async fn file(
    State(seed): State<Arc<Seed>>,
    Path(name): Path<String>,
    method: Method,
    headers: HeaderMap,
    scheme: Option<axum::Extension<Scheme>>,
    source: Option<axum::Extension<range::Source>>,
) -> Result<Response, ApiFailure> {
    let dir = seed.boot.as_ref().and_then(|b| b.dir.clone());
    let (Some(dir), true) = (dir, FILES.contains(&name.as_str())) else {
        return Err(ApiFailure::new(codes::NOT_FOUND, "no such boot file"));
    };
    let file = tokio::fs::File::open(dir.join(&name))
        .await
        .map_err(|_| ApiFailure::new(codes::NOT_FOUND, "no such boot file"))?;
    let scheme = scheme.map_or("http", |s| s.0.0);
    tracing::info!(file = %name, scheme, "boot file asked for");
    let source = source.map(|s| s.0.0);
    match range::respond(file, &headers, method == Method::HEAD, source).await {
        Ok(response) => Ok(response),
        Err(err @ RangeError::Busy { .. }) => Ok(super::rate_limited(err.to_string(), 1)),
        Err(RangeError::Unsatisfiable { len }) => {
            let mut res = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            res.headers_mut()
                .insert(header::CONTENT_RANGE, RangeError::content_range(len));
            Ok(res)
        }
        Err(err @ RangeError::Io(_)) => Err(ApiFailure::internal("reading a boot file", &err)),
    }
}
