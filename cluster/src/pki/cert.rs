//! Issuing leaf certificates from a profile, for a key the host made (a CSR) or a fresh one.

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, PublicKeyData, SanType, SerialNumber,
    SubjectPublicKeyInfo,
};

use super::der;
use super::{BACKDATE, CERT_VALIDITY, Ca, CertProfile, KeyAlgorithm, PkiError, PrivateKey, Usage};

/// Whose key a certificate certifies.
#[derive(Debug, Clone, Copy)]
pub enum SubjectKey<'a> {
    /// The public key of a PEM CSR the host sent; the host keeps the private key.
    Csr(&'a str),
    /// A key made here, returned with the certificate.
    Fresh(KeyAlgorithm),
}

/// An issued certificate, and its key when it was made here.
#[derive(Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key: Option<PrivateKey>,
}

/// The public key of a CSR whose signature was checked.
#[derive(Debug)]
pub struct CsrKey {
    spki: SubjectPublicKeyInfo,
    /// The SubjectPublicKeyInfo as the CSR encodes it, which the key identifier is made from.
    spki_der: Vec<u8>,
}

impl CsrKey {
    pub fn algorithm(&self) -> KeyAlgorithm {
        if self.spki.algorithm() == &PKCS_RSA_SHA256 {
            KeyAlgorithm::Rsa2048
        } else {
            KeyAlgorithm::EcdsaP256
        }
    }
}

/// Reads a PEM CSR for the certificate `name`, checks that it is signed by its own key, and
/// keeps only that key: the subject and SANs it asks for are ignored, since names come from the
/// seed's decision. Only ECDSA P-256 and RSA keys of at least 2048 bits are accepted.
pub fn parse_csr(name: &str, csr_pem: &str) -> Result<CsrKey, PkiError> {
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::prelude::FromDer;
    use x509_parser::public_key::PublicKey;

    let bad = |reason: String| PkiError::BadCsr {
        name: name.to_owned(),
        reason,
    };
    let block = pem::parse(csr_pem).map_err(|e| bad(format!("not PEM: {e}")))?;
    if !matches!(
        block.tag(),
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
    ) {
        return Err(bad(format!(
            "expected a CERTIFICATE REQUEST block, found {}",
            block.tag()
        )));
    }
    let (rest, csr) = X509CertificationRequest::from_der(block.contents())
        .map_err(|e| bad(format!("not a PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(bad("trailing bytes after the request".into()));
    }
    csr.verify_signature()
        .map_err(|e| bad(format!("its signature does not verify: {e}")))?;
    let info = &csr.certification_request_info.subject_pki;
    match info.parsed() {
        Ok(PublicKey::RSA(rsa)) if rsa.key_size() >= 2048 => {}
        Ok(PublicKey::RSA(rsa)) => {
            return Err(bad(format!(
                "an RSA key of {} bits; at least 2048",
                rsa.key_size()
            )));
        }
        Ok(PublicKey::EC(_)) => {}
        _ => return Err(bad("only ECDSA P-256 and RSA keys are accepted".into())),
    }
    let spki = SubjectPublicKeyInfo::from_der(info.raw).map_err(|e| bad(e.to_string()))?;
    if spki.algorithm() != &PKCS_ECDSA_P256_SHA256 && spki.algorithm() != &PKCS_RSA_SHA256 {
        return Err(bad("only ECDSA P-256 and RSA keys are accepted".into()));
    }
    Ok(CsrKey {
        spki,
        spki_der: info.raw.to_vec(),
    })
}

/// A random positive 128-bit serial number.
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // never a leading zero byte, so the DER length is fixed
    SerialNumber::from_slice(&bytes)
}

fn leaf_params(
    profile: &CertProfile,
    now: time::OffsetDateTime,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(org) = &profile.organization {
        dn.push(DnType::OrganizationName, org.as_str());
    }
    dn.push(DnType::CommonName, profile.common_name.as_str());
    params.distinguished_name = dn;
    // Not `ExplicitNoCa`: rcgen encodes its BasicConstraints, and KeyUsage, against DER (see
    // `der`). The SubjectKeyIdentifier it would write too comes from `add_key_extensions`.
    params.is_ca = IsCa::NoCa;
    params.custom_extensions = vec![der::leaf_basic_constraints()];
    params.extended_key_usages = match profile.usage {
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Usage::ServerAndClient => {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        }
    };
    for dns in &profile.dns_names {
        let name = dns
            .as_str()
            .try_into()
            .map_err(|e: rcgen::Error| PkiError::Signing {
                name: profile.name.clone(),
                reason: format!("SAN {dns:?}: {e}"),
            })?;
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    params
        .subject_alt_names
        .extend(profile.ips.iter().copied().map(SanType::IpAddress));
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    params.not_before = now - BACKDATE;
    params.not_after = now + CERT_VALIDITY;
    Ok(params)
}

impl Ca {
    /// Issues the certificate `profile` describes for `subject`, valid one year from `now`
    /// (backdated five minutes). The profile's issuer is not checked: the caller picks the CA.
    pub fn issue(
        &self,
        profile: &CertProfile,
        subject: SubjectKey<'_>,
        now: time::OffsetDateTime,
    ) -> Result<Issued, PkiError> {
        let mut params = leaf_params(profile, now)?;
        let signing = |e: rcgen::Error| PkiError::Signing {
            name: profile.name.clone(),
            reason: e.to_string(),
        };
        let (cert, key) = match subject {
            SubjectKey::Csr(pem) => {
                let csr = parse_csr(&profile.name, pem)?;
                add_key_extensions(&mut params, csr.algorithm(), &csr.spki_der);
                let cert = params.signed_by(&csr.spki, &self.signer, self.key().pair());
                (cert.map_err(signing)?, None)
            }
            SubjectKey::Fresh(algorithm) => {
                let key = PrivateKey::generate(algorithm)?;
                add_key_extensions(&mut params, algorithm, &key.pair().public_key_der());
                let cert = params.signed_by(key.pair(), &self.signer, self.key().pair());
                (cert.map_err(signing)?, Some(key))
            }
        };
        Ok(Issued {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key,
        })
    }
}

/// The extensions that depend on the subject's key: its usages and its identifier.
fn add_key_extensions(params: &mut CertificateParams, algorithm: KeyAlgorithm, spki_der: &[u8]) {
    params
        .custom_extensions
        .push(der::key_usage(algorithm, false));
    params
        .custom_extensions
        .push(der::subject_key_identifier(spki_der));
}
