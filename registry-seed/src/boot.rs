//! Network boot: `/boot.ipxe` chains to a per-machine script (`/ipxe?mac=…&uuid=…&serial=…`)
//! that loads the kernel and initrd from the seed with the seed's address, CA pin and NTP
//! address on the kernel command line; `/boot/vmlinuz` and `/boot/initrd.img` with `Range`.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cluster::api::{HostIdentity, codes};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::enroll::decide::{entry_keys, identity_keys};
use crate::http::{ApiFailure, blocking};
use crate::range::{RangeAnswer, parse_range};
use crate::seed::Seed;
use crate::store::{Table, read_with};

/// What the per-machine script puts on the kernel command line, and where the files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// Directory holding `vmlinuz` and `initrd.img`.
    pub dir: Option<PathBuf>,
    /// `launcher.seed=`: the seed's HTTPS URL.
    pub seed_url: String,
    /// `launcher.pin=`: the seed CA's SPKI pin.
    pub pin: String,
    /// `launcher.ntp=`: the seed's NTP address, when it serves NTP.
    pub ntp: Option<String>,
    /// More kernel arguments (`console=ttyS0`, …).
    pub extra_args: Vec<String>,
}

/// The files a machine may fetch.
pub const FILES: [&str; 2] = ["vmlinuz", "initrd.img"];

/// Scheme and host the machine reached the seed at, for absolute URLs in scripts.
#[derive(Debug, Clone, Copy)]
pub struct Scheme(pub &'static str);

pub fn routes() -> Router<Arc<Seed>> {
    Router::new()
        .route("/boot.ipxe", get(chain))
        .route("/ipxe", get(machine))
        .route("/boot/{file}", get(file))
}

/// `#!ipxe` script that asks for this machine's own script.
pub fn chain_script(base: &str) -> String {
    format!("#!ipxe\nchain {base}/ipxe?mac=${{mac:hexhyp}}&uuid=${{uuid}}&serial=${{serial}}\n")
}

/// `#!ipxe` script that boots the seed's kernel and initrd.
pub fn boot_script(base: &str, config: &BootConfig) -> String {
    let mut args = vec![
        "initrd=initrd.img".to_string(),
        format!("launcher.seed={}", config.seed_url),
        format!("launcher.pin={}", config.pin),
    ];
    args.extend(config.ntp.iter().map(|ntp| format!("launcher.ntp={ntp}")));
    args.extend(config.extra_args.iter().cloned());
    format!(
        "#!ipxe\nkernel {base}/boot/vmlinuz {}\ninitrd {base}/boot/initrd.img\nboot\n",
        args.join(" ")
    )
}

/// `#!ipxe` script for a machine the seed does not know: say so, wait, ask again.
pub fn unknown_script(base: &str, mac: &str) -> String {
    format!(
        "#!ipxe\necho launcher: this machine ({mac}) is not in the seed's inventory; add it, \
         then it boots\nsleep 30\nchain {base}/boot.ipxe\n"
    )
}

fn base_url(headers: &HeaderMap, scheme: Option<axum::Extension<Scheme>>) -> String {
    let scheme = scheme.map_or("http", |s| s.0.0);
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("localhost");
    format!("{scheme}://{host}")
}

fn ipxe(text: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

async fn chain(headers: HeaderMap, scheme: Option<axum::Extension<Scheme>>) -> Response {
    ipxe(chain_script(&base_url(&headers, scheme)))
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
    headers: HeaderMap,
    scheme: Option<axum::Extension<Scheme>>,
    Query(query): Query<MachineQuery>,
) -> Result<Response, ApiFailure> {
    let base = base_url(&headers, scheme);
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
    let in_inventory = seed
        .facts
        .inventory
        .iter()
        .any(|e| entry_keys(e).iter().any(|k| keys.contains(k)));
    let known = in_inventory || {
        let seed2 = seed.clone();
        blocking("looking the machine up", move || {
            read_with(&*seed2.store, |tx| {
                for key in &keys {
                    if tx.get(Table::Identities, key)?.is_some() {
                        return Ok(true);
                    }
                }
                Ok(false)
            })
            .map_err(|e| ApiFailure::internal("looking the machine up", &e))
        })
        .await?
    };
    tracing::info!(%mac, known, "boot script asked for");
    Ok(ipxe(if known {
        boot_script(&base, &config)
    } else {
        unknown_script(&base, &mac)
    }))
}

async fn file(
    State(seed): State<Arc<Seed>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiFailure> {
    let dir = seed.boot.as_ref().and_then(|b| b.dir.clone());
    let (Some(dir), true) = (dir, FILES.contains(&name.as_str())) else {
        return Err(ApiFailure::new(codes::NOT_FOUND, "no such boot file"));
    };
    let path = dir.join(&name);
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| ApiFailure::new(codes::NOT_FOUND, "no such boot file"))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| ApiFailure::internal("reading a boot file", &e))?
        .len();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map_or(RangeAnswer::Full, |r| parse_range(r, len));
    let (status, start, count) = match range {
        RangeAnswer::Full => (StatusCode::OK, 0, len),
        RangeAnswer::Partial(s, e) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        RangeAnswer::Unsatisfiable => {
            let mut res = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                res.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(res);
        }
    };
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| ApiFailure::internal("reading a boot file", &e))?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(count), 256 * 1024);
    let mut res = Response::new(Body::from_stream(stream));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", start + count - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_chain_per_machine_and_carry_the_seed_on_the_command_line() {
        assert_eq!(
            chain_script("http://10.77.0.1:8080"),
            "#!ipxe\nchain http://10.77.0.1:8080/ipxe?mac=${mac:hexhyp}&uuid=${uuid}&serial=${serial}\n"
        );
        let config = BootConfig {
            dir: None,
            seed_url: "https://10.77.0.1:8443".into(),
            pin: "sha256:ab".into(),
            ntp: Some("10.77.0.1:123".into()),
            extra_args: vec!["console=ttyS0".into()],
        };
        let script = boot_script("http://10.77.0.1:8080", &config);
        assert_eq!(
            script,
            "#!ipxe\nkernel http://10.77.0.1:8080/boot/vmlinuz initrd=initrd.img \
             launcher.seed=https://10.77.0.1:8443 launcher.pin=sha256:ab \
             launcher.ntp=10.77.0.1:123 console=ttyS0\n\
             initrd http://10.77.0.1:8080/boot/initrd.img\nboot\n"
        );
    }
}
