//! A host's identity key: made once by firstboot, kept on the host's data disk with its journal,
//! and presented as a TLS client certificate on every connection to the seed.
//!
//! The certificate is self-signed: what the seed binds at a host's first enrollment is the key
//! (the SHA-256 of its SubjectPublicKeyInfo, a [`HostKeyId`]), and the TLS handshake proves that
//! the client holds it (its CertificateVerify signs the handshake, which includes the server's
//! random, so a recorded handshake cannot be replayed). The seed never trusts the certificate's
//! names or dates, so a host whose clock is still wrong can present it.

use std::fmt;
use std::str::FromStr;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};

use super::{CaPin, PkiError};
use crate::text::ValueError;

/// The common name of every identity certificate: informative only.
pub const IDENTITY_CN: &str = "launcher host identity";

/// A host's identity: its key and the self-signed certificate it presents, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentityKey {
    pub key_pem: String,
    pub cert_pem: String,
}

impl HostIdentityKey {
    /// A new ECDSA P-256 key and its certificate, valid from 1970 to 9999 so that no host clock
    /// can make it "not yet valid" or "expired".
    pub fn generate() -> Result<HostIdentityKey, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rcgen_error)?;
        let cert = self_signed(&key)?;
        Ok(HostIdentityKey {
            key_pem: key.serialize_pem(),
            cert_pem: cert,
        })
    }

    /// The identity kept on disk: the key, and its certificate remade if it is missing.
    pub fn from_key_pem(key_pem: &str) -> Result<HostIdentityKey, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(rcgen_error)?;
        let cert = self_signed(&key)?;
        Ok(HostIdentityKey {
            key_pem: key_pem.to_string(),
            cert_pem: cert,
        })
    }

    /// What the seed records for this key.
    pub fn id(&self) -> Result<HostKeyId, PkiError> {
        HostKeyId::of_cert_pem(&self.cert_pem)
    }
}

fn self_signed(key: &KeyPair) -> Result<String, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, IDENTITY_CN);
    params.distinguished_name = name;
    params.not_before = rcgen::date_time_ymd(1970, 1, 1);
    params.not_after = rcgen::date_time_ymd(9999, 12, 31);
    let cert = params.self_signed(key).map_err(rcgen_error)?;
    Ok(cert.pem())
}

fn rcgen_error(err: rcgen::Error) -> PkiError {
    PkiError::BadCertificate {
        what: "the host identity".into(),
        reason: err.to_string(),
    }
}

/// `sha256:<hex>` of an identity key's SubjectPublicKeyInfo: what the seed binds a host to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostKeyId(CaPin);

impl HostKeyId {
    /// The key id of a DER certificate (as a TLS server sees the client's).
    pub fn of_cert_der(cert_der: &[u8]) -> Result<HostKeyId, PkiError> {
        CaPin::of_cert_der(cert_der).map(HostKeyId)
    }

    pub fn of_cert_pem(cert_pem: &str) -> Result<HostKeyId, PkiError> {
        let der = pem::parse(cert_pem).map_err(|e| PkiError::BadCertificate {
            what: "the host identity".into(),
            reason: e.to_string(),
        })?;
        HostKeyId::of_cert_der(der.contents())
    }

    /// The first 16 hex digits, for tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0.bytes()[..8])
    }
}

impl FromStr for HostKeyId {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        s.parse::<CaPin>().map(HostKeyId).map_err(|_| {
            ValueError(format!(
                "{s:?} is not a host key id: expected \"sha256:\" and 64 hex digits"
            ))
        })
    }
}

impl fmt::Display for HostKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl serde::Serialize for HostKeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for HostKeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reloaded_from_disk_has_the_same_id_and_two_keys_differ() {
        let one = HostIdentityKey::generate().unwrap();
        let again = HostIdentityKey::from_key_pem(&one.key_pem).unwrap();
        assert_eq!(one.id().unwrap(), again.id().unwrap());
        let two = HostIdentityKey::generate().unwrap();
        assert_ne!(one.id().unwrap(), two.id().unwrap());
    }

    #[test]
    fn ids_round_trip_as_text_and_refuse_anything_else() {
        let id = HostIdentityKey::generate().unwrap().id().unwrap();
        let text = id.to_string();
        assert!(text.starts_with("sha256:") && text.len() == 71, "{text}");
        assert_eq!(text.parse::<HostKeyId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<HostKeyId>(&json).unwrap(), id);
        for bad in ["", "sha256:", "sha1:00", "sha256:zz"] {
            let err = bad.parse::<HostKeyId>().unwrap_err();
            assert!(err.0.contains("not a host key id"), "{bad}: {err:?}");
        }
    }

    #[test]
    fn the_certificate_does_not_expire_for_any_host_clock() {
        let identity = HostIdentityKey::generate().unwrap();
        let der = pem::parse(&identity.cert_pem).unwrap();
        use x509_parser::prelude::FromDer;
        let (_, cert) =
            x509_parser::certificate::X509Certificate::from_der(der.contents()).unwrap();
        assert_eq!(cert.validity().not_before.to_datetime().year(), 1970);
        assert_eq!(cert.validity().not_after.to_datetime().year(), 9999);
    }
}
