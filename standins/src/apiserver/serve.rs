//! HTTPS on `--bind-address`:`--secure-port`: the server certificate of `--tls-cert-file`, and
//! every client asked for a certificate, which is checked against `--client-ca-file` after the
//! handshake (as kube-apiserver does), so a stranger's certificate gets a 401, not a failed
//! handshake.

use super::auth::{Caller, ClientCa};
use anyhow::Context;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::DigitallySignedStruct;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;
use tower::ServiceExt;

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The TLS configuration and the client CA check, from the flags' files.
pub fn tls(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, ClientCa)> {
    let certs = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading {}", cert.display()))?;
    let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .with_context(|| format!("reading {}", key.display()))?
        .with_context(|| format!("no private key in {}", key.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut read(client_ca)?.as_slice()) {
        let ca = ca.with_context(|| format!("reading {}", client_ca.display()))?;
        roots
            .add(ca)
            .with_context(|| format!("loading {}", client_ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .context("building the client certificate check")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .with_client_cert_verifier(Arc::new(AnyClientCert { provider }))
        .with_single_cert(certs, key)
        .context("loading the server certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), ClientCa::new(verifier)))
}

/// Lets any certificate through the handshake (the client must still hold its key); whose it
/// is, is decided per request by [`ClientCa`].
#[derive(Debug)]
struct AnyClientCert {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Serves `app` on `listener` until the process ends.
pub async fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    client_ca: ClientCa,
    app: Router,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!(error = %err, "accepting a connection");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, client_ca, app) = (acceptor.clone(), client_ca.clone(), app.clone());
        tokio::spawn(async move { connection(acceptor, tcp, peer, client_ca, app).await });
    }
}

async fn connection(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    client_ca: ClientCa,
    app: Router,
) {
    let stream = match acceptor.accept(tcp).await {
        Ok(stream) => stream,
        Err(err) => {
            tracing::debug!(%peer, error = %err, "TLS handshake failed");
            return;
        }
    };
    let caller: Caller = client_ca.caller(stream.get_ref().1.peer_certificates());
    let service = tower::service_fn(move |mut request: axum::http::Request<Incoming>| {
        request.extensions_mut().insert(caller.clone());
        app.clone().oneshot(request)
    });
    let service = hyper_util::service::TowerToHyperService::new(service);
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(err) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
}
