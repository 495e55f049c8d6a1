//! The etcd phase's health probe, on the real OS implementation, against a real etcd that
//! requires client certificates: the healthcheck client's certificate gets `health: true`, a
//! certificate from another CA is refused.

use firstboot::os::{ClientTls, Os, RealOs};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    PKCS_ECDSA_P256_SHA256, SanType,
};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// Writes `<dir>/<name>.crt` and `.key`, signed by `ca`.
fn leaf(dir: &Path, name: &str, ca: &Ca, usages: Vec<ExtendedKeyUsagePurpose>) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = usages;
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

#[test]
fn the_health_probe_uses_the_client_certificate_against_a_real_etcd() {
    if !testkit::require(&["etcd"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let etcd_ca = ca("etcd-ca");
    std::fs::write(d.join("ca.crt"), etcd_ca.cert.pem()).unwrap();
    use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    leaf(d, "server", &etcd_ca, vec![ServerAuth, ClientAuth]);
    leaf(d, "healthcheck-client", &etcd_ca, vec![ClientAuth]);
    leaf(d, "stranger", &ca("other-ca"), vec![ClientAuth]);

    let (client, peer) = (testkit::free_tcp_port(), testkit::free_tcp_port());
    let url = format!("https://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = std::fs::File::create(d.join("etcd.log")).unwrap();
    let _etcd = testkit::ChildGuard::spawn(
        "etcd",
        Command::new(testkit::which("etcd").unwrap())
            .args(["--name", "probe", "--data-dir"])
            .arg(d.join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("probe={peer_url}")])
            .arg("--client-cert-auth")
            .arg("--trusted-ca-file")
            .arg(d.join("ca.crt"))
            .arg("--cert-file")
            .arg(d.join("server.crt"))
            .arg("--key-file")
            .arg(d.join("server.key"))
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    let health = format!("{url}/health");
    let tls = |name: &str| ClientTls {
        ca: d.join("ca.crt"),
        cert: d.join(format!("{name}.crt")),
        key: d.join(format!("{name}.key")),
    };
    let body = testkit::wait_for("etcd's health", Duration::from_secs(30), || {
        RealOs.probe_https(&health, &tls("healthcheck-client")).ok()
    });
    assert!(body.contains(r#""health":"true""#), "{body}");

    let err = RealOs
        .probe_https(&health, &tls("stranger"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with(&format!("probing {health}: ")), "{err}");
    let err = RealOs
        .probe_https(&health, &tls("missing"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("reading ") && err.contains("missing.crt"),
        "{err}"
    );
}
