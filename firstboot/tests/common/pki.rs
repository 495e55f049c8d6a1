//! Certificates for tests that speak TLS to real servers: a CA, and leaves it signs.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    PKCS_ECDSA_P256_SHA256, SanType,
};
use std::path::Path;

pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

pub fn ca(name: &str) -> Ca {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// Writes `<dir>/<name>.crt` and `.key`, signed by `ca`, for 127.0.0.1 and 127.0.0.2.
pub fn leaf(dir: &Path, name: &str, ca: &Ca, usages: Vec<ExtendedKeyUsagePurpose>) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    for ip in ["127.0.0.1", "127.0.0.2"] {
        p.subject_alt_names
            .push(SanType::IpAddress(ip.parse().unwrap()));
    }
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = usages;
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}
