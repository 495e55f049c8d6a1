//! pkilint, an RFC 5280 linter independent of the code that encodes them, checks every kind
//! of certificate the seed issues, for both key algorithms.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use cluster::api::cert_names;
use cluster::pki::{
    Ca, CaKind, CaSet, CertProfile, Convention, KeyAlgorithm, KubeconfigKind, SubjectKey, Usage,
    seed_ca, seed_server_cert,
};
use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use serde_json::Value;

const NODE: &str = "demo-m1";

/// The one finding allowed, and only for these names: a node name is a single DNS label, which
/// the linter does not take for a domain name, and etcd's certificates name `localhost` too.
const SINGLE_LABEL_FINDING: &str = "pkix.invalid_domain_name_syntax";
const SINGLE_LABEL_NAMES: [&str; 2] = [NODE, "localhost"];

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// The findings of ERROR or worse that are not the allowed one, as `code: message` lines.
fn lint(path: &Path) -> Vec<String> {
    let out = Command::new("lint_pkix_cert")
        .args(["lint", "--severity", "ERROR", "--format", "JSON"])
        .arg(path)
        .output()
        .expect("running lint_pkix_cert");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "lint_pkix_cert on {}: {e}: {}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let mut findings = Vec::new();
    for result in report["results"].as_array().expect("a results array") {
        for finding in result["finding_descriptions"].as_array().unwrap() {
            let code = finding["code"].as_str().unwrap();
            let message = finding["message"].as_str().unwrap_or("");
            if !allowed(code, message) {
                let at = result["node_path"].as_str().unwrap_or("");
                let severity = finding["severity"].as_str().unwrap_or("");
                findings.push(format!("{severity} {code} at {at}: {message}"));
            }
        }
    }
    findings
}

fn allowed(code: &str, message: &str) -> bool {
    code == SINGLE_LABEL_FINDING
        && SINGLE_LABEL_NAMES
            .iter()
            .any(|name| message == format!("Invalid domain name syntax: \"{name}\""))
}

/// A CSR as firstboot makes one: a fresh P-256 key, the certificate's name as CN.
fn host_csr(name: &str) -> String {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.serialize_request(&key).unwrap().pem().unwrap()
}

/// Every leaf the seed issues from the cluster's CAs: the host certificates by their CSR
/// names, the kubeconfigs' client certificates, and the seed's own etcd client (as
/// registry-seed's `seed_client_profile` makes it).
fn cluster_leaves(convention: Convention) -> Vec<CertProfile> {
    let ip: IpAddr = "10.77.0.11".parse().unwrap();
    let mut all: Vec<CertProfile> = cert_names::ALL
        .iter()
        .map(|name| CertProfile::by_name(name, convention, NODE, Some(ip)).unwrap())
        .collect();
    for kind in [
        KubeconfigKind::Admin,
        KubeconfigKind::SuperAdmin,
        KubeconfigKind::ControllerManager,
        KubeconfigKind::Scheduler,
        KubeconfigKind::Kubelet { node: NODE.into() },
    ] {
        let mut profile = kind.profile(convention);
        profile.name = kind.file_name().to_owned();
        all.push(profile);
    }
    all.push(CertProfile {
        name: "seed-etcd-client".into(),
        issuer: CaKind::Etcd,
        common_name: "launcher-seed".into(),
        organization: None,
        usage: Usage::Client,
        dns_names: Vec::new(),
        ips: Vec::new(),
    });
    all
}

/// Writes every certificate the seed issues with `algorithm` keys into `dir`, by name.
fn issue_everything(algorithm: KeyAlgorithm, dir: &Path) -> Vec<(String, std::path::PathBuf)> {
    let mut written = Vec::new();
    let mut write = |name: &str, pem: &str| {
        let path = dir.join(format!("{}.crt", name.replace('/', "-")));
        std::fs::write(&path, pem).unwrap();
        written.push((name.to_owned(), path));
    };
    let set = CaSet::generate(algorithm, now()).unwrap();
    for kind in CaKind::ALL {
        write(kind.file_stem(), set.get(kind).cert_pem());
    }
    for profile in cluster_leaves(Convention::Since129) {
        let ca: &Ca = set.get(profile.issuer);
        let fresh = ca
            .issue(&profile, SubjectKey::Fresh(algorithm), now())
            .unwrap();
        write(&profile.name, &fresh.cert_pem);
        // Hosts send CSRs for these names only; the rest always get a key made by the seed.
        if cert_names::ALL.contains(&profile.name.as_str()) {
            let csr = host_csr(&profile.name);
            let signed = ca.issue(&profile, SubjectKey::Csr(&csr), now()).unwrap();
            write(&format!("{}-from-csr", profile.name), &signed.cert_pem);
        }
    }
    let seed = seed_ca(algorithm, now()).unwrap();
    write("seed-ca", seed.cert_pem());
    let ips: Vec<IpAddr> = vec!["10.77.0.1".parse().unwrap(), "fd00::1".parse().unwrap()];
    let dns = vec!["seed.demo.example".to_owned()];
    let server = seed_server_cert(&seed, &ips, &dns, now()).unwrap();
    write("seed-server", &server.cert_pem);
    let bare = seed_server_cert(&seed, &ips[..1], &[], now()).unwrap();
    write("seed-server-ip-only", &bare.cert_pem);
    written
}

fn every_certificate_passes_the_linter(algorithm: KeyAlgorithm) {
    if !testkit::require(&["lint_pkix_cert"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let written = issue_everything(algorithm, dir.path());
    assert!(written.len() >= 26, "{} certificates", written.len());
    let failures: Vec<String> = written
        .iter()
        .flat_map(|(name, path)| lint(path).into_iter().map(move |f| format!("{name}: {f}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{}:\n{}",
        algorithm.as_str(),
        failures.join("\n")
    );
}

#[test]
fn every_ecdsa_certificate_passes_the_linter() {
    every_certificate_passes_the_linter(KeyAlgorithm::EcdsaP256);
}

#[test]
fn every_rsa_certificate_passes_the_linter() {
    every_certificate_passes_the_linter(KeyAlgorithm::Rsa2048);
}

#[test]
fn only_the_allowed_names_may_be_single_labels() {
    let finding = |name: &str| format!("Invalid domain name syntax: \"{name}\"");
    assert!(allowed(SINGLE_LABEL_FINDING, &finding(NODE)));
    assert!(allowed(SINGLE_LABEL_FINDING, &finding("localhost")));
    assert!(!allowed(SINGLE_LABEL_FINDING, &finding("other-node")));
    assert!(!allowed(SINGLE_LABEL_FINDING, &finding("demo-m1.")));
    assert!(!allowed("pkix.wrong_der_encoding", &finding(NODE)));
}
