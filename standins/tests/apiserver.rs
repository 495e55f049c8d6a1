//! `kube-apiserver-standin` against a real etcd (mutual TLS) and the real `kubectl`: an admin
//! lists nodes, a node registers itself, its Lease and its Ready condition, and may not touch
//! another node; a stranger's certificate is refused; `/readyz` follows etcd.

use cluster::pki::{
    Ca, CaKind, CertProfile, ClientCredential, Convention, KeyAlgorithm, Kubeconfig, SubjectKey,
    Usage,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::ChildGuard;

const ALGORITHM: KeyAlgorithm = KeyAlgorithm::EcdsaP256;

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// Issues `profile` from `ca` and writes `<name>.crt`/`<name>.key` into `dir`.
fn issue(ca: &Ca, profile: &CertProfile, dir: &Path, name: &str) -> (String, String) {
    let issued = ca
        .issue(profile, SubjectKey::Fresh(ALGORITHM), now())
        .unwrap();
    let key = issued.key.unwrap().pem().to_owned();
    std::fs::write(dir.join(format!("{name}.crt")), &issued.cert_pem).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), &key).unwrap();
    (issued.cert_pem, key)
}

fn client(cn: &str, org: Option<&str>) -> CertProfile {
    CertProfile {
        name: cn.to_owned(),
        issuer: CaKind::Kubernetes,
        common_name: cn.to_owned(),
        organization: org.map(str::to_owned),
        usage: Usage::Client,
        dns_names: Vec::new(),
        ips: Vec::new(),
    }
}

/// Everything the processes of the test read.
struct Setup {
    dir: PathBuf,
    ca_pem: String,
    server: String,
    etcd_url: String,
}

impl Setup {
    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// A kubeconfig for `cn`/`org` signed by `ca`, written as `<file>`.
    fn kubeconfig(&self, ca: &Ca, cn: &str, org: Option<&str>, file: &str) -> String {
        let (cert_pem, key_pem) = issue(ca, &client(cn, org), &self.dir, file);
        let config = Kubeconfig {
            cluster_name: "kubernetes".to_owned(),
            server: self.server.clone(),
            ca_pem: self.ca_pem.clone(),
            user: cn.to_owned(),
            credential: ClientCredential::Embedded { cert_pem, key_pem },
        };
        std::fs::write(self.dir.join(file), config.render()).unwrap();
        self.path(file)
    }

    /// A blocking HTTPS client presenting `<name>.crt`/`<name>.key`.
    fn http(&self, name: &str) -> reqwest::blocking::Client {
        let read = |f: String| std::fs::read(self.dir.join(f)).unwrap();
        let mut pem = read(format!("{name}.crt"));
        pem.extend(read(format!("{name}.key")));
        reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .identity(reqwest::Identity::from_pem(&pem).unwrap())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }
}

fn start_etcd(setup: &Setup, peer: u16) -> ChildGuard {
    let log = std::fs::File::create(setup.dir.join("etcd.log")).unwrap();
    let mut cmd = Command::new(testkit::which("etcd").unwrap());
    cmd.arg("--name=e1")
        .arg(format!("--data-dir={}", setup.path("etcd.data")))
        .arg(format!("--listen-client-urls={}", setup.etcd_url))
        .arg(format!("--advertise-client-urls={}", setup.etcd_url))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!(
            "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
        ))
        .arg(format!("--initial-cluster=e1=http://127.0.0.1:{peer}"))
        .arg("--client-cert-auth")
        .arg(format!("--trusted-ca-file={}", setup.path("etcd-ca.crt")))
        .arg(format!("--cert-file={}", setup.path("etcd-server.crt")))
        .arg(format!("--key-file={}", setup.path("etcd-server.key")))
        .arg("--enable-grpc-gateway=true")
        .stdout(Stdio::null())
        .stderr(log);
    ChildGuard::spawn("etcd", &mut cmd)
}

