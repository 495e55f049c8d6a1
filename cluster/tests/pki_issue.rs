//! Issuing certificates: subjects come from profiles, CSRs are checked, CA sets round-trip.

use std::collections::BTreeMap;

use cluster::pki::{
    Ca, CaKind, CaSet, CertProfile, Convention, KeyAlgorithm, PkiError, SubjectKey, parse_csr,
};
use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384};
use x509_parser::prelude::{FromDer, X509Certificate};

fn now() -> time::OffsetDateTime {
    time::macros::datetime!(2026-03-01 12:00 UTC)
}

fn csr_for(key: &KeyPair) -> String {
    let mut params = CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "evil");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    params.serialize_request(key).unwrap().pem().unwrap()
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der).unwrap().1
}

#[test]
fn a_csr_gives_its_key_and_nothing_else() {
    let set = CaSet::generate(KeyAlgorithm::EcdsaP256, now()).unwrap();
    let host_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let profile = CertProfile::kubelet_client("demo-w1");
    let issued = set
        .ca
        .issue(&profile, SubjectKey::Csr(&csr_for(&host_key)), now())
        .unwrap();
    assert!(issued.key.is_none());

    let cert = parse(&issued.cert_der);
    let cn: Vec<_> = cert
        .subject()
        .iter_common_name()
        .map(|a| a.as_str().unwrap())
        .collect();
    let o: Vec<_> = cert
        .subject()
        .iter_organization()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(cn, ["system:node:demo-w1"]);
    assert_eq!(o, ["system:nodes"]);
    assert!(
        cert.subject_alternative_name().unwrap().is_none(),
        "the CSR's SAN was copied"
    );
    assert_eq!(cert.public_key().raw, host_key.public_key_der().as_slice());
    assert_eq!(cert.issuer().to_string(), "CN=kubernetes");
}

#[test]
fn validity_is_backdated_five_minutes() {
    let set = CaSet::generate(KeyAlgorithm::EcdsaP256, now()).unwrap();
    let issued = set
        .etcd_ca
        .issue(
            &CertProfile::etcd_healthcheck_client(Convention::Since129),
            SubjectKey::Fresh(KeyAlgorithm::EcdsaP256),
            now(),
        )
        .unwrap();
    let leaf = parse(&issued.cert_der);
    let start = now().unix_timestamp();
    assert_eq!(leaf.validity().not_before.timestamp(), start - 300);
    assert_eq!(leaf.validity().not_after.timestamp(), start + 365 * 86400);
    let ca = parse(set.etcd_ca.cert_der());
    assert_eq!(ca.validity().not_before.timestamp(), start - 300);
    assert_eq!(ca.validity().not_after.timestamp(), start + 3650 * 86400);
    assert!(ca.is_ca());
}

#[test]
fn a_short_lived_certificate_ends_when_asked() {
    let set = CaSet::generate(KeyAlgorithm::EcdsaP256, now()).unwrap();
    let issued = set
        .etcd_ca
        .issue_for(
            &CertProfile::etcd_healthcheck_client(Convention::Since129),
            SubjectKey::Fresh(KeyAlgorithm::EcdsaP256),
            now(),
            time::Duration::hours(24),
        )
        .unwrap();
    let leaf = parse(&issued.cert_der);
    let start = now().unix_timestamp();
    assert_eq!(leaf.validity().not_before.timestamp(), start - 300);
    assert_eq!(leaf.validity().not_after.timestamp(), start + 86400);
}

