//! `launcher-seed gen` writes a tree per host that openssl and kubectl accept, with kubeadm's
//! names, and gives workers no CA key or admin credential.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use testkit::fixtures::{ClusterFile, host};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The demo with five inventory hosts, the second a worker.
fn spec_text() -> String {
    let roles = [None, Some("worker"), None, None, None];
    ClusterFile {
        hosts: (1..=5).zip(roles).map(|(n, role)| host(n, role)).collect(),
        ..ClusterFile::demo()
    }
    .render()
}

fn run_gen(spec: &Path, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_launcher-seed"))
        .args(["gen", "--cluster"])
        .arg(spec)
        .arg("--out")
        .arg(out)
        .output()
        .expect("running launcher-seed gen")
}

struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

fn generate(spec_text: &str) -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("cluster.toml");
    std::fs::write(&spec, spec_text).unwrap();
    let root = dir.path().join("out");
    let out = run_gen(&spec, &root);
    assert!(
        out.status.success(),
        "gen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Tree { _dir: dir, root }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for entry in walkdir::WalkDir::new(dir) {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            all.push(entry.path().strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    all.sort();
    all
}

/// What a certificate says, in the words of the table below.
#[derive(Debug, PartialEq, Eq)]
struct Facts {
    cn: String,
    o: Option<String>,
    ca: bool,
    key_usage: Vec<&'static str>,
    eku: Vec<&'static str>,
    sans: Vec<String>,
}

fn facts(der: &[u8]) -> Facts {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    let ku = cert
        .key_usage()
        .unwrap()
        .expect("every certificate has key usage");
    assert!(ku.critical, "key usage is critical");
    let mut key_usage = Vec::new();
    if ku.value.digital_signature() {
        key_usage.push("digitalSignature");
    }
    if ku.value.key_encipherment() {
        key_usage.push("keyEncipherment");
    }
    if ku.value.key_cert_sign() {
        key_usage.push("keyCertSign");
    }
    let mut eku = Vec::new();
    if let Some(ext) = cert.extended_key_usage().unwrap() {
        if ext.value.server_auth {
            eku.push("serverAuth");
        }
        if ext.value.client_auth {
            eku.push("clientAuth");
        }
    }
    let mut sans = Vec::new();
    if let Some(ext) = cert.subject_alternative_name().unwrap() {
        for name in &ext.value.general_names {
            sans.push(match name {
                GeneralName::DNSName(d) => format!("DNS:{d}"),
                GeneralName::IPAddress(b) if b.len() == 4 => {
                    format!("IP:{}", IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()))
                }
                GeneralName::IPAddress(b) => {
                    format!("IP:{}", IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()))
                }
                other => format!("{other:?}"),
            });
        }
    }
    Facts {
        cn: cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned(),
        o: cert
            .subject()
            .iter_organization()
            .next()
            .map(|a| a.as_str().unwrap().to_owned()),
        ca: cert.is_ca(),
        key_usage,
        eku,
        sans,
    }
}

fn pem_der(text: &str) -> Vec<u8> {
    pem::parse(text).unwrap().into_contents()
}