/// The flags kubeadm's manifest gives kube-apiserver, on this test's files and ports.
fn kubeadm_flags(setup: &Setup, port: u16) -> Vec<String> {
    let p = |f: &str| setup.path(f);
    [
        "--advertise-address=127.0.0.1".to_owned(),
        "--allow-privileged=true".to_owned(),
        "--authorization-mode=Node,RBAC".to_owned(),
        "--bind-address=127.0.0.1".to_owned(),
        format!("--client-ca-file={}", p("ca.crt")),
        "--enable-admission-plugins=NodeRestriction".to_owned(),
        "--enable-bootstrap-token-auth=true".to_owned(),
        format!("--etcd-cafile={}", p("etcd-ca.crt")),
        format!("--etcd-certfile={}", p("apiserver-etcd-client.crt")),
        format!("--etcd-keyfile={}", p("apiserver-etcd-client.key")),
        format!("--etcd-servers={}", setup.etcd_url),
        format!("--kubelet-client-certificate={}", p("none.crt")),
        format!("--kubelet-client-key={}", p("none.key")),
        "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname".to_owned(),
        format!("--proxy-client-cert-file={}", p("none.crt")),
        format!("--proxy-client-key-file={}", p("none.key")),
        "--requestheader-allowed-names=front-proxy-client".to_owned(),
        format!("--requestheader-client-ca-file={}", p("none.crt")),
        "--requestheader-extra-headers-prefix=X-Remote-Extra-".to_owned(),
        "--requestheader-group-headers=X-Remote-Group".to_owned(),
        "--requestheader-username-headers=X-Remote-User".to_owned(),
        format!("--secure-port={port}"),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
        format!("--service-account-key-file={}", p("none.pub")),
        format!("--service-account-signing-key-file={}", p("none.key")),
        "--service-cluster-ip-range=10.96.0.0/12".to_owned(),
        format!("--tls-cert-file={}", p("apiserver.crt")),
        format!("--tls-private-key-file={}", p("apiserver.key")),
    ]
    .into()
}

fn standin() -> Command {
    Command::new(testkit::workspace_bin("kube-apiserver-standin"))
}

fn kubectl(kubeconfig: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(testkit::which("kubectl").unwrap())
        .arg(format!("--kubeconfig={kubeconfig}"))
        .arg("--request-timeout=10s")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn json_of(response: reqwest::blocking::Response) -> (u16, Value) {
    let code = response.status().as_u16();
    (code, response.json().unwrap_or(Value::Null))
}

fn assert_status(got: (u16, Value), code: u16, reason: &str) {
    let (got_code, body) = got;
    assert_eq!(got_code, code, "{body}");
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["status"], "Failure", "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert_eq!(body["code"], code, "{body}");
}

#[test]
fn an_unknown_flag_and_a_missing_required_flag_fail_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        dir: dir.path().to_owned(),
        ca_pem: String::new(),
        server: String::new(),
        etcd_url: "https://127.0.0.1:2379".to_owned(),
    };
    let mut unknown = kubeadm_flags(&setup, 6443);
    unknown.push("--no-such-flag=1".to_owned());
    let missing: Vec<String> = kubeadm_flags(&setup, 6443)
        .into_iter()
        .filter(|f| !f.starts_with("--etcd-servers="))
        .collect();
    for (args, want) in [
        (unknown, "Error: unknown flag: --no-such-flag\n"),
        (missing, "Error: --etcd-servers must be specified\n"),
    ] {
        let out = standin().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(String::from_utf8_lossy(&out.stderr), want);
    }
}