#[test]
fn bad_csrs_are_refused_with_a_reason() {
    let good = csr_for(&KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap());
    let p384 = csr_for(&KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap());
    let tampered = {
        let block = pem::parse(&good).unwrap();
        let mut der = block.contents().to_vec();
        let last = der.len() - 3;
        der[last] ^= 0x55;
        pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der))
    };
    let wrong_tag = good.replace("CERTIFICATE REQUEST", "CERTIFICATE");
    let garbage = pem::encode(&pem::Pem::new(
        "CERTIFICATE REQUEST",
        vec![0x30, 0x03, 1, 2, 3],
    ));
    let cases: [(&str, &str, &str); 5] = [
        ("not pem", "hello", "not PEM"),
        (
            "wrong tag",
            &wrong_tag,
            "expected a CERTIFICATE REQUEST block, found CERTIFICATE",
        ),
        ("garbage", &garbage, "not a PKCS#10 request"),
        ("tampered", &tampered, "its signature does not verify"),
        ("p-384", &p384, "only ECDSA P-256 and RSA keys are accepted"),
    ];
    for (case, pem_text, expected) in cases {
        let err = parse_csr("etcd/peer", pem_text).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, PkiError::BadCsr { .. }), "{case}: {message}");
        assert!(
            message.starts_with("the certificate request for etcd/peer is unusable: ")
                && message.contains(expected),
            "{case}: {message}"
        );
    }
    assert!(parse_csr("etcd/peer", &good).is_ok());
}

#[test]
fn a_ca_set_round_trips_through_its_files() {
    let set = CaSet::generate(KeyAlgorithm::EcdsaP256, now()).unwrap();
    let files = set.to_files();
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    let mut expected = CaSet::FILES.to_vec();
    expected.sort();
    assert_eq!(names, expected);
    assert!(files["sa.pub"].starts_with("-----BEGIN PUBLIC KEY-----"));

    let back = CaSet::from_files(&files).unwrap();
    for kind in CaKind::ALL {
        assert_eq!(back.get(kind).cert_pem(), set.get(kind).cert_pem());
        assert_eq!(back.get(kind).spki_pin(), set.get(kind).spki_pin());
    }
    assert_eq!(back.discovery_hash(), set.discovery_hash());
    // The set read back still signs certificates that chain to the original CA.
    let issued = back
        .front_proxy_ca
        .issue(
            &CertProfile::front_proxy_client(),
            SubjectKey::Fresh(KeyAlgorithm::EcdsaP256),
            now(),
        )
        .unwrap();
    let leaf = parse(&issued.cert_der);
    let ca = parse(set.front_proxy_ca.cert_der());
    leaf.verify_signature(Some(ca.public_key())).unwrap();
}

#[test]
fn broken_ca_files_are_refused() {
    let set = CaSet::generate(KeyAlgorithm::EcdsaP256, now()).unwrap();
    let files = set.to_files();
    let with = |name: &str, value: Option<&str>| {
        let mut copy: BTreeMap<String, String> = files.clone();
        match value {
            Some(v) => copy.insert(name.to_owned(), v.to_owned()),
            None => copy.remove(name),
        };
        CaSet::from_files(&copy).unwrap_err().to_string()
    };
    assert_eq!(with("etcd/ca.key", None), "the CA set has no etcd/ca.key");
    assert_eq!(
        with("ca.key", Some(&files["etcd/ca.key"])),
        "reading the private key ca.crt: it does not belong to the certificate"
    );
    assert!(with("ca.crt", Some("junk")).starts_with("reading the certificate ca.crt: "));
    let rsa = rsa_key_pem();
    assert_eq!(
        with("sa.key", Some(&rsa)),
        "sa.key is a rsa-2048 key but the set's CA key is ecdsa-p256"
    );
}

fn rsa_key_pem() -> String {
    cluster::pki::PrivateKey::generate(KeyAlgorithm::Rsa2048)
        .unwrap()
        .pem()
        .to_owned()
}

#[test]
fn an_rsa_ca_signs_rsa_and_ecdsa_csrs() {
    let ca = Ca::generate("kubernetes", KeyAlgorithm::Rsa2048, now()).unwrap();
    assert_eq!(ca.key().algorithm(), KeyAlgorithm::Rsa2048);
    let host_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let issued = ca
        .issue(
            &CertProfile::kubelet_client("w1"),
            SubjectKey::Csr(&csr_for(&host_key)),
            now(),
        )
        .unwrap();
    let leaf = parse(&issued.cert_der);
    leaf.verify_signature(Some(parse(ca.cert_der()).public_key()))
        .unwrap();
}
