//! `/healthz`, `/livez` and `/readyz` over HTTPS on `--bind-address`:`--secure-port`, with the
//! certificate of `--tls-cert-file`, or a self-signed one made at start as the real components
//! make when none is given. kubeadm's probes ask these paths, which the real components'
//! `--authorization-always-allow-paths` let through without a credential.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tower::ServiceExt;

/// The health routes; every one answers `ok` while the process runs.
pub fn app() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn from_files(cert: &Path, key: &Path) -> anyhow::Result<Identity> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let certs = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading {}", cert.display()))?;
    let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .with_context(|| format!("reading {}", key.display()))?
        .with_context(|| format!("no private key in {}", key.display()))?;
    Ok((certs, key))
}

/// A self-signed certificate for `localhost`, 127.0.0.1 and the bind address.
fn self_signed(bind: IpAddr) -> anyhow::Result<Identity> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    if !bind.is_unspecified() && !bind.is_loopback() {
        names.push(bind.to_string());
    }
    let made =
        rcgen::generate_simple_self_signed(names).context("making a self-signed certificate")?;
    let key = PrivatePkcs8KeyDer::from(made.key_pair.serialize_der());
    Ok((vec![made.cert.der().clone()], key.into()))
}

/// The TLS configuration of the health server.
pub fn tls(
    files: Option<&(std::path::PathBuf, std::path::PathBuf)>,
    bind: IpAddr,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (certs, key) = match files {
        Some((cert, key)) => from_files(cert, key)?,
        None => self_signed(bind)?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("loading the serving certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Binds the health port now, so that a port in use is an error at start.
pub fn bind(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?;
    listener
        .set_nonblocking(true)
        .with_context(|| format!("listening on {addr}"))?;
    Ok(listener)
}

/// Serves the health routes until the process ends.
pub async fn serve(listener: std::net::TcpListener, config: Arc<rustls::ServerConfig>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(err) => {
            tracing::error!(error = %err, "serving health");
            return;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let app = app();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = tower::service_fn(move |request| app.clone().oneshot(request));
            let service = hyper_util::service::TowerToHyperService::new(service);
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;

    #[tokio::test]
    async fn every_health_path_answers_ok() {
        for path in ["/healthz", "/livez", "/readyz"] {
            let request = Request::get(path).body(Body::empty()).unwrap();
            let response = app().oneshot(request).await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
        }
        let request = Request::get("/metrics").body(Body::empty()).unwrap();
        assert_eq!(app().oneshot(request).await.unwrap().status(), 404);
    }

    #[test]
    fn a_self_signed_certificate_loads() {
        tls(None, "10.0.0.5".parse().unwrap()).unwrap();
    }
}
