//! Three real etcd members run from what `launcher-seed gen` writes (RSA-2048 keys): mutual TLS on
//! the client and peer ports, healthy through the healthcheck-client certificate, and closed to a
//! certificate from another cluster's CA.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cluster::spec::ClusterSpec;
use registry_seed::generate;
use testkit::ChildGuard;
use testkit::fixtures::{ClusterFile, host};

const IPS: [&str; 3] = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];

/// A valid spec (the parser refuses loopback host addresses, as a real inventory must), whose
/// masters are then moved to loopback aliases so three members can run on this machine.
fn spec() -> ClusterSpec {
    let text = ClusterFile {
        name: "local".into(),
        kubernetes_version: "v1.30.6".into(),
        key_algorithm: "rsa-2048".into(),
        hosts: (1..=3).map(|n| host(n, None)).collect(),
        ..ClusterFile::demo()
    }
    .render();
    let mut spec = ClusterSpec::parse("local.toml", &text).unwrap().spec;
    for (host, ip) in spec.hosts.iter_mut().zip(IPS) {
        host.ip = Some(ip.parse().unwrap());
    }
    spec
}

/// What `launcher-seed gen` writes for the spec, through the same code.
fn run_gen(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let files = generate::render(&spec(), time::OffsetDateTime::now_utc()).unwrap();
    generate::write_tree(&out, &files).unwrap();
    out
}

/// Starts member `i` from its generated config, with paths moved under the test's directories.
fn start_member(tree: &Path, work: &Path, i: usize) -> ChildGuard {
    let host = tree.join(format!("local-m{}", i + 1));
    let config = std::fs::read_to_string(host.join("etc/etcd/etcd.yaml")).unwrap();
    let pki = format!("{}/", host.join("etc/kubernetes/pki").display());
    let data = work.join(format!("data-{i}"));
    let config = config
        .replace("/etc/kubernetes/pki/", &pki)
        .replace("/var/lib/etcd", data.to_str().unwrap());
    let config_path = work.join(format!("etcd-{i}.yaml"));
    std::fs::write(&config_path, config).unwrap();
    let log = std::fs::File::create(work.join(format!("etcd-{i}.log"))).unwrap();
    ChildGuard::spawn(
        &format!("etcd member {i}"),
        Command::new(testkit::which("etcd").unwrap())
            .arg("--config-file")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log),
    )
}

fn etcdctl(cacert: &Path, cert: &Path, key: &Path, args: &[&str]) -> Output {
    let endpoints: Vec<String> = IPS.iter().map(|ip| format!("https://{ip}:2379")).collect();
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .arg("--cacert")
        .arg(cacert)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .args(["--dial-timeout=2s", "--command-timeout=4s"])
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn three_members_run_on_generated_certificates() {
    if !testkit::require(&["etcd", "etcdctl", "curl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = run_gen(dir.path(), "tree");
    let other = run_gen(dir.path(), "other");
    let mut members: Vec<ChildGuard> = (0..3).map(|i| start_member(&tree, dir.path(), i)).collect();

    let pki = tree.join("local-m1/etc/kubernetes/pki");
    let ca = pki.join("etcd/ca.crt");
    let (cert, key) = (
        pki.join("etcd/healthcheck-client.crt"),
        pki.join("etcd/healthcheck-client.key"),
    );
    let health = testkit::wait_for(
        "three healthy etcd members",
        Duration::from_secs(60),
        || {
            for (i, member) in members.iter_mut().enumerate() {
                let log = std::fs::read_to_string(dir.path().join(format!("etcd-{i}.log")));
                assert!(
                    member.running(),
                    "etcd member {i} exited: {}",
                    log.unwrap_or_default()
                );
            }
            let out = etcdctl(&ca, &cert, &key, &["endpoint", "health"]);
            out.status.success().then(|| text(&out))
        },
    );
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");

    let list = etcdctl(&ca, &cert, &key, &["member", "list"]);
    let list = text(&list);
    for (i, ip) in IPS.iter().enumerate() {
        assert!(
            list.contains(&format!("local-m{}, https://{ip}:2380", i + 1)),
            "{list}"
        );
    }

    // The same certificate names from another cluster's CA are refused on the client port...
    let other_pki = other.join("local-m1/etc/kubernetes/pki");
    let refused = etcdctl(
        &ca,
        &other_pki.join("etcd/healthcheck-client.crt"),
        &other_pki.join("etcd/healthcheck-client.key"),
        &["endpoint", "health"],
    );
    assert!(
        !refused.status.success(),
        "a foreign client certificate was let in: {}",
        text(&refused)
    );

    // ...and on the peer port, which a peer certificate of this cluster may use.
    let peer = |pki: &Path| {
        Command::new("curl")
            .args([
                "--http1.1",
                "--silent",
                "--show-error",
                "--max-time",
                "5",
                "--cacert",
            ])
            .arg(&ca)
            .arg("--cert")
            .arg(pki.join("etcd/peer.crt"))
            .arg("--key")
            .arg(pki.join("etcd/peer.key"))
            .arg("https://127.0.0.12:2380/members")
            .output()
            .unwrap()
    };
    let ours = peer(&pki);
    assert!(
        ours.status.success() && text(&ours).contains("local-m2"),
        "{}",
        text(&ours)
    );
    let theirs = peer(&other_pki);
    assert!(
        !theirs.status.success(),
        "a foreign peer certificate was let in: {}",
        text(&theirs)
    );
}
