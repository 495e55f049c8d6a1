//! The certificate extensions written here rather than by rcgen, so that their DER is exact:
//! KeyUsage, and a leaf's BasicConstraints and SubjectKeyIdentifier.
//!
//! rcgen 0.13 pads KeyUsage to nine bits (`03 03 07 A0 00`), and rcgen up to 0.14.8 writes
//! `IsCa::ExplicitNoCa` as the BasicConstraints `SEQUENCE { BOOLEAN FALSE }`. DER forbids
//! both: a named bit list drops its trailing zero bits (X.690 11.2.2) and a DEFAULT value is
//! never encoded (X.690 11.5). Go and OpenSSL accept them; strict parsers need not.

use rcgen::CustomExtension;
use sha2::{Digest, Sha256};

use super::KeyAlgorithm;

const KEY_USAGE: &[u64] = &[2, 5, 29, 15];
const BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
const SUBJECT_KEY_IDENTIFIER: &[u64] = &[2, 5, 29, 14];

/// KeyUsage bits (RFC 5280 4.2.1.3): bit n is the n-th bit from the most significant one.
const DIGITAL_SIGNATURE: u16 = 0x8000;
const KEY_ENCIPHERMENT: u16 = 0x2000;
const KEY_CERT_SIGN: u16 = 0x0400;

/// The critical KeyUsage of a certificate for a key of `algorithm`: kubeadm's digitalSignature
/// and keyEncipherment, the latter for RSA keys only (RFC 8813 forbids it for EC keys), and
/// keyCertSign for a CA.
pub(crate) fn key_usage(algorithm: KeyAlgorithm, ca: bool) -> CustomExtension {
    let mut bits = DIGITAL_SIGNATURE;
    if algorithm == KeyAlgorithm::Rsa2048 {
        bits |= KEY_ENCIPHERMENT;
    }
    if ca {
        bits |= KEY_CERT_SIGN;
    }
    let mut extension = CustomExtension::from_oid_content(KEY_USAGE, named_bits(bits));
    // RFC 5280: "conforming CAs SHOULD mark this extension as critical".
    extension.set_criticality(true);
    extension
}

/// The DER BIT STRING of a named bit list: as few octets as hold the last set bit, and the
/// count of unused bits after it in the last octet.
fn named_bits(bits: u16) -> Vec<u8> {
    if bits == 0 {
        return vec![0x03, 0x01, 0x00];
    }
    let octets = if bits & 0x00ff == 0 { 1 } else { 2 };
    let unused = (bits.trailing_zeros() % 8) as u8;
    let mut der = vec![0x03, octets as u8 + 1, unused];
    der.extend_from_slice(&bits.to_be_bytes()[..octets]);
    der
}

/// The critical BasicConstraints of a leaf, as kubeadm's leaves carry it: an empty SEQUENCE,
/// since `cA` defaults to FALSE and has no path length.
pub(crate) fn leaf_basic_constraints() -> CustomExtension {
    let mut extension = CustomExtension::from_oid_content(BASIC_CONSTRAINTS, vec![0x30, 0x00]);
    extension.set_criticality(true);
    extension
}

