//! The cluster's PKI: CAs, kubeadm's certificate profiles, CSR signing and kubeconfigs.
//!
//! Everything here is pure apart from randomness: the time is always passed in (`now`), so the
//! caller decides which clock to trust.

mod ca;
mod cert;
mod der;
mod identity;
mod key;
mod kubeconfig;
mod pin;
mod profile;
mod seed_tls;

use serde::{Deserialize, Serialize};

pub use self::ca::{Ca, CaKind, CaSet};
pub use self::cert::{CsrKey, Issued, SubjectKey, parse_csr};
pub use self::identity::{HostIdentityKey, HostKeyId, IDENTITY_CN};
pub use self::key::PrivateKey;
pub use self::kubeconfig::{ClientCredential, Kubeconfig, KubeconfigKind};
pub use self::pin::CaPin;
pub use self::profile::{
    CLUSTER_ADMINS, CertProfile, Convention, SYSTEM_MASTERS, SYSTEM_NODES, Usage,
};
pub use self::seed_tls::{SEED_CA_NAME, seed_ca, seed_server_cert};

/// Where kubeadm keeps the cluster's certificates on every control-plane host.
pub const PKI_DIR: &str = "/etc/kubernetes/pki";
/// Where the kubelet keeps its own client certificate.
pub const KUBELET_PKI_DIR: &str = "/var/lib/kubelet/pki";
/// How far back every certificate's NotBefore is set, so a host whose clock is a little behind
/// still accepts it.
pub const BACKDATE: time::Duration = time::Duration::minutes(5);
/// Lifetime of a CA (kubeadm's `caCertificateValidityPeriod`, 87600h).
pub const CA_VALIDITY: time::Duration = time::Duration::days(3650);
/// Lifetime of every other certificate (kubeadm's `certificateValidityPeriod`, 8760h).
pub const CERT_VALIDITY: time::Duration = time::Duration::days(365);

/// The key type of every key the cluster makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum KeyAlgorithm {
    #[default]
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    #[serde(rename = "rsa-2048")]
    Rsa2048,
}

impl KeyAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::Rsa2048 => "rsa-2048",
        }
    }

    /// The value of kubeadm v1beta4's `encryptionAlgorithm`.
    pub fn kubeadm_name(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ECDSA-P256",
            KeyAlgorithm::Rsa2048 => "RSA-2048",
        }
    }
}

/// Everything that can go wrong making, reading or signing keys and certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating a {algorithm} key: {reason}")]
    KeyGeneration {
        algorithm: &'static str,
        reason: String,
    },
    #[error("reading the private key {what}: {reason}")]
    BadKey { what: String, reason: String },
    #[error("reading the certificate {what}: {reason}")]
    BadCertificate { what: String, reason: String },
    /// The host sent a CSR the seed cannot sign (maps to the `bad_csr` API code).
    #[error("the certificate request for {name} is unusable: {reason}")]
    BadCsr { name: String, reason: String },
    #[error("signing the certificate {name}: {reason}")]
    Signing { name: String, reason: String },
    #[error("the CA set has no {file}")]
    MissingFile { file: String },
    #[error("{file} is a {found} key but the set's CA key is {expected}")]
    MixedAlgorithms {
        file: String,
        found: &'static str,
        expected: &'static str,
    },
}

/// `sha256:<hex>` of a certificate's DER SubjectPublicKeyInfo: kubeadm's discovery hash
/// (`caCertHashes`) and the pin images carry for the seed's CA ([`CaPin`]).
pub fn spki_pin(cert_der: &[u8]) -> Result<String, PkiError> {
    CaPin::of_cert_der(cert_der).map(|pin| pin.to_string())
}

/// The DER bytes of the first certificate of a PEM text.
pub fn cert_der_from_pem(what: &str, cert_pem: &str) -> Result<Vec<u8>, PkiError> {
    let block = pem::parse(cert_pem).map_err(|e| PkiError::BadCertificate {
        what: what.to_owned(),
        reason: e.to_string(),
    })?;
    if block.tag() != "CERTIFICATE" {
        return Err(PkiError::BadCertificate {
            what: what.to_owned(),
            reason: format!("expected a CERTIFICATE PEM block, found {}", block.tag()),
        });
    }
    Ok(block.into_contents())
}