#[test]
fn kubectl_and_a_node_against_the_standin_and_real_etcd() {
    if !testkit::require(&["etcd", "etcdctl", "kubectl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (etcd_port, peer_port, port) = (
        testkit::free_tcp_port(),
        testkit::free_tcp_port(),
        testkit::free_tcp_port(),
    );
    let ca = Ca::generate(CaKind::Kubernetes.common_name(), ALGORITHM, now()).unwrap();
    let etcd_ca = Ca::generate(CaKind::Etcd.common_name(), ALGORITHM, now()).unwrap();
    let setup = Setup {
        dir: dir.path().to_owned(),
        ca_pem: ca.cert_pem().to_owned(),
        server: format!("https://127.0.0.1:{port}"),
        etcd_url: format!("https://127.0.0.1:{etcd_port}"),
    };
    std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();
    std::fs::write(dir.path().join("etcd-ca.crt"), etcd_ca.cert_pem()).unwrap();
    let localhost: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let etcd_server = CertProfile::etcd_server("e1", localhost);
    issue(&etcd_ca, &etcd_server, dir.path(), "etcd-server");
    let etcd_client = CertProfile::apiserver_etcd_client(Convention::for_minor(33));
    issue(&etcd_ca, &etcd_client, dir.path(), "apiserver-etcd-client");
    let mut server = client("kube-apiserver", None);
    server.usage = Usage::Server;
    server.ips = vec![localhost];
    server.dns_names = vec!["localhost".to_owned()];
    issue(&ca, &server, dir.path(), "apiserver");

    let mut etcd = start_etcd(&setup, peer_port);
    let log = std::fs::File::create(dir.path().join("standin.log")).unwrap();
    let mut cmd = standin();
    cmd.args(kubeadm_flags(&setup, port))
        .stdout(Stdio::null())
        .stderr(log);
    let _standin = ChildGuard::spawn("kube-apiserver-standin", &mut cmd);

    let admin = setup.kubeconfig(
        &ca,
        "kubernetes-admin",
        Some("kubeadm:cluster-admins"),
        "admin",
    );
    let node = setup.kubeconfig(&ca, "system:node:w1", Some("system:nodes"), "node");
    let stranger_ca = Ca::generate("kubernetes", ALGORITHM, now()).unwrap();
    setup.kubeconfig(
        &stranger_ca,
        "kubernetes-admin",
        Some("system:masters"),
        "stranger",
    );
    let (admin_http, node_http) = (setup.http("admin"), setup.http("node"));
    let url = |path: &str| format!("{}{path}", setup.server);

    testkit::wait_for("/readyz to answer 200", Duration::from_secs(30), || {
        let r = admin_http.get(url("/readyz")).send().ok()?;
        r.status().is_success().then_some(())
    });

    // The installed kubectl picks its release by the server's version: 1.33 here.
    let (ok, out) = kubectl(&admin, &["version", "-o", "json"]);
    assert!(ok, "{out}");
    let versions: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(versions["serverVersion"]["gitVersion"], "v1.33.0", "{out}");
    assert_eq!(versions["clientVersion"]["minor"], "33", "{out}");
    let (ok, out) = kubectl(&admin, &["get", "nodes"]);
    assert!(ok && out.contains("No resources found"), "{out}");

    // The node registers itself and its Lease, then reports Ready.
    let body = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "w1",
        "labels": {"kubernetes.io/hostname": "w1"}},
        "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady"}],
                   "nodeInfo": {"kubeletVersion": "v1.33.0"}}});
    let (code, created) = json_of(
        node_http
            .post(url("/api/v1/nodes"))
            .json(&body)
            .send()
            .unwrap(),
    );
    assert_eq!(code, 201, "{created}");
    assert!(
        created["metadata"]["resourceVersion"].as_str().is_some(),
        "{created}"
    );
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "w1", "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": "w1", "leaseDurationSeconds": 40}});
    let leases = url("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases");
    let (code, lease) = json_of(node_http.post(&leases).json(&lease).send().unwrap());
    assert_eq!(code, 201, "{lease}");
    // An update from a stale resourceVersion loses; one from the current one wins.
    let mut renewed = lease.clone();
    renewed["spec"]["renewTime"] = json!("2026-01-01T00:00:00.000000Z");
    let (code, after) = json_of(
        node_http
            .put(format!("{leases}/w1"))
            .json(&renewed)
            .send()
            .unwrap(),
    );
    assert_eq!(code, 200, "{after}");
    assert_status(
        json_of(
            node_http
                .put(format!("{leases}/w1"))
                .json(&renewed)
                .send()
                .unwrap(),
        ),
        409,
        "Conflict",
    );

    let ready =
        r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady"}]}}"#;
    let (ok, out) = kubectl(
        &node,
        &[
            "patch",
            "node",
            "w1",
            "--subresource=status",
            "--type=strategic",
            "-p",
            ready,
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&admin, &["get", "nodes"]);
    assert!(ok, "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("w1"))
        .unwrap_or_default();
    assert!(row.split_whitespace().nth(1) == Some("Ready"), "{out}");

    // The Node is in etcd where kube-apiserver keeps it.
    let stored = Command::new(testkit::which("etcdctl").unwrap())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", setup.etcd_url))
        .arg(format!("--cacert={}", setup.path("etcd-ca.crt")))
        .arg(format!(
            "--cert={}",
            setup.path("apiserver-etcd-client.crt")
        ))
        .arg(format!("--key={}", setup.path("apiserver-etcd-client.key")))
        .args(["get", "/registry/minions/w1", "--print-value-only"])
        .output()
        .unwrap();
    let stored: Value = serde_json::from_slice(&stored.stdout).unwrap();
    assert_eq!(
        stored["status"]["conditions"][0]["status"], "True",
        "{stored}"
    );

    // Another node's object is not the node's to change.
    let other = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "w2"}});
    let (code, _) = json_of(
        admin_http
            .post(url("/api/v1/nodes"))
            .json(&other)
            .send()
            .unwrap(),
    );
    assert_eq!(code, 201);
    let patch = node_http
        .patch(url("/api/v1/nodes/w2/status"))
        .header("content-type", "application/strategic-merge-patch+json")
        .body(ready)
        .send()
        .unwrap();
    assert_status(json_of(patch), 403, "Forbidden");
    let (ok, out) = kubectl(
        &node,
        &["patch", "node", "w2", "--subresource=status", "-p", ready],
    );
    assert!(!ok && out.contains("forbidden"), "{out}");

    // The admin deletes w2; it is gone.
    let (code, deleted) = json_of(admin_http.delete(url("/api/v1/nodes/w2")).send().unwrap());
    assert_eq!(
        (code, &deleted["metadata"]["name"]),
        (200, &json!("w2")),
        "{deleted}"
    );
    assert_status(
        json_of(admin_http.get(url("/api/v1/nodes/w2")).send().unwrap()),
        404,
        "NotFound",
    );

    // A certificate from another CA is 401.
    let stranger = setup.http("stranger");
    assert_status(
        json_of(stranger.get(url("/api/v1/nodes")).send().unwrap()),
        401,
        "Unauthorized",
    );

    kubelet_registers_and_renews(&setup, &ca, &admin, &admin_http);

    // Without etcd, /readyz fails.
    etcd.kill();
    let r = admin_http.get(url("/readyz")).send().unwrap();
    assert_eq!(r.status().as_u16(), 500);
    let r = admin_http.get(url("/livez")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

/// Runs `kubelet-standin` under the test's directory as `LAUNCHER_STANDIN_ROOT`, with `/kubelet.yaml`
/// and the kubeconfig `/<kubeconfig>`; its stdout goes to `<log>`.
fn kubelet(setup: &Setup, kubeconfig: &str, node: &str, log: &str) -> ChildGuard {
    let config = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
        authentication:\n  x509:\n    clientCAFile: /ca.crt\n\
        registerWithTaints:\n- key: dedicated\n  value: infra\n  effect: NoSchedule\n";
    std::fs::write(setup.dir.join("kubelet.yaml"), config).unwrap();
    let out = std::fs::File::create(setup.dir.join(log)).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubelet-standin"));
    cmd.env("LAUNCHER_STANDIN_ROOT", &setup.dir)
        .env("KUBELET_STANDIN_VERSION", "v1.33.4")
        .args(["--config", "/kubelet.yaml", "--kubeconfig"])
        .arg(format!("/{kubeconfig}"))
        .args(["--hostname-override", node, "--node-ip", "127.0.0.1"])
        .args(["--node-labels", "tier=gold"])
        .stdout(out)
        .stderr(Stdio::null());
    ChildGuard::spawn("kubelet-standin", &mut cmd)
}

/// The kubelet stand-in registers its Node with its labels and taints, holds its Lease and
/// reports Ready, as `kubectl get nodes` shows; one whose kubeconfig names another CA says why
/// it cannot reach the server and registers nothing.
fn kubelet_registers_and_renews(
    setup: &Setup,
    ca: &Ca,
    admin: &str,
    admin_http: &reqwest::blocking::Client,
) {
    setup.kubeconfig(ca, "system:node:w5", Some("system:nodes"), "w5");
    let _kubelet = kubelet(setup, "w5", "w5", "kubelet.log");
    let url = |path: &str| format!("{}{path}", setup.server);
    let lease = url("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/w5");
    let held = testkit::wait_for("the kubelet's Lease", Duration::from_secs(30), || {
        let (code, body) = json_of(admin_http.get(&lease).send().ok()?);
        (code == 200 && body["spec"]["holderIdentity"] == "w5").then_some(body)
    });
    assert_eq!(held["spec"]["leaseDurationSeconds"], 40, "{held}");
    let (ok, out) = kubectl(admin, &["get", "node", "w5", "-o", "json"]);
    assert!(ok, "{out}");
    let node: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(node["metadata"]["labels"]["tier"], "gold", "{node}");
    assert_eq!(
        node["status"]["addresses"][0]["address"], "127.0.0.1",
        "{node}"
    );
    assert_eq!(
        node["spec"]["taints"],
        json!([{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]),
        "{node}"
    );
    let (ok, out) = kubectl(admin, &["get", "nodes", "--no-headers"]);
    let row = out
        .lines()
        .find(|l| l.starts_with("w5 "))
        .unwrap_or_default();
    assert!(
        ok && row.split_whitespace().nth(1) == Some("Ready"),
        "{out}"
    );
    let log = std::fs::read_to_string(setup.dir.join("kubelet.log")).unwrap();
    assert!(log.contains("(server https://127.0.0.1:"), "{log}");

    // A kubeconfig that trusts another CA: the server's certificate is refused.
    let other = Ca::generate("kubernetes", ALGORITHM, now()).unwrap();
    let wrong = Setup {
        dir: setup.dir.clone(),
        ca_pem: other.cert_pem().to_owned(),
        server: setup.server.clone(),
        etcd_url: setup.etcd_url.clone(),
    };
    wrong.kubeconfig(ca, "system:node:w3", Some("system:nodes"), "w3");
    let _lost = kubelet(setup, "w3", "w3", "stranger-kubelet.log");
    let why = testkit::wait_for(
        "the stranger kubelet's error",
        Duration::from_secs(20),
        || {
            let log = std::fs::read_to_string(setup.dir.join("stranger-kubelet.log")).ok()?;
            log.lines()
                .find(|l| l.contains("retrying"))
                .map(str::to_owned)
        },
    );
    assert!(why.contains("invalid peer certificate"), "{why}");
    let (code, _) = json_of(admin_http.get(url("/api/v1/nodes/w3")).send().unwrap());
    assert_eq!(code, 404);
}
