//! The CA pin an image carries: the SHA-256 of the seed CA's SubjectPublicKeyInfo.
//!
//! Computed here once for every side: the seed prints it (`launcher-seed pin`), the builder
//! writes it into `firstboot.toml`, firstboot compares the seed's chain against it, and kubeadm's
//! discovery hash (`caCertHashes`) is the same value.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use super::PkiError;
use crate::text::ValueError;

/// `sha256:<64 hex digits>` of a CA certificate's DER SubjectPublicKeyInfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaPin([u8; 32]);

impl CaPin {
    /// The pin of a DER certificate.
    pub fn of_cert_der(cert_der: &[u8]) -> Result<CaPin, PkiError> {
        use x509_parser::prelude::FromDer;
        let (_, cert) =
            x509_parser::certificate::X509Certificate::from_der(cert_der).map_err(|e| {
                PkiError::BadCertificate {
                    what: "to pin".into(),
                    reason: e.to_string(),
                }
            })?;
        Ok(CaPin(
            Sha256::digest(cert.tbs_certificate.subject_pki.raw).into(),
        ))
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl FromStr for CaPin {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let refused = || {
            ValueError(format!(
                "{s:?} is not a CA pin: expected \"sha256:\" and 64 hex digits of the seed CA's \
                 SubjectPublicKeyInfo (`launcher-seed pin` prints it)"
            ))
        };
        let hex_part = s.strip_prefix("sha256:").ok_or_else(refused)?;
        if hex_part.len() != 64 {
            return Err(refused());
        }
        let bytes = hex::decode(hex_part).map_err(|_| refused())?;
        Ok(CaPin(bytes.try_into().map_err(|_| refused())?))
    }
}

impl fmt::Display for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

serde_via_str!(CaPin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_print_and_refuse_anything_else() {
        let text = format!("sha256:{}", "ab".repeat(32));
        let pin: CaPin = text.parse().unwrap();
        assert_eq!(pin.to_string(), text);
        assert_eq!(pin.bytes(), &[0xab; 32]);
        let upper: CaPin = format!("sha256:{}", "AB".repeat(32)).parse().unwrap();
        assert_eq!(upper, pin);
        let bad = [
            "md5:00".to_string(),
            "sha256:abcd".to_string(),
            format!("sha256:{}", "zz".repeat(32)),
            format!("sha256:{}00", "ab".repeat(32)),
            "ab".repeat(32),
            String::new(),
        ];
        for text in bad {
            let err = text.parse::<CaPin>().unwrap_err().to_string();
            assert_eq!(
                err,
                format!(
                    "{text:?} is not a CA pin: expected \"sha256:\" and 64 hex digits of the seed \
                     CA's SubjectPublicKeyInfo (`launcher-seed pin` prints it)"
                )
            );
        }
    }

    #[test]
    fn a_certificate_that_does_not_parse_has_no_pin() {
        let err = CaPin::of_cert_der(b"not DER").unwrap_err();
        assert!(err.to_string().contains("to pin"), "{err}");
    }
}
