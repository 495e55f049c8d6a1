//! The stand-in binaries against good and bad configs: exact refusals, nothing recorded for a
//! refused config, and what an accepted one leaves behind.

mod support;

use std::path::Path;
use std::process::{Command, Output};

const KUBEADM: &str = env!("CARGO_BIN_EXE_kubeadm-standin");
const KUBELET: &str = env!("CARGO_BIN_EXE_kubelet-standin");

const INIT_V1BETA4: &str = r#"apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: 10.77.0.11
  bindPort: 6443
nodeRegistration:
  name: demo-m1
  criSocket: unix:///run/containerd/containerd.sock
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.33.4
controlPlaneEndpoint: 10.77.0.11:6443
imageRepository: 10.77.0.1:8443/k8s
etcd:
  external:
    endpoints: ["https://10.77.0.11:2379"]
    caFile: /etc/kubernetes/pki/etcd/ca.crt
    certFile: /etc/kubernetes/pki/apiserver-etcd-client.crt
    keyFile: /etc/kubernetes/pki/apiserver-etcd-client.key
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
"#;

const JOIN_V1BETA3: &str = r#"apiVersion: kubeadm.k8s.io/v1beta3
kind: JoinConfiguration
discovery:
  file:
    kubeConfigPath: /etc/kubernetes/discovery.conf
controlPlane:
  localAPIEndpoint:
    advertiseAddress: 10.77.0.12
"#;

/// What the seed gives a master: no front-proxy CA key (the seed signs front-proxy-client).
const PKI: [&str; 11] = [
    "etc/kubernetes/pki/ca.crt",
    "etc/kubernetes/pki/ca.key",
    "etc/kubernetes/pki/sa.key",
    "etc/kubernetes/pki/sa.pub",
    "etc/kubernetes/pki/front-proxy-ca.crt",
    "etc/kubernetes/pki/front-proxy-client.crt",
    "etc/kubernetes/pki/front-proxy-client.key",
    "etc/kubernetes/pki/etcd/ca.crt",
    "etc/kubernetes/pki/apiserver-etcd-client.crt",
    "etc/kubernetes/pki/apiserver-etcd-client.key",
    "etc/kubernetes/discovery.conf",
];

fn root_with_pki() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for f in PKI {
        let p = root.path().join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "x").unwrap();
    }
    root
}

fn run(bin: &str, root: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env("LAUNCHER_STANDIN_ROOT", root)
        .env("PATH", support::PATH)
        .env_remove("LAUNCHER_STANDIN_KUBERNETES_VERSION")
        .output()
        .unwrap()
}

