//! TLS to the seed trusting only the CA whose SubjectPublicKeyInfo hash the image carries.
//!
//! The seed presents its chain (server certificate, then its CA). [`PinVerifier`] looks for the
//! certificate whose SPKI SHA-256 equals the pin, makes it the only trust anchor, and lets
//! webpki verify the chain (signatures, validity, server-auth usage, the name asked for).
//! Every connection presents the host's identity certificate as its client certificate (see
//! `hostkey`).

use cluster::pki::{CaPin, HostIdentityKey};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::{Arc, Mutex};

/// What the last handshake learnt about the pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinOutcome {
    /// The seed's CA certificate (DER) matched the pin.
    Matched(Vec<u8>),
    /// No certificate of the chain matched; the SPKI hashes seen, as `sha256:<hex>`.
    Mismatch(Vec<String>),
}

/// The pin of a certificate, or `None` if it does not parse.
fn spki_pin(cert_der: &[u8]) -> Option<CaPin> {
    CaPin::of_cert_der(cert_der).ok()
}

#[derive(Debug)]
pub struct PinVerifier {
    pin: CaPin,
    provider: Arc<CryptoProvider>,
    outcome: Arc<Mutex<Option<PinOutcome>>>,
}

impl PinVerifier {
    pub fn new(pin: CaPin) -> PinVerifier {
        PinVerifier {
            pin,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            outcome: Arc::default(),
        }
    }

    /// Shared view of what the handshakes learnt.
    pub fn outcome(&self) -> Arc<Mutex<Option<PinOutcome>>> {
        self.outcome.clone()
    }

    fn set(&self, outcome: PinOutcome) {
        *self.outcome.lock().unwrap() = Some(outcome);
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain: Vec<&CertificateDer<'_>> = intermediates
            .iter()
            .chain(std::iter::once(end_entity))
            .collect();
        let Some(anchor) = chain.iter().find(|c| spki_pin(c) == Some(self.pin)) else {
            let seen = chain
                .iter()
                .filter_map(|c| spki_pin(c))
                .map(|pin| pin.to_string())
                .collect();
            self.set(PinOutcome::Mismatch(seen));
            return Err(rustls::Error::General(format!(
                "no certificate of the seed's chain has the pinned key {}",
                self.pin
            )));
        };
        let mut roots = RootCertStore::empty();
        roots.add((*anchor).clone().into_owned())?;
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| {
                    rustls::Error::General(format!("building the pinned verifier: {e}"))
                })?;
        let rest: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .filter(|c| c.as_ref() != anchor.as_ref())
            .cloned()
            .collect();
        let verified =
            webpki.verify_server_cert(end_entity, &rest, server_name, ocsp_response, now)?;
        self.set(PinOutcome::Matched(anchor.as_ref().to_vec()));
        Ok(verified)
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

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The host's identity could not be made into a TLS client certificate.
#[derive(Debug, thiserror::Error)]
#[error("presenting the identity key as the tls client certificate: {0}")]
pub struct ClientCertError(String);

/// A TLS client config whose only trust is the pin, presenting `identity` as its certificate.
pub fn client_config(
    verifier: Arc<PinVerifier>,
    identity: &HostIdentityKey,
) -> Result<rustls::ClientConfig, ClientCertError> {
    let fail = |e: &dyn std::fmt::Display| ClientCertError(e.to_string());
    let cert =
        CertificateDer::from_pem_slice(identity.cert_pem.as_bytes()).map_err(|e| fail(&e))?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).map_err(|e| fail(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![cert], key)
        .map_err(|e| fail(&e))
}

/// PEM text of a DER certificate.
pub fn cert_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ascii"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pin_of_a_certificate_is_its_spki_hash() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["seed".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        use sha2::{Digest, Sha256};
        let want = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(key.public_key_der()))
        );
        assert_eq!(spki_pin(cert.der()).map(|p| p.to_string()), Some(want));
        assert!(cert_pem(cert.der()).starts_with("-----BEGIN CERTIFICATE-----\nMII"));
    }
}
