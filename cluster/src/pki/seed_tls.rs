//! The seed's own HTTPS identity: a "launcher seed CA" whose SPKI pin images carry, and the
//! server certificate it signs for the seed's addresses.

use std::net::IpAddr;

use super::{Ca, CaKind, CertProfile, Issued, KeyAlgorithm, PkiError, SubjectKey, Usage};

/// The seed CA's common name.
pub const SEED_CA_NAME: &str = "launcher seed CA";

/// A new self-signed seed CA (ten years).
pub fn seed_ca(algorithm: KeyAlgorithm, now: time::OffsetDateTime) -> Result<Ca, PkiError> {
    Ca::generate(SEED_CA_NAME, algorithm, now)
}

/// A server certificate for the seed, for every given IP and DNS name, with a fresh key of the
/// CA's algorithm (one year).
pub fn seed_server_cert(
    ca: &Ca,
    ips: &[IpAddr],
    dns_names: &[String],
    now: time::OffsetDateTime,
) -> Result<Issued, PkiError> {
    let common_name = dns_names
        .first()
        .cloned()
        .or_else(|| ips.first().map(IpAddr::to_string))
        .unwrap_or_else(|| "launcher-seed".to_owned());
    let profile = CertProfile {
        name: "seed-server".into(),
        // Not one of the cluster's CAs; the kind only matters to callers that pick a CA by it.
        issuer: CaKind::Kubernetes,
        common_name,
        organization: None,
        usage: Usage::Server,
        dns_names: dns_names.to_vec(),
        ips: ips.to_vec(),
    };
    ca.issue(&profile, SubjectKey::Fresh(ca.key().algorithm()), now)
}