fn put(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// The init config with the API server's port a free one, the fixed ports something here
/// holds ignored, and upload-config and mark-control-plane skipped (no API server runs here).
fn init_on_a_good_host() -> String {
    let port = testkit::free_tcp_port();
    let ignored = support::busy_fixed_ports().join(", ");
    INIT_V1BETA4
        .replace("bindPort: 6443", &format!("bindPort: {port}"))
        .replace(
            "criSocket: unix:///run/containerd/containerd.sock\n",
            &format!(
                "criSocket: unix:///run/containerd/containerd.sock\n  \
                 ignorePreflightErrors: [{ignored}]\nskipPhases: [upload-config, mark-control-plane]\n"
            ),
        )
}

#[test]
fn a_good_init_config_is_accepted_and_recorded() {
    let root = root_with_pki();
    // init signs what is missing with the cluster CA, so that one is real here.
    let cas = cluster::pki::CaSet::generate(
        cluster::pki::KeyAlgorithm::EcdsaP256,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap()
    .to_files();
    for name in ["ca.crt", "ca.key"] {
        put(
            root.path(),
            &format!("etc/kubernetes/pki/{name}"),
            &cas[name],
        );
    }
    let _cri = support::good_host(root.path());
    let config = init_on_a_good_host();
    put(root.path(), "etc/kubernetes/kubeadm.yaml", &config);
    let out = run(
        KUBEADM,
        root.path(),
        &["init", "--config", "/etc/kubernetes/kubeadm.yaml"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("stand-in only"), "{stdout}");
    let rec = root.path().join("var/lib/launcher/standin");
    assert_eq!(
        std::fs::read_to_string(rec.join("kubeadm-init.yaml")).unwrap(),
        config
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rec.join("kubeadm-init.json")).unwrap()).unwrap();
    assert_eq!(json["checked"]["api_version"], "kubeadm.k8s.io/v1beta4");
    assert_eq!(json["checked"]["kubernetes_version"], "v1.33.4");
    assert_eq!(json["checked"]["files"].as_array().unwrap().len(), 7);
    // With ca.key, kubeadm makes what the seed does not give; front-proxy-client is given.
    assert_eq!(
        json["checked"]["generated"],
        serde_json::json!([
            "/etc/kubernetes/pki/apiserver.crt",
            "/etc/kubernetes/pki/apiserver.key",
            "/etc/kubernetes/pki/apiserver-kubelet-client.crt",
            "/etc/kubernetes/pki/apiserver-kubelet-client.key",
            "/etc/kubernetes/admin.conf",
            "/etc/kubernetes/controller-manager.conf",
            "/etc/kubernetes/scheduler.conf",
            "/etc/kubernetes/kubelet.conf",
            "/etc/kubernetes/super-admin.conf",
        ])
    );
    let kubelet = std::fs::read_to_string(root.path().join("var/lib/kubelet/config.yaml")).unwrap();
    assert!(kubelet.contains("cgroupDriver: systemd"));
}

#[test]
fn a_worker_join_refuses_a_ca_already_in_place() {
    let root = root_with_pki();
    let worker = JOIN_V1BETA3.replace(
        "controlPlane:\n  localAPIEndpoint:\n    advertiseAddress: 10.77.0.12\n",
        "",
    );
    assert!(!worker.contains("controlPlane"));
    put(root.path(), "etc/kubernetes/join.yaml", &worker);
    let out = run(
        KUBEADM,
        root.path(),
        &["join", "--config", "/etc/kubernetes/join.yaml"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "kubeadm-standin: refused: /etc/kubernetes/join.yaml: caCertPath names /etc/kubernetes/pki/ca.crt, which exists: kubeadm join refuses it on a worker (preflight FileAvailable)"
    );
    std::fs::remove_file(root.path().join("etc/kubernetes/pki/ca.crt")).unwrap();
    let out = run(
        KUBEADM,
        root.path(),
        &["join", "--config", "/etc/kubernetes/join.yaml"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_kubeadm_configs_are_refused_with_exact_errors() {
    let f = "/etc/kubernetes/kubeadm.yaml";
    let cases: Vec<(&str, String, &str, Option<&str>)> = vec![
        (
            "v1beta3 for 1.33",
            INIT_V1BETA4.replace("kubeadm.k8s.io/v1beta4", "kubeadm.k8s.io/v1beta3"),
            "kubeadm-standin: refused: /etc/kubernetes/kubeadm.yaml: kubernetesVersion v1.33.4 needs kubeadm.k8s.io/v1beta4, the file has kubeadm.k8s.io/v1beta3",
            None,
        ),
        (
            "v1beta4 for 1.30",
            INIT_V1BETA4.replace("v1.33.4", "v1.30.2"),
            "kubeadm-standin: refused: /etc/kubernetes/kubeadm.yaml: kubernetesVersion v1.30.2 needs kubeadm.k8s.io/v1beta3, the file has kubeadm.k8s.io/v1beta4",
            None,
        ),
        (
            "unpinned version",
            INIT_V1BETA4.replace("kubernetesVersion: v1.33.4\n", ""),
            "kubeadm-standin: refused: /etc/kubernetes/kubeadm.yaml: no ClusterConfiguration.kubernetesVersion: an unpinned kubeadm would fetch the version from the internet",
            None,
        ),
        (
            "unknown field",
            INIT_V1BETA4.replace("  bindPort: 6443\n", "  bindPort: 6443\n  bindAddress: x\n"),
            "kubeadm-standin: refused: /etc/kubernetes/kubeadm.yaml: document 1 (kubeadm.k8s.io/v1beta4 InitConfiguration) does not match kubeadm's schema:\n  /localAPIEndpoint: Additional properties are not allowed ('bindAddress' was unexpected)",
            None,
        ),
        (
            "number where a string belongs",
            INIT_V1BETA4.replace("name: demo-m1", "name: 7"),
            "kubeadm-standin: refused: /etc/kubernetes/kubeadm.yaml: document 1 (kubeadm.k8s.io/v1beta4 InitConfiguration) does not match kubeadm's schema:\n  /nodeRegistration/name: 7 is not of type \"string\"",
            None,
        ),
        (
            "missing etcd client key",
            INIT_V1BETA4.to_string(),
            "kubeadm-standin: refused: /etc/kubernetes/kubeadm.yaml: etcd.external.keyFile names /etc/kubernetes/pki/apiserver-etcd-client.key, which does not exist",
            Some("etc/kubernetes/pki/apiserver-etcd-client.key"),
        ),
        (
            "missing CA key",
            INIT_V1BETA4.to_string(),
            "kubeadm-standin: refused: /etc/kubernetes/kubeadm.yaml: /etc/kubernetes/pki/ca.key is absent, so kubeadm takes the CA as external (UsingExternalCA) and needs /etc/kubernetes/pki/apiserver.crt, which does not exist",
            Some("etc/kubernetes/pki/ca.key"),
        ),
        (
            "missing front-proxy client key",
            INIT_V1BETA4.to_string(),
            "kubeadm-standin: refused: /etc/kubernetes/kubeadm.yaml: /etc/kubernetes/pki/front-proxy-ca.key is absent, so kubeadm takes the front-proxy CA as external (UsingExternalFrontProxyCA) and needs /etc/kubernetes/pki/front-proxy-client.key, which does not exist",
            Some("etc/kubernetes/pki/front-proxy-client.key"),
        ),
        (
            "join kind for init",
            JOIN_V1BETA3.to_string(),
            "kubeadm-standin: refused: /etc/kubernetes/kubeadm.yaml: document 1: kubeadm init does not take a JoinConfiguration (it takes InitConfiguration, ClusterConfiguration)",
            None,
        ),
        (
            "foreign document",
            format!("{INIT_V1BETA4}---\napiVersion: v1\nkind: ConfigMap\n"),
            "kubeadm-standin: refused: /etc/kubernetes/kubeadm.yaml: document 4: v1 ConfigMap is not a kubeadm config (kubeadm.k8s.io/v1beta3 or v1beta4) nor a kubelet/kube-proxy config",
            None,
        ),
        (
            "not yaml",
            "apiVersion: [\n".to_string(),
            "kubeadm-standin: refused: /etc/kubernetes/kubeadm.yaml: document 1: not valid YAML",
            None,
        ),
    ];
    for (name, text, want, remove) in cases {
        let root = root_with_pki();
        put(root.path(), "etc/kubernetes/kubeadm.yaml", &text);
        if let Some(r) = remove {
            std::fs::remove_file(root.path().join(r)).unwrap();
        }
        let out = run(KUBEADM, root.path(), &["init", "--config", f]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.starts_with(want),
            "{name}:\n want {want:?}\n got  {stderr:?}"
        );
        assert!(
            !root.path().join("var/lib/launcher/standin").exists(),
            "{name}: recorded"
        );
        assert!(
            !root.path().join("var/lib/kubelet").exists(),
            "{name}: wrote outputs"
        );
    }
}

#[test]
fn a_join_is_checked_against_the_known_kubernetes_version_and_its_files() {
    let root = root_with_pki();
    put(root.path(), "etc/kubernetes/join.yaml", JOIN_V1BETA3);
    put(root.path(), "etc/launcher/kubernetes-version", "v1.33.4\n");
    let out = run(
        KUBEADM,
        root.path(),
        &["join", "--config", "/etc/kubernetes/join.yaml"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "kubeadm-standin: refused: /etc/kubernetes/join.yaml: kubernetesVersion v1.33.4 needs kubeadm.k8s.io/v1beta4, the file has kubeadm.k8s.io/v1beta3"
    );
    std::fs::remove_file(root.path().join("etc/launcher/kubernetes-version")).unwrap();
    std::fs::remove_file(root.path().join("etc/kubernetes/pki/sa.pub")).unwrap();
    let out = run(
        KUBEADM,
        root.path(),
        &["join", "--config", "/etc/kubernetes/join.yaml"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "kubeadm-standin: refused: /etc/kubernetes/join.yaml: controlPlane (shared certificates) names /etc/kubernetes/pki/sa.pub, which does not exist"
    );
}

#[test]
fn other_commands_and_flags_are_refused_and_help_says_stand_in() {
    let root = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (
            &["upgrade", "apply"],
            "kubeadm-standin: kubeadm-standin does not stand in for `kubeadm upgrade` (only init, join, reset, config images list, version)",
        ),
        (
            &["reset"],
            "kubeadm-standin: kubeadm-standin reset: refusing to ask for confirmation: pass --force",
        ),
        (
            &["reset", "--force", "--cleanup-tmp-dir"],
            "kubeadm-standin: kubeadm-standin reset: only `--force` and `--cri-socket SOCKET` are accepted, got \"--cleanup-tmp-dir\"",
        ),
        (
            &["init"],
            "kubeadm-standin: kubeadm-standin init: only `--config FILE` is accepted, got []",
        ),
        (
            &["init", "--config", "/a", "--skip-phases", "x"],
            "kubeadm-standin: kubeadm-standin init: only `--config FILE` is accepted, got [\"--config\", \"/a\", \"--skip-phases\", \"x\"]",
        ),
        (
            &["init", "--config", "/nope.yaml"],
            "kubeadm-standin: reading ",
        ),
    ];
    // A refused reset removes nothing.
    let manifest = root
        .path()
        .join("etc/kubernetes/manifests/kube-apiserver.yaml");
    std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
    std::fs::write(&manifest, "kept").unwrap();
    for (args, want) in cases {
        let out = run(KUBEADM, root.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr.starts_with(want), "{args:?}: {stderr}");
        assert_eq!(std::fs::read_to_string(&manifest).unwrap(), "kept");
    }
    let help = run(KUBEADM, root.path(), &["--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("STAND-IN for Kubernetes' kubeadm"));
    let help = run(KUBELET, root.path(), &["--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("STAND-IN for Kubernetes' kubelet"));
}

const KUBELET_CONFIG: &str = "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
";

const KUBECONFIG: &str = "apiVersion: v1
kind: Config
current-context: node
contexts:
- name: node
  context: {cluster: demo, user: node}
clusters:
- name: demo
  cluster:
    server: https://10.77.0.11:6443
    certificate-authority: /etc/kubernetes/pki/ca.crt
users:
- name: node
  user:
    client-certificate: /var/lib/kubelet/pki/kubelet-client.crt
    client-key: /var/lib/kubelet/pki/kubelet-client.key
";

#[test]
fn the_kubelet_checks_its_config_and_kubeconfig() {
    let root = root_with_pki();
    let r = root.path();
    put(r, "var/lib/kubelet/config.yaml", KUBELET_CONFIG);
    put(r, "etc/kubernetes/kubelet.conf", KUBECONFIG);
    put(r, "var/lib/kubelet/pki/kubelet-client.crt", "x");
    let args = [
        "--config",
        "/var/lib/kubelet/config.yaml",
        "--kubeconfig=/etc/kubernetes/kubelet.conf",
        "--exit-after-checks",
    ];
    let out = run(KUBELET, r, &args);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "kubelet-standin: refused: /etc/kubernetes/kubelet.conf: client-key names /var/lib/kubelet/pki/kubelet-client.key, which does not exist"
    );
    assert!(!r.join("var/lib/launcher/standin/kubelet.json").exists());
    // Files that exist but hold no certificate and key are refused too.
    put(r, "var/lib/kubelet/pki/kubelet-client.key", "x");
    let out = run(KUBELET, r, &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "kubelet-standin: refused: /etc/kubernetes/kubelet.conf: the cluster's CA holds no PEM certificate"
    );
    assert!(!r.join("var/lib/launcher/standin/kubelet.json").exists());
    let (cert, key) = node_credential("w1");
    put(r, "etc/kubernetes/pki/ca.crt", &cert.0);
    put(r, "var/lib/kubelet/pki/kubelet-client.crt", &cert.1);
    put(r, "var/lib/kubelet/pki/kubelet-client.key", &key);
    put(r, "etc/hostname", "w1\n");
    let out = run(KUBELET, r, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(r.join("var/lib/launcher/standin/kubelet.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["server"], "https://10.77.0.11:6443");
    assert_eq!(json["bootstrap_kubeconfig"], serde_json::Value::Null);

    // As kubeadm's kubelet drop-in starts it (10-kubeadm.conf with kubeadm-flags.env).
    let drop_in = [
        "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
        "--kubeconfig=/etc/kubernetes/kubelet.conf",
        "--config=/var/lib/kubelet/config.yaml",
        "--container-runtime-endpoint=unix:///run/containerd/containerd.sock",
        "--exit-after-checks",
    ];
    let out = run(KUBELET, r, &drop_in);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(r.join("var/lib/launcher/standin/kubelet.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        json["bootstrap_kubeconfig"],
        "/etc/kubernetes/bootstrap-kubelet.conf"
    );

    put(
        r,
        "var/lib/kubelet/config.yaml",
        &KUBELET_CONFIG.replace("v1beta1", "v1"),
    );
    let out = run(KUBELET, r, &args);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "kubelet-standin: refused: /var/lib/kubelet/config.yaml: kubelet.config.k8s.io/v1 KubeletConfiguration is not a kubelet.config.k8s.io/v1beta1 KubeletConfiguration"
    );
    put(r, "var/lib/kubelet/config.yaml", KUBELET_CONFIG);
    put(
        r,
        "etc/kubernetes/kubelet.conf",
        &KUBECONFIG.replace("kind: Config", "kind: Pod"),
    );
    let out = run(KUBELET, r, &args);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "kubelet-standin: refused: /etc/kubernetes/kubelet.conf: kind Pod is not Config (a kubeconfig)"
    );
    // client-go takes a kubeconfig without apiVersion and kind; so does the stand-in.
    put(
        r,
        "etc/kubernetes/kubelet.conf",
        &KUBECONFIG.replace("apiVersion: v1\nkind: Config\n", ""),
    );
    assert!(run(KUBELET, r, &args).status.success());
    let out = run(
        KUBELET,
        r,
        &["--config", "/a", "--kubeconfig", "/b", "--v=2"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "kubelet-standin: kubelet-standin does not accept \"--v\" (see --help)"
    );
}

#[test]
fn the_kubelet_stays_running_like_a_daemon() {
    let root = root_with_pki();
    let r = root.path();
    put(r, "var/lib/kubelet/config.yaml", KUBELET_CONFIG);
    // No API server answers on this loopback port: the daemon keeps running and retrying.
    let server = format!("https://127.0.0.1:{}", testkit::free_tcp_port());
    put(
        r,
        "etc/kubernetes/kubelet.conf",
        &KUBECONFIG.replace("https://10.77.0.11:6443", &server),
    );
    let (cert, key) = node_credential("w1");
    put(r, "etc/kubernetes/pki/ca.crt", &cert.0);
    put(r, "var/lib/kubelet/pki/kubelet-client.crt", &cert.1);
    put(r, "var/lib/kubelet/pki/kubelet-client.key", &key);
    let mut child = Command::new(KUBELET)
        .args([
            "--config",
            "/var/lib/kubelet/config.yaml",
            "--kubeconfig",
            "/etc/kubernetes/kubelet.conf",
            "--hostname-override",
            "w1",
            "--node-ip",
            "127.0.0.1",
        ])
        .env("LAUNCHER_STANDIN_ROOT", r)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let recorded = r.join("var/lib/launcher/standin/kubelet.json");
    let start = std::time::Instant::now();
    while !recorded.exists() && start.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(recorded.exists());
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(child.try_wait().unwrap().is_none(), "the stand-in exited");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A cluster CA (PEM) and a node's client certificate and key signed by it.
fn node_credential(node: &str) -> ((String, String), String) {
    use cluster::pki::{Ca, CaKind, CertProfile, KeyAlgorithm, SubjectKey, Usage};
    let now = time::OffsetDateTime::now_utc();
    let ca = Ca::generate("kubernetes", KeyAlgorithm::EcdsaP256, now).unwrap();
    let profile = CertProfile {
        name: "kubelet-client".into(),
        issuer: CaKind::Kubernetes,
        common_name: format!("system:node:{node}"),
        organization: Some("system:nodes".into()),
        usage: Usage::Client,
        dns_names: Vec::new(),
        ips: Vec::new(),
    };
    let issued = ca
        .issue(&profile, SubjectKey::Fresh(KeyAlgorithm::EcdsaP256), now)
        .unwrap();
    let key = issued.key.unwrap().pem().to_owned();
    ((ca.cert_pem().to_owned(), issued.cert_pem), key)
}