fn kubectl(kubeconfig: &Path, jsonpath: &str) -> String {
    let out = Command::new("kubectl")
        .args(["config", "view", "--raw", "--kubeconfig"])
        .arg(kubeconfig)
        .args(["-o", &format!("jsonpath={jsonpath}")])
        .output()
        .expect("running kubectl");
    assert!(
        out.status.success(),
        "kubectl cannot read {}: {}",
        kubeconfig.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The client certificate of a kubeconfig, read by kubectl.
fn kubeconfig_cert(path: &Path) -> Vec<u8> {
    let data = kubectl(path, "{.users[0].user.client-certificate-data}");
    let pem_text = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .unwrap();
    pem_der(std::str::from_utf8(&pem_text).unwrap())
}

fn openssl_verify(ca: &Path, cert: &Path) {
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(ca)
        .arg(cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl refuses {}: {}{}",
        cert.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// The spec's keys are ECDSA, for which RFC 8813 forbids keyEncipherment.
const LEAF: &[&str] = &["digitalSignature"];
const CA: &[&str] = &["digitalSignature", "keyCertSign"];

fn leaf(cn: &str, o: Option<&str>, eku: &[&'static str], sans: &[&str]) -> Facts {
    Facts {
        cn: cn.into(),
        o: o.map(Into::into),
        ca: false,
        key_usage: LEAF.to_vec(),
        eku: eku.to_vec(),
        sans: strs(sans),
    }
}

fn ca(cn: &str) -> Facts {
    Facts {
        cn: cn.into(),
        o: None,
        ca: true,
        key_usage: CA.to_vec(),
        eku: vec![],
        sans: vec![],
    }
}

const CLIENT: &[&str] = &["clientAuth"];
const BOTH: &[&str] = &["serverAuth", "clientAuth"];

#[test]
fn every_certificate_has_kubeadms_names_and_verifies() {
    if !testkit::require(&["openssl"]) {
        return;
    }
    let tree = generate(&spec_text());
    let m1 = tree.root.join("demo-m1");
    let member_sans = [
        "DNS:demo-m1",
        "DNS:localhost",
        "IP:10.77.0.11",
        "IP:127.0.0.1",
        "IP:::1",
    ];
    let table: Vec<(&str, &str, Facts)> = vec![
        ("etc/kubernetes/pki/ca.crt", "ca.crt", ca("kubernetes")),
        (
            "etc/kubernetes/pki/etcd/ca.crt",
            "etcd/ca.crt",
            ca("etcd-ca"),
        ),
        (
            "etc/kubernetes/pki/front-proxy-ca.crt",
            "front-proxy-ca.crt",
            ca("front-proxy-ca"),
        ),
        (
            "etc/kubernetes/pki/apiserver-kubelet-client.crt",
            "ca.crt",
            leaf(
                "kube-apiserver-kubelet-client",
                Some("kubeadm:cluster-admins"),
                CLIENT,
                &[],
            ),
        ),
        (
            "etc/kubernetes/pki/front-proxy-client.crt",
            "front-proxy-ca.crt",
            leaf("front-proxy-client", None, CLIENT, &[]),
        ),
        (
            "etc/kubernetes/pki/etcd/server.crt",
            "etcd/ca.crt",
            leaf("demo-m1", None, BOTH, &member_sans),
        ),
        (
            "etc/kubernetes/pki/etcd/peer.crt",
            "etcd/ca.crt",
            leaf("demo-m1", None, BOTH, &member_sans),
        ),
        (
            "etc/kubernetes/pki/etcd/healthcheck-client.crt",
            "etcd/ca.crt",
            leaf("kube-etcd-healthcheck-client", None, CLIENT, &[]),
        ),
        (
            "etc/kubernetes/pki/apiserver-etcd-client.crt",
            "etcd/ca.crt",
            leaf("kube-apiserver-etcd-client", None, CLIENT, &[]),
        ),
    ];
    let cluster_pki = tree.root.join("cluster/pki");
    for (file, issuer, expected) in &table {
        let path = m1.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(&facts(&pem_der(&text)), expected, "{file}");
        openssl_verify(&cluster_pki.join(issuer), &path);
    }
}

#[test]
fn every_kubeconfig_reads_in_kubectl_with_the_right_user() {
    if !testkit::require(&["openssl", "kubectl"]) {
        return;
    }
    let tree = generate(&spec_text());
    let endpoint = "https://10.77.0.10:6443";
    let table: Vec<(&str, &str, Option<&str>, &str)> = vec![
        (
            "demo-m1/etc/kubernetes/admin.conf",
            "kubernetes-admin",
            Some("kubeadm:cluster-admins"),
            endpoint,
        ),
        (
            "demo-m1/etc/kubernetes/super-admin.conf",
            "kubernetes-super-admin",
            Some("system:masters"),
            endpoint,
        ),
        (
            "demo-m1/etc/kubernetes/controller-manager.conf",
            "system:kube-controller-manager",
            None,
            "https://10.77.0.11:6443",
        ),
        (
            "demo-m1/etc/kubernetes/scheduler.conf",
            "system:kube-scheduler",
            None,
            "https://10.77.0.11:6443",
        ),
        (
            "demo-m1/etc/kubernetes/kubelet.conf",
            "system:node:demo-m1",
            Some("system:nodes"),
            endpoint,
        ),
        (
            "demo-m2/etc/kubernetes/admin.conf",
            "kubernetes-admin",
            Some("kubeadm:cluster-admins"),
            endpoint,
        ),
        (
            "demo-m2/etc/kubernetes/scheduler.conf",
            "system:kube-scheduler",
            None,
            "https://10.77.0.13:6443",
        ),
        (
            "demo-m2/etc/kubernetes/discovery.conf",
            "system:node:demo-m2",
            Some("system:nodes"),
            endpoint,
        ),
        (
            "demo-w1/etc/kubernetes/kubelet.conf",
            "system:node:demo-w1",
            Some("system:nodes"),
            endpoint,
        ),
        (
            "demo-w2/etc/kubernetes/kubelet.conf",
            "system:node:demo-w2",
            Some("system:nodes"),
            endpoint,
        ),
        (
            "cluster/admin.conf",
            "kubernetes-admin",
            Some("kubeadm:cluster-admins"),
            endpoint,
        ),
    ];
    let ca = tree.root.join("cluster/pki/ca.crt");
    let ca_data = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&ca).unwrap());
    for (file, user, group, server) in table {
        let path = tree.root.join(file);
        assert_eq!(kubectl(&path, "{.users[0].name}"), user, "{file}");
        assert_eq!(
            kubectl(&path, "{.clusters[0].cluster.server}"),
            server,
            "{file}"
        );
        assert_eq!(
            kubectl(&path, "{.contexts[0].context.user}"),
            user,
            "{file}"
        );
        assert_eq!(
            kubectl(&path, "{.current-context}"),
            format!("{user}@demo"),
            "{file}"
        );
        assert_eq!(
            kubectl(&path, "{.clusters[0].cluster.certificate-authority-data}"),
            ca_data,
            "{file}"
        );
        let der = kubeconfig_cert(&path);
        assert_eq!(facts(&der), leaf(user, group, CLIENT, &[]), "{file}");
        let pem_path = path.with_extension("client.crt");
        std::fs::write(&pem_path, pem::encode(&pem::Pem::new("CERTIFICATE", der))).unwrap();
        openssl_verify(&ca, &pem_path);
    }
}

#[test]
fn hosts_get_what_their_role_needs_and_workers_no_secrets() {
    let tree = generate(&spec_text());
    let mut hosts: Vec<String> = std::fs::read_dir(&tree.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    hosts.sort();
    assert_eq!(
        hosts,
        [
            ".launcher-gen",
            "cluster",
            "demo-m1",
            "demo-m2",
            "demo-m3",
            "demo-w1",
            "demo-w2"
        ]
    );

    let worker = files_under(&tree.root.join("demo-w1"));
    let expected: Vec<PathBuf> = [
        "etc/kubernetes/kubelet.conf",
        "etc/kubernetes/pki/ca.crt",
        "var/lib/kubelet/config.yaml",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(worker, expected);

    let master = files_under(&tree.root.join("demo-m2"));
    for must in [
        "etc/kubernetes/pki/ca.key",
        "etc/kubernetes/pki/sa.key",
        "etc/kubernetes/pki/sa.pub",
        "etc/kubernetes/pki/front-proxy-ca.crt",
        "etc/kubernetes/pki/front-proxy-client.key",
        "etc/kubernetes/kubeadm.yaml",
        "etc/kubernetes/admin.conf",
        "etc/etcd/etcd.yaml",
        "var/lib/kubelet/config.yaml",
    ] {
        assert!(
            master.contains(&PathBuf::from(must)),
            "demo-m2 lacks {must}"
        );
    }
    // Only the seed signs etcd and front-proxy certificates: masters get neither CA key.
    for never in [
        "etc/kubernetes/pki/etcd/ca.key",
        "etc/kubernetes/pki/front-proxy-ca.key",
        "etc/kubernetes/super-admin.conf",
    ] {
        assert!(
            !master.contains(&PathBuf::from(never)),
            "demo-m2 has {never}"
        );
    }
    assert!(!master.contains(&PathBuf::from("etc/kubernetes/kubelet.conf")));
    assert!(master.contains(&PathBuf::from("etc/kubernetes/discovery.conf")));
    assert!(!master.contains(&PathBuf::from("etc/kubernetes/pki/apiserver.crt")));

    // Private keys and credentials are readable by their owner only.
    for file in files_under(&tree.root) {
        let name = file.to_string_lossy();
        let mode = std::fs::metadata(tree.root.join(&file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        let secret = name.ends_with(".key") || name.ends_with(".conf");
        assert_eq!(mode, if secret { 0o600 } else { 0o644 }, "{name}");
    }
    // No CA or SA private key appears in a worker's files, raw or encoded.
    let keys: Vec<String> = ["ca.key", "etcd/ca.key", "front-proxy-ca.key", "sa.key"]
        .iter()
        .map(|k| std::fs::read_to_string(tree.root.join("cluster/pki").join(k)).unwrap())
        .collect();
    for file in worker {
        let text = std::fs::read_to_string(tree.root.join("demo-w1").join(&file)).unwrap();
        for key in &keys {
            let encoded = base64::engine::general_purpose::STANDARD.encode(key);
            assert!(
                !text.contains(key.as_str()) && !text.contains(&encoded),
                "{}",
                file.display()
            );
        }
    }
}

#[test]
fn gen_refuses_a_directory_it_did_not_write_and_replaces_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("cluster.toml");
    std::fs::write(&spec, spec_text()).unwrap();

    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let out = run_gen(&spec, &foreign);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not empty and was not written by `launcher-seed gen`"),
        "{stderr}"
    );
    assert_eq!(files_under(&foreign), [PathBuf::from("notes.txt")]);

    let ours = dir.path().join("ours");
    assert!(run_gen(&spec, &ours).status.success());
    let first_ca = std::fs::read_to_string(ours.join("cluster/pki/ca.crt")).unwrap();
    assert!(run_gen(&spec, &ours).status.success());
    let second_ca = std::fs::read_to_string(ours.join("cluster/pki/ca.crt")).unwrap();
    assert_ne!(first_ca, second_ca, "a rerun makes a new cluster");
    // Nothing is left beside the output: no staging or old trees.
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["cluster.toml", "foreign", "ours"]);
}

#[test]
fn a_bad_spec_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("bad.toml");
    std::fs::write(&spec, spec_text().replace("10.96.0.0/12", "10.96.0.0/33")).unwrap();
    let out_dir = dir.path().join("out");
    let out = run_gen(&spec, &out_dir);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:") && stderr.contains("service_subnet"),
        "{stderr}"
    );
    assert!(!out_dir.exists());
}

/// The CA a certificate of the tree chains to, by kubeadm's layout.
fn issuer_of(path: &Path) -> &'static str {
    let text = path.to_string_lossy();
    if text.contains("/pki/etcd/") || text.ends_with("apiserver-etcd-client.crt") {
        "etcd/ca.crt"
    } else if text.contains("front-proxy") {
        "front-proxy-ca.crt"
    } else {
        "ca.crt"
    }
}

fn check_example(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("out");
    let out = run_gen(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(name),
        &root,
    );
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cas = root.join("cluster/pki");
    let (mut certs, mut confs) = (0, 0);
    for file in files_under(&root) {
        let path = root.join(&file);
        let rel = file.to_string_lossy();
        let worker = rel.contains("-w");
        if rel.ends_with(".crt") {
            openssl_verify(&cas.join(issuer_of(&path)), &path);
            certs += 1;
        } else if rel.ends_with(".conf") {
            let user = kubectl(&path, "{.users[0].name}");
            let client = path.with_extension("client.crt");
            let der = kubeconfig_cert(&path);
            std::fs::write(&client, pem::encode(&pem::Pem::new("CERTIFICATE", der))).unwrap();
            openssl_verify(&cas.join("ca.crt"), &client);
            std::fs::remove_file(&client).unwrap();
            assert!(
                !worker || user.starts_with("system:node:"),
                "{rel}: worker holds {user}"
            );
            confs += 1;
        } else if rel.ends_with("kubeadm.yaml") {
            let script = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../reference/kubeadm-schema/validate.py");
            let check = Command::new("/usr/bin/python3")
                .arg(script)
                .arg(&path)
                .output()
                .unwrap();
            let report = String::from_utf8_lossy(&check.stdout);
            assert!(
                check.status.success() && report.contains("OK "),
                "{rel}: {report}"
            );
        } else if rel.ends_with(".key") {
            assert!(!worker, "{rel}: a worker holds a key file");
            let check = Command::new("openssl")
                .args(["pkey", "-noout", "-in"])
                .arg(&path)
                .output();
            assert!(
                check.unwrap().status.success(),
                "{rel}: openssl cannot read the key"
            );
        }
    }
    // Both examples have three masters and two workers. Certificates: 3 CAs and 6 leaves per
    // master, ca.crt per worker, the CA set. Kubeconfigs: 5 on the first master, 4 on the others
    // (discovery.conf for kubelet.conf, no super-admin.conf), 1 per worker, cluster/admin.conf.
    assert_eq!((certs, confs), (3 * 9 + 2 + 3, 5 + 2 * 4 + 2 + 1), "{name}");
}

#[test]
fn the_example_trees_pass_openssl_and_kubectl() {
    if !testkit::require(&["openssl", "kubectl", "/usr/bin/python3"]) {
        return;
    }
    check_example("cluster.toml");
    check_example("cluster-v1.30.toml");
}