/// The SubjectKeyIdentifier of a key given as its DER SubjectPublicKeyInfo: the first 160 bits
/// of its SHA-256, the identifier rcgen gives the CAs (and so the leaves' AuthorityKeyIdentifier).
pub(crate) fn subject_key_identifier(spki_der: &[u8]) -> CustomExtension {
    let digest = Sha256::digest(spki_der);
    let mut content = vec![0x04, 20];
    content.extend_from_slice(&digest[..20]);
    CustomExtension::from_oid_content(SUBJECT_KEY_IDENTIFIER, content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::cert_names;
    use crate::pki::{
        Ca, CaKind, CaSet, CertProfile, Convention, KubeconfigKind, PrivateKey, SubjectKey,
        seed_ca, seed_server_cert,
    };
    use x509_parser::prelude::{FromDer, X509Certificate};

    const ALGORITHMS: [KeyAlgorithm; 2] = [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa2048];

    /// The exact KeyUsage and BasicConstraints a certificate must carry, by its key and role.
    fn expected(algorithm: KeyAlgorithm, ca: bool) -> (&'static [u8], &'static [u8]) {
        match (algorithm, ca) {
            // digitalSignature, keyCertSign; cA TRUE
            (KeyAlgorithm::EcdsaP256, true) => {
                (&[0x03, 0x02, 0x02, 0x84], &[0x30, 0x03, 0x01, 0x01, 0xff])
            }
            // digitalSignature, keyEncipherment, keyCertSign; cA TRUE
            (KeyAlgorithm::Rsa2048, true) => {
                (&[0x03, 0x02, 0x02, 0xa4], &[0x30, 0x03, 0x01, 0x01, 0xff])
            }
            // digitalSignature; cA FALSE by default, so an empty SEQUENCE
            (KeyAlgorithm::EcdsaP256, false) => (&[0x03, 0x02, 0x07, 0x80], &[0x30, 0x00]),
            // digitalSignature, keyEncipherment
            (KeyAlgorithm::Rsa2048, false) => (&[0x03, 0x02, 0x05, 0xa0], &[0x30, 0x00]),
        }
    }

    fn now() -> time::OffsetDateTime {
        time::macros::datetime!(2026-03-01 12:00 UTC)
    }

    /// Checks one certificate's KeyUsage and BasicConstraints byte for byte (both critical),
    /// and that its SubjectKeyIdentifier is the first 160 bits of its key's SHA-256.
    fn assert_extensions(what: &str, cert_der: &[u8], algorithm: KeyAlgorithm, ca: bool) {
        let (_, cert) = X509Certificate::from_der(cert_der).unwrap();
        let raw = |oid: &[u64]| {
            let ext = cert
                .extensions()
                .iter()
                .find(|e| {
                    e.oid
                        .iter()
                        .is_some_and(|arcs| arcs.eq(oid.iter().copied()))
                })
                .unwrap_or_else(|| panic!("{what}: no extension {oid:?}"));
            (ext.critical, ext.value.to_vec())
        };
        let (key_usage, basic) = expected(algorithm, ca);
        assert_eq!(
            raw(KEY_USAGE),
            (true, key_usage.to_vec()),
            "{what}: KeyUsage"
        );
        assert_eq!(
            raw(BASIC_CONSTRAINTS),
            (true, basic.to_vec()),
            "{what}: BasicConstraints"
        );
        let digest = Sha256::digest(cert.tbs_certificate.subject_pki.raw);
        let mut ski = vec![0x04, 20];
        ski.extend_from_slice(&digest[..20]);
        assert_eq!(
            raw(SUBJECT_KEY_IDENTIFIER),
            (false, ski),
            "{what}: SubjectKeyIdentifier"
        );
    }

    fn csr(algorithm: KeyAlgorithm) -> String {
        let key = PrivateKey::generate(algorithm).unwrap();
        let params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.serialize_request(key.pair()).unwrap().pem().unwrap()
    }

    fn leaf_profiles() -> Vec<CertProfile> {
        let ip = Some("10.0.0.1".parse().unwrap());
        let convention = Convention::Since129;
        let mut profiles: Vec<CertProfile> = cert_names::ALL
            .iter()
            .map(|name| CertProfile::by_name(name, convention, "m1", ip).unwrap())
            .collect();
        profiles.push(KubeconfigKind::Admin.profile(convention));
        profiles
    }

    #[test]
    fn every_ca_has_exact_key_usage_and_basic_constraints() {
        for algorithm in ALGORITHMS {
            let set = CaSet::generate(algorithm, now()).unwrap();
            let seed = seed_ca(algorithm, now()).unwrap();
            let mut cas: Vec<(&str, &Ca)> = CaKind::ALL
                .iter()
                .map(|&kind| (kind.file_stem(), set.get(kind)))
                .collect();
            cas.push(("seed CA", &seed));
            for (what, ca) in cas {
                assert_extensions(what, ca.cert_der(), algorithm, true);
            }
        }
    }

    /// A leaf's usages follow its own key, not its CA's: the seed makes keys of the CAs'
    /// algorithm, and hosts may send CSRs of either.
    #[test]
    fn every_leaf_has_exact_key_usage_and_basic_constraints() {
        let csrs = ALGORITHMS.map(|algorithm| (algorithm, csr(algorithm)));
        for ca_algorithm in ALGORITHMS {
            let set = CaSet::generate(ca_algorithm, now()).unwrap();
            for profile in leaf_profiles() {
                let ca = set.get(profile.issuer);
                let fresh = ca.issue(&profile, SubjectKey::Fresh(ca_algorithm), now());
                let what = format!("{} by {ca_algorithm:?}", profile.name);
                assert_extensions(&what, &fresh.unwrap().cert_der, ca_algorithm, false);
                for (algorithm, csr) in &csrs {
                    let signed = ca.issue(&profile, SubjectKey::Csr(csr), now()).unwrap();
                    let what = format!("{what} for a {algorithm:?} CSR");
                    assert_extensions(&what, &signed.cert_der, *algorithm, false);
                }
            }
        }
        let seed = seed_ca(KeyAlgorithm::EcdsaP256, now()).unwrap();
        let ips = ["10.0.0.2".parse().unwrap()];
        let server = seed_server_cert(&seed, &ips, &[], now()).unwrap();
        assert_extensions(
            "seed server",
            &server.cert_der,
            KeyAlgorithm::EcdsaP256,
            false,
        );
    }

    #[test]
    fn a_ca_read_back_signs_the_same_extensions() {
        let set = CaSet::generate(KeyAlgorithm::EcdsaP256, now()).unwrap();
        let again = CaSet::from_files(&set.to_files()).unwrap();
        let profile = CertProfile::front_proxy_client();
        let issued = again
            .get(profile.issuer)
            .issue(&profile, SubjectKey::Fresh(KeyAlgorithm::EcdsaP256), now())
            .unwrap();
        assert_extensions(
            "front-proxy-client",
            &issued.cert_der,
            KeyAlgorithm::EcdsaP256,
            false,
        );
    }

    #[test]
    fn named_bits_drop_trailing_zero_bits() {
        let cases: [(u16, &[u8]); 6] = [
            (0, &[0x03, 0x01, 0x00]),
            (DIGITAL_SIGNATURE, &[0x03, 0x02, 0x07, 0x80]),
            (
                DIGITAL_SIGNATURE | KEY_ENCIPHERMENT,
                &[0x03, 0x02, 0x05, 0xa0],
            ),
            (
                DIGITAL_SIGNATURE | KEY_ENCIPHERMENT | KEY_CERT_SIGN,
                &[0x03, 0x02, 0x02, 0xa4],
            ),
            // decipherOnly, bit 8, is the only one that needs a second octet.
            (0x0080, &[0x03, 0x03, 0x07, 0x00, 0x80]),
            (DIGITAL_SIGNATURE | 0x0080, &[0x03, 0x03, 0x07, 0x80, 0x80]),
        ];
        for (bits, der) in cases {
            assert_eq!(named_bits(bits), der, "bits {bits:#06x}");
        }
    }
}
