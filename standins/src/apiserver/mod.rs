//! `kube-apiserver-standin`: a stand-in for kube-apiserver (which cannot be downloaded here),
//! run with exactly the flags of kubeadm's kube-apiserver manifest. It refuses a flag
//! kube-apiserver does not have, serves HTTPS with client certificates checked against
//! `--client-ca-file`, keeps Nodes, node Leases and ConfigMaps in the external etcd of
//! `--etcd-servers`, and authorizes as kubeadm's defaults do. It is not kube-apiserver: no watch, no other resources,
//! no admission.
//!
//! `/version` answers the `gitVersion` in `KUBE_APISERVER_STANDIN_VERSION` (default
//! [`DEFAULT_VERSION`]): an environment variable, since every `--` flag must be one
//! kube-apiserver has.

pub mod auth;
pub mod discovery;
pub mod etcd;
pub mod flags;
pub mod http;
pub mod objects;
pub mod serve;
pub mod table;

use anyhow::Context;
use std::net::SocketAddr;

/// The variable naming the Kubernetes version the stand-in reports.
pub const VERSION_ENV: &str = "KUBE_APISERVER_STANDIN_VERSION";
pub const DEFAULT_VERSION: &str = "v1.33.0";

/// `--help`'s text.
pub const HELP: &str = "kube-apiserver-standin: a stand-in for kube-apiserver (not kube-apiserver).

Takes kube-apiserver's flags (--flag=value) and refuses any it does not have. Acts on
--bind-address, --secure-port, --tls-cert-file, --tls-private-key-file, --client-ca-file,
--etcd-servers, --etcd-prefix, --etcd-cafile, --etcd-certfile and --etcd-keyfile;
accepts the rest.
Serves /livez, /readyz, /healthz, /version, discovery, Nodes, Leases in kube-node-lease and
kube-system, and ConfigMaps in the system namespaces.
KUBE_APISERVER_STANDIN_VERSION sets the version /version reports (default v1.33.0).
";

/// The version `/version` reports.
pub fn version() -> String {
    std::env::var(VERSION_ENV).unwrap_or_else(|_| DEFAULT_VERSION.to_owned())
}

/// Serves until the process is stopped.
pub async fn run(options: flags::Options) -> anyhow::Result<()> {
    let (config, client_ca) = serve::tls(
        &options.tls_cert_file,
        &options.tls_private_key_file,
        &options.client_ca_file,
    )?;
    let cert_key = options
        .etcd_certfile
        .as_deref()
        .zip(options.etcd_keyfile.as_deref());
    let etcd = etcd::Etcd::new(
        options.etcd_servers.clone(),
        &options.etcd_prefix,
        options.etcd_cafile.as_deref(),
        cert_key,
    )?;
    let app = http::app(http::Api {
        etcd,
        version: version(),
    });
    let addr = SocketAddr::new(options.bind_address, options.secure_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    tracing::info!(%addr, "serving securely");
    serve::serve(listener, config, client_ca, app).await;
    Ok(())
}
