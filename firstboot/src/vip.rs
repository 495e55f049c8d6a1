//! The control-plane VIP on a master: keepalived's configuration written from the plan on the
//! interface that carries the host's own address, keepalived started, and the health check
//! keepalived runs (`launcher-firstboot check-apiserver`).

use crate::fsutil::{self, FsError};
use crate::os::{Cmd, Os, OsError};
use cluster::api::Plan;
use cluster::vip::{self, Keepalived, VipError};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

mod member;
pub use member::{MemberCheck, MemberError, check_member};

#[derive(Debug, thiserror::Error)]
pub enum KeepalivedError {
    #[error("the plan gives this master the VIP but no IPv4 address of its own ({0:?})")]
    NoAddress(Option<String>),
    #[error("no interface carries {address}; `ip -o -4 addr show` lists:\n{listed}")]
    NoInterface { address: Ipv4Addr, listed: String },
    #[error("rendering keepalived's configuration")]
    Config(#[from] VipError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Durable(#[from] durable::Error),
    #[error(transparent)]
    Os(#[from] OsError),
}

/// The interface and prefix length that carry `address`, from `ip -o -4 addr show`, whose lines
/// read `2: eth0    inet 10.77.0.12/24 brd 10.77.0.255 scope global eth0\ …`.
pub fn interface_of(listed: &str, address: Ipv4Addr) -> Option<(String, u8)> {
    listed.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let name = words.nth(1)?;
        let (ip, prefix) = words.skip_while(|w| *w != "inet").nth(1)?.split_once('/')?;
        if ip.parse::<Ipv4Addr>().ok()? != address {
            return None;
        }
        // A veth or VLAN prints as `eth0@if5`; keepalived wants the name alone.
        let name = name.trim_end_matches(':');
        let name = name.split_once('@').map_or(name, |(n, _)| n);
        Some((name.to_string(), prefix.parse().ok()?))
    })
}

/// On a master whose plan has a VIP: writes keepalived's configuration (0600, the place for a
/// secret if one is ever added) for the caller to start [`vip::UNIT`]. Returns whether it did;
/// a plan without a VIP writes nothing.
pub fn configure(root: &Path, os: &dyn Os, plan: &Plan) -> Result<bool, KeepalivedError> {
    let Some(instructions) = &plan.vip else {
        return Ok(false);
    };
    let address: Ipv4Addr = plan
        .ip
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| KeepalivedError::NoAddress(plan.ip.clone()))?;
    let listed = os.run(&Cmd::new("ip", &["-o", "-4", "addr", "show"]))?;
    let (interface, prefix) =
        interface_of(&listed, address).ok_or_else(|| KeepalivedError::NoInterface {
            address,
            listed: listed.trim_end().to_string(),
        })?;
    let conf = vip::render(&Keepalived {
        vip: instructions,
        interface: &interface,
        address,
        prefix,
        check: vip::CHECK_COMMAND,
        member_check: vip::MEMBER_CHECK_COMMAND,
    })?;
    durable::write_atomic(
        &fsutil::under_root(root, vip::CONFIG_PATH)?,
        conf.as_bytes(),
        0o600,
    )?;
    tracing::info!(
        "keepalived will hold {} with the other masters on {interface}",
        instructions.address
    );
    Ok(true)
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("reading the cluster CA {0}")]
    Ca(String, #[source] std::io::Error),
    #[error("asking {url}: {message}")]
    Request { url: String, message: String },
    #[error("{url} answered {status}: {body}")]
    NotReady {
        url: String,
        status: u16,
        body: String,
    },
}

/// The name the API server's certificate always carries (kubeadm puts `kubernetes` among its
/// DNS names, and not 127.0.0.1 among its addresses).
const API_SERVER_NAME: &str = "kubernetes";
/// Under keepalived's 4 s script timeout.
const CHECK_TIMEOUT: Duration = Duration::from_millis(3500);

/// Whether the local API server is ready: `GET /readyz` on 127.0.0.1, its certificate checked
/// against the cluster CA under `root` for the name `kubernetes`. `/readyz` is readable without
/// a credential (kubeadm's `system:public-info-viewer`), and it fails when this API server lost
/// its etcd, so a removed master gives the VIP away too.
pub fn check_apiserver(root: &Path) -> Result<(), CheckError> {
    let port = cluster::plan::API_BIND_PORT;
    let url = format!("https://{API_SERVER_NAME}:{port}/readyz");
    let ca_path = root.join("etc/kubernetes/pki/ca.crt");
    let ca =
        std::fs::read(&ca_path).map_err(|e| CheckError::Ca(ca_path.display().to_string(), e))?;
    let fail = |message: String| CheckError::Request {
        url: url.clone(),
        message,
    };
    let ca = reqwest::Certificate::from_pem(&ca).map_err(|e| fail(e.to_string()))?;
    let client = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .resolve(API_SERVER_NAME, ([127, 0, 0, 1], port).into())
        .timeout(CHECK_TIMEOUT)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let resp = client.get(&url).send().map_err(|e| fail(e.to_string()))?;
    let status = resp.status();
    let body = resp.text().unwrap_or_default();
    if status.is_success() {
        return Ok(());
    }
    Err(CheckError::NotReady {
        url,
        status: status.as_u16(),
        body: cluster::text::printable(body.trim())
            .chars()
            .take(200)
            .collect(),
    })
}

#[cfg(test)]
pub(crate) mod tests;
