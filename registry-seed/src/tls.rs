//! The seed's own CA (made once, kept in the state directory), its server certificate and the
//! SPKI pin images carry.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use cluster::pki::{self, Ca, KeyAlgorithm};

use durable::write_atomic;

pub const CA_CERT_FILE: &str = "seed-ca.crt";
pub const CA_KEY_FILE: &str = "seed-ca.key";

/// The seed CA, kept as `seed-ca.crt` / `seed-ca.key` in the state directory.
#[derive(Debug)]
pub struct SeedCa {
    pub ca: Ca,
}

pub fn ca_cert_path(state_dir: &Path) -> PathBuf {
    state_dir.join(CA_CERT_FILE)
}

impl SeedCa {
    /// Loads the CA from `state_dir`, or makes it when neither file exists. A half-present CA
    /// is an error: the CA is never remade, since every image pins it.
    pub fn load_or_create(state_dir: &Path) -> anyhow::Result<SeedCa> {
        let cert_path = state_dir.join(CA_CERT_FILE);
        let key_path = state_dir.join(CA_KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => SeedCa::load(state_dir),
            (false, false) => {
                let now = time::OffsetDateTime::now_utc();
                let ca =
                    pki::seed_ca(KeyAlgorithm::EcdsaP256, now).context("making the seed CA")?;
                write_atomic(&key_path, ca.key().pem().as_bytes(), 0o600)?;
                write_atomic(&cert_path, ca.cert_pem().as_bytes(), 0o600)?;
                tracing::info!(path = %cert_path.display(), "made the seed CA");
                Ok(SeedCa { ca })
            }
            _ => anyhow::bail!(
                "{} and {} must both exist or both be absent; refusing to remake the seed CA \
                 that images pin",
                cert_path.display(),
                key_path.display()
            ),
        }
    }

    /// Loads an existing CA.
    pub fn load(state_dir: &Path) -> anyhow::Result<SeedCa> {
        let cert_path = state_dir.join(CA_CERT_FILE);
        let key_path = state_dir.join(CA_KEY_FILE);
        let read = |p: &Path| {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        };
        let ca = Ca::from_pem(CA_CERT_FILE, &read(&cert_path)?, &read(&key_path)?)
            .with_context(|| format!("loading the seed CA from {}", state_dir.display()))?;
        Ok(SeedCa { ca })
    }

    /// `sha256:<hex>` of the CA certificate's DER SubjectPublicKeyInfo.
    pub fn pin(&self) -> String {
        self.ca.spki_pin()
    }

    /// A fresh server certificate and key (PEM) for these names, signed by the CA.
    pub fn server_cert(&self, sans: &[String]) -> anyhow::Result<(String, String)> {
        let ips: Vec<IpAddr> = sans.iter().filter_map(|s| s.parse().ok()).collect();
        let dns: Vec<String> = sans
            .iter()
            .filter(|s| s.parse::<IpAddr>().is_err())
            .cloned()
            .collect();
        let now = time::OffsetDateTime::now_utc();
        let issued = pki::seed_server_cert(&self.ca, &ips, &dns, now)
            .context("signing the seed's server certificate")?;
        let key = issued
            .key
            .context("the server certificate came without its key")?;
        Ok((issued.cert_pem, key.pem().to_owned()))
    }
}

/// `sha256:<hex>` of the SPKI of the first certificate in `pem`.
pub fn pin_of_pem(pem: &str) -> anyhow::Result<String> {
    let der = pki::cert_der_from_pem("the CA certificate", pem)?;
    Ok(pki::spki_pin(&der)?)
}

/// The names the server certificate carries: localhost, loopback, the listen address (when not
/// unspecified), the host of the seed URL, and extra names.
pub fn server_names(listen: &[IpAddr], url_host: Option<&str>, extra: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    for ip in listen.iter().filter(|ip| !ip.is_unspecified()) {
        names.push(ip.to_string());
    }
    names.extend(url_host.map(|h| h.trim_matches(['[', ']']).to_string()));
    names.extend(extra.iter().cloned());
    let mut seen = Vec::new();
    names.retain(|n| {
        let fresh = !seen.contains(n);
        seen.push(n.clone());
        fresh
    });
    names
}

/// A rustls server configuration (ring provider, HTTP/2 and HTTP/1.1).
pub fn server_config(cert_pem: &str, key_pem: &str) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("reading the server certificate")?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .context("reading the server key")?
        .context("no server key in the PEM")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .with_client_cert_verifier(Arc::new(HostKeyVerifier {
            provider: provider.clone(),
        }))
        .with_single_cert(certs, key)
        .context("loading the server certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Asks every client for a certificate and lets it come without one. A host presents its
/// self-signed identity certificate ([`cluster::pki::HostIdentityKey`]); what is checked here
/// is only that the client holds its key (the handshake signature). Which key may do what is
/// decided by the routes against the seed's records, never by the certificate's names or dates.
#[derive(Debug)]
struct HostKeyVerifier {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::server::danger::ClientCertVerifier for HostKeyVerifier {
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
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        cluster::pki::HostKeyId::of_cert_der(end_entity)
            .map(|_| rustls::server::danger::ClientCertVerified::assertion())
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_made_once_and_its_pin_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let first = SeedCa::load_or_create(dir.path()).unwrap();
        let again = SeedCa::load_or_create(dir.path()).unwrap();
        assert_eq!(first.ca.cert_pem(), again.ca.cert_pem());
        let pin = first.pin();
        assert_eq!(pin_of_pem(again.ca.cert_pem()).unwrap(), pin);
        assert!(pin.starts_with("sha256:") && pin.len() == 7 + 64, "{pin}");
        std::fs::remove_file(dir.path().join(CA_KEY_FILE)).unwrap();
        let err = SeedCa::load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("refusing to remake"), "{err}");
    }

    #[test]
    fn server_names_drop_unspecified_and_duplicates() {
        let names = server_names(
            &["0.0.0.0".parse().unwrap(), "10.77.0.1".parse().unwrap()],
            Some("10.77.0.1"),
            &["seed.lab".into()],
        );
        assert_eq!(
            names,
            ["localhost", "127.0.0.1", "::1", "10.77.0.1", "seed.lab"]
        );
    }
}
