//! openssl checks what the PKI issues, for both key algorithms.

use std::path::Path;
use std::process::Command;

use cluster::pki::{
    CaSet, CertProfile, Convention, KeyAlgorithm, KubeconfigKind, SubjectKey, seed_ca,
    seed_server_cert, spki_pin,
};

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("running openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn profiles(convention: Convention) -> Vec<CertProfile> {
    let ip = "10.77.0.11".parse().unwrap();
    let mut all = vec![
        CertProfile::apiserver_kubelet_client(convention),
        CertProfile::front_proxy_client(),
        CertProfile::etcd_server("demo-m1", ip),
        CertProfile::etcd_peer("demo-m1", ip),
        CertProfile::etcd_healthcheck_client(convention),
        CertProfile::apiserver_etcd_client(convention),
        CertProfile::kubelet_client("demo-m1"),
    ];
    for kind in [
        KubeconfigKind::Admin,
        KubeconfigKind::SuperAdmin,
        KubeconfigKind::ControllerManager,
        KubeconfigKind::Scheduler,
    ] {
        all.push(kind.profile(convention));
    }
    all
}

fn every_certificate_verifies_against_its_ca(algorithm: KeyAlgorithm) {
    if !testkit::require(&["openssl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let set = CaSet::generate(algorithm, now()).unwrap();
    let other = CaSet::generate(algorithm, now()).unwrap();
    for profile in profiles(Convention::Since129) {
        let ca = set.get(profile.issuer);
        let issued = ca
            .issue(&profile, SubjectKey::Fresh(algorithm), now())
            .unwrap();
        let stem = profile.name.replace('/', "-");
        let cert = write(dir.path(), &format!("{stem}.crt"), &issued.cert_pem);
        let key = write(
            dir.path(),
            &format!("{stem}.key"),
            issued.key.as_ref().unwrap().pem(),
        );
        let ca_file = write(dir.path(), "ca.crt", ca.cert_pem());
        let (ok, out) = openssl(&["verify", "-CAfile", &ca_file, &cert]);
        assert!(ok && out.contains(": OK"), "{}: {out}", profile.name);

        let wrong = write(
            dir.path(),
            "other-ca.crt",
            other.get(profile.issuer).cert_pem(),
        );
        let (ok, out) = openssl(&["verify", "-CAfile", &wrong, &cert]);
        assert!(
            !ok,
            "{} verified against another cluster's CA: {out}",
            profile.name
        );

        // The key is the certificate's: both give the same public key.
        let (_, from_cert) = openssl(&["x509", "-in", &cert, "-noout", "-pubkey"]);
        let (ok, from_key) = openssl(&["pkey", "-in", &key, "-pubout"]);
        assert!(
            ok,
            "{}: openssl cannot read the key: {from_key}",
            profile.name
        );
        assert_eq!(from_cert, from_key, "{}", profile.name);
    }
}

#[test]
fn ecdsa_certificates_verify() {
    every_certificate_verifies_against_its_ca(KeyAlgorithm::EcdsaP256);
}

#[test]
fn rsa_certificates_verify() {
    every_certificate_verifies_against_its_ca(KeyAlgorithm::Rsa2048);
}

#[test]
fn the_pin_is_the_sha256_of_the_spki_openssl_sees() {
    if !testkit::require(&["openssl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let set = CaSet::generate(KeyAlgorithm::EcdsaP256, now()).unwrap();
    let cert = write(dir.path(), "ca.crt", set.ca.cert_pem());
    let pubkey = dir.path().join("pub.der");
    let (ok, out) = openssl(&["x509", "-in", &cert, "-noout", "-pubkey"]);
    assert!(ok, "{out}");
    let pub_pem = write(dir.path(), "pub.pem", &out);
    let (ok, out) = openssl(&[
        "pkey",
        "-pubin",
        "-in",
        &pub_pem,
        "-outform",
        "DER",
        "-out",
        pubkey.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let (ok, digest) = openssl(&["dgst", "-sha256", "-r", pubkey.to_str().unwrap()]);
    assert!(ok, "{digest}");
    let hex = digest.split_whitespace().next().unwrap();
    assert_eq!(set.discovery_hash(), format!("sha256:{hex}"));
    assert_eq!(spki_pin(set.ca.cert_der()).unwrap(), set.discovery_hash());
}

#[test]
fn the_seed_server_certificate_verifies_for_its_address() {
    if !testkit::require(&["openssl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = seed_ca(KeyAlgorithm::EcdsaP256, now()).unwrap();
    let ips = ["10.77.0.1".parse().unwrap(), "127.0.0.1".parse().unwrap()];
    let issued = seed_server_cert(&ca, &ips, &["seed.lan".to_owned()], now()).unwrap();
    let ca_file = write(dir.path(), "seed-ca.crt", ca.cert_pem());
    let cert = write(dir.path(), "seed.crt", &issued.cert_pem);
    for ip in ["10.77.0.1", "127.0.0.1"] {
        let (ok, out) = openssl(&[
            "verify",
            "-CAfile",
            &ca_file,
            "-purpose",
            "sslserver",
            "-verify_ip",
            ip,
            &cert,
        ]);
        assert!(ok, "{ip}: {out}");
    }
    let (ok, _) = openssl(&[
        "verify",
        "-CAfile",
        &ca_file,
        "-verify_ip",
        "10.77.0.2",
        &cert,
    ]);
    assert!(
        !ok,
        "the certificate verified for an address it does not name"
    );
    let (ok, out) = openssl(&[
        "verify",
        "-CAfile",
        &ca_file,
        "-verify_hostname",
        "seed.lan",
        &cert,
    ]);
    assert!(ok, "{out}");
}
