//! `kubeadm-standin join` with a controlPlane section against the cluster `kubeadm-standin
//! init` made on the first master (a real etcd and the API server stand-in from its manifest):
//! init's upload-config, discovery with the second master's own credential, its manifests,
//! certificates and kubelet files, mark-control-plane; what a node may read; and refused joins
//! that write nothing.

mod support;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use support::control_plane::{client_of, start_api_server, start_etcd};
use support::{kind_mut, put};

const KUBEADM: &str = env!("CARGO_BIN_EXE_kubeadm-standin");
const CONFIG: &str = "/etc/kubernetes/kubeadm.yaml";
const PKI: &str = "etc/kubernetes/pki";
const SEED_SERVER: &str = "https://10.77.0.11:6443";
const KUBECONFIGS: [&str; 3] = ["admin.conf", "kubelet.conf", "discovery.conf"];
/// What the checks print for every joining master: the seed gives no front-proxy CA key.
const FRONT_PROXY_WARNING: &str = "kubeadm-standin: warning (as kubeadm): assuming external key for front-proxy CA: /etc/kubernetes/pki/front-proxy-ca.key is absent\n";

fn m1() -> (&'static str, IpAddr) {
    ("demo-m1", "10.77.0.11".parse().unwrap())
}

fn m2() -> (&'static str, IpAddr) {
    ("demo-m2", "10.77.0.12".parse().unwrap())
}

/// A master's root: the seed's files, a host preflight accepts, its kubeconfigs aimed at the
/// test's API server, its config with a free API server port.
struct Master {
    dir: tempfile::TempDir,
    _cri: std::os::unix::net::UnixListener,
    docs: Vec<Value>,
    port: u16,
}

impl Master {
    fn new(files: &BTreeMap<String, String>, server: &str, port: u16) -> Master {
        let dir = tempfile::tempdir().unwrap();
        support::write_files(dir.path(), files);
        let cri = support::good_host(dir.path());
        for conf in KUBECONFIGS {
            let path = format!("/etc/kubernetes/{conf}");
            if let Some(text) = files.get(&path) {
                assert!(text.contains(SEED_SERVER), "{conf}");
                put(dir.path(), &path, &text.replace(SEED_SERVER, server));
            }
        }
        let mut docs = support::documents(&files[CONFIG]);
        let (kind, endpoint) = match docs[0]["kind"].as_str() {
            Some("JoinConfiguration") => ("JoinConfiguration", "/controlPlane/localAPIEndpoint"),
            _ => ("InitConfiguration", "/localAPIEndpoint"),
        };
        let doc = kind_mut(&mut docs, kind);
        doc.pointer_mut(endpoint).unwrap()["bindPort"] = json!(port);
        doc["nodeRegistration"]["ignorePreflightErrors"] = json!(support::busy_fixed_ports());
        doc["timeouts"]["controlPlaneComponentHealthCheck"] = json!("40s");
        doc["timeouts"]["kubernetesAPICall"] = json!("20s");
        doc["timeouts"]["discovery"] = json!("3s");
        Master {
            dir,
            _cri: cri,
            docs,
            port,
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn doc(&mut self, kind: &str) -> &mut Value {
        kind_mut(&mut self.docs, kind)
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root().join(rel)).unwrap()
    }

    /// `kubeadm-standin <verb>` started on this root with its config written out.
    fn start(&self, verb: &str) -> Child {
        put(self.root(), CONFIG, &support::render(&self.docs));
        Command::new(KUBEADM)
            .args([verb, "--config", CONFIG])
            .env("LAUNCHER_STANDIN_ROOT", self.root())
            .env("PATH", support::PATH)
            .env_remove("LAUNCHER_STANDIN_KUBERNETES_VERSION")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn run(&self, verb: &str) -> Output {
        self.start(verb).wait_with_output().unwrap()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
}

/// Registers `node` as its kubelet would, with the credential of `kubeconfig`, once the API
/// server answers.
fn register(server: &str, kubeconfig: &str, node: &str) {
    let kubelet = client_of(kubeconfig);
    let body = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node,
        "labels": {"kubernetes.io/hostname": node}}});
    testkit::wait_for("the Node registered", Duration::from_secs(30), || {
        let sent = kubelet
            .post(format!("{server}/api/v1/nodes"))
            .json(&body)
            .send();
        sent.ok().filter(|r| r.status().as_u16() == 201).map(|_| ())
    });
}

/// The first master after `kubeadm init` (without upload-config), its etcd and API server.
struct Cluster {
    spec: cluster::spec::ClusterSpec,
    cas: cluster::pki::CaSet,
    m1: Master,
    server: String,
    etcd_port: u16,
    _etcd: testkit::ChildGuard,
    _api: testkit::ChildGuard,
}

fn cluster_without_upload() -> Cluster {
    let spec = cluster::spec::ClusterSpec::parse(
        "cluster.toml",
        &testkit::fixtures::ClusterFile {
            masters: 2,
            ..testkit::fixtures::ClusterFile::one_master("10.77.0.1:8443")
        }
        .render(),
    )
    .unwrap()
    .spec;
    let now = time::OffsetDateTime::now_utc();
    let cas = cluster::pki::CaSet::generate(cluster::pki::KeyAlgorithm::EcdsaP256, now).unwrap();
    let port = testkit::free_tcp_port();
    let server = format!("https://127.0.0.1:{port}");
    let files = support::master_files(&spec, &cas, m1(), &[m1()]);
    let mut m1 = Master::new(&files, &server, port);
    let etcd_port = testkit::free_tcp_port();
    let cluster = m1.doc("ClusterConfiguration");
    cluster["etcd"]["external"]["endpoints"] = json!([format!("https://127.0.0.1:{etcd_port}")]);
    let sans = cluster["apiServer"]["certSANs"].as_array_mut().unwrap();
    sans.push(json!("127.0.0.1"));
    m1.doc("InitConfiguration")["skipPhases"] = json!(["upload-config"]);
    let etcd = start_etcd(m1.root(), etcd_port);
    let init = m1.start("init");
    let manifest = m1
        .root()
        .join("etc/kubernetes/manifests/kube-apiserver.yaml");
    testkit::wait_for("the manifests", Duration::from_secs(20), || {
        manifest.exists().then_some(())
    });
    let api = start_api_server(m1.root());
    register(&server, &m1.read("etc/kubernetes/kubelet.conf"), "demo-m1");
    assert_ok(&init.wait_with_output().unwrap());
    Cluster {
        spec,
        cas,
        m1,
        server,
        etcd_port,
        _etcd: etcd,
        _api: api,
    }
}

impl Cluster {
    /// A joining master's root, as the seed gives it.
    fn joining(&self) -> Master {
        let files = support::master_files(&self.spec, &self.cas, m2(), &[m1(), m2()]);
        Master::new(&files, &self.server, testkit::free_tcp_port())
    }

    fn admin(&self) -> reqwest::blocking::Client {
        client_of(&self.m1.read("etc/kubernetes/admin.conf"))
    }

    fn config_map(&self, client: &reqwest::blocking::Client, name: &str) -> (u16, Value) {
        let url = format!(
            "{}/api/v1/namespaces/kube-system/configmaps/{name}",
            self.server
        );
        support::kube::json_of(client.get(url).send().unwrap())
    }
}

/// A join refused with exactly `want` on stderr, its root as it was.
fn assert_refused(m: &Master, name: &str, want: &str) {
    put(m.root(), CONFIG, &support::render(&m.docs));
    let before = support::snapshot(m.root());
    let out = m.run("join");
    assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
    assert_eq!(stderr(&out), want, "{name}");
    assert!(
        support::snapshot(m.root()) == before,
        "{name}: something was written"
    );
}

#[test]
fn a_second_master_joins_the_cluster_init_made() {
    if !testkit::require(&["etcd", "openssl"]) {
        return;
    }
    let c = cluster_without_upload();
    assert_refused(
        &c.joining(),
        "no kubeadm-config in the cluster",
        &format!(
            "{FRONT_PROXY_WARNING}kubeadm-standin: error execution phase preflight: unable to fetch the kubeadm-config ConfigMap after timeout of 3s: 404 configmaps \"kubeadm-config\" not found\n"
        ),
    );
    upload_config(&c);
    let m2 = c.joining();
    let given = support::snapshot(m2.root());
    let join = m2.start("join");
    register(
        &c.server,
        &m2.read("etc/kubernetes/discovery.conf"),
        "demo-m2",
    );
    let out = join.wait_with_output().unwrap();
    assert_ok(&out);
    for (path, bytes) in &given {
        if path.starts_with("etc/kubernetes/") && path != CONFIG.trim_start_matches('/') {
            assert_eq!(
                support::snapshot(m2.root()).get(path),
                Some(bytes),
                "{path} changed"
            );
        }
    }
    joined_files(&c, &m2);
    let (code, node) = support::kube::json_of(
        c.admin()
            .get(format!("{}/api/v1/nodes/demo-m2", c.server))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 200);
    assert_eq!(
        node["metadata"]["labels"]["node-role.kubernetes.io/control-plane"], "",
        "{node}"
    );
    assert_eq!(
        node["spec"]["taints"],
        json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}])
    );
    what_a_node_may_do(&c, &m2);
    refused_joins(&c);
    only_the_shared_certificates(&c);
}

/// A joining master given only what kubeadm shares between control planes gets the rest
/// made; the front-proxy CA without its key is only a warning, as kubeadm's
/// `validateCACertAndKey` has it.
fn only_the_shared_certificates(c: &Cluster) {
    let mut m = c.joining();
    for file in [
        "pki/apiserver-kubelet-client.crt",
        "pki/apiserver-kubelet-client.key",
        "admin.conf",
        "controller-manager.conf",
        "scheduler.conf",
    ] {
        std::fs::remove_file(m.root().join("etc/kubernetes").join(file)).unwrap();
    }
    m.doc("JoinConfiguration")["skipPhases"] = json!(["control-plane-join/mark-control-plane"]);
    let out = m.run("join");
    assert_ok(&out);
    assert_eq!(
        stderr(&out).lines().next(),
        FRONT_PROXY_WARNING.lines().next()
    );
    let record: Value =
        serde_json::from_str(&m.read("var/lib/launcher/standin/kubeadm-join.json")).unwrap();
    assert_eq!(
        record["checked"]["generated"],
        json!([
            "/etc/kubernetes/pki/apiserver.crt",
            "/etc/kubernetes/pki/apiserver.key",
            "/etc/kubernetes/pki/apiserver-kubelet-client.crt",
            "/etc/kubernetes/pki/apiserver-kubelet-client.key",
            "/etc/kubernetes/admin.conf",
            "/etc/kubernetes/controller-manager.conf",
            "/etc/kubernetes/scheduler.conf",
        ])
    );
    assert_eq!(
        record["applied"]["made"],
        json!([
            "/etc/kubernetes/pki/apiserver.crt",
            "/etc/kubernetes/pki/apiserver.key",
            "/etc/kubernetes/pki/apiserver-kubelet-client.crt",
            "/etc/kubernetes/pki/apiserver-kubelet-client.key",
        ])
    );
}

/// `kubeadm init phase upload-config` in effect: init again with every other phase skipped.
fn upload_config(c: &Cluster) {
    let (code, _) = c.config_map(&c.admin(), "kubeadm-config");
    assert_eq!(code, 404);
    let mut docs = c.m1.docs.clone();
    kind_mut(&mut docs, "InitConfiguration")["skipPhases"] =
        json!(["preflight", "certs", "control-plane", "mark-control-plane"]);
    put(c.m1.root(), CONFIG, &support::render(&docs));
    let out = init_again(c);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("[upload-config] Storing the configuration used in ConfigMap \"kubeadm-config\" in the \"kube-system\" Namespace"),
        "{stdout}"
    );
    let (code, map) = c.config_map(&c.admin(), "kubeadm-config");
    assert_eq!(code, 200, "{map}");
    let uploaded: Value =
        serde_yaml::from_str(map["data"]["ClusterConfiguration"].as_str().unwrap()).unwrap();
    assert_eq!(&uploaded, kind_mut(&mut docs, "ClusterConfiguration"));
    let (code, map) = c.config_map(&c.admin(), "kubelet-config");
    assert_eq!(code, 200, "{map}");
    let kubelet: Value = serde_yaml::from_str(map["data"]["kubelet"].as_str().unwrap()).unwrap();
    assert_eq!(&kubelet, kind_mut(&mut docs, "KubeletConfiguration"));
    // Again: the ConfigMaps exist, so they are updated.
    assert_ok(&init_again(c));
}

fn init_again(c: &Cluster) -> Output {
    Command::new(KUBEADM)
        .args(["init", "--config", CONFIG])
        .env("LAUNCHER_STANDIN_ROOT", c.m1.root())
        .env("PATH", support::PATH)
        .env_remove("LAUNCHER_STANDIN_KUBERNETES_VERSION")
        .output()
        .unwrap()
}

/// The second master's manifests, certificate and kubelet files.
fn joined_files(c: &Cluster, m2: &Master) {
    let manifest = m2.read("etc/kubernetes/manifests/kube-apiserver.yaml");
    let pod: Value = serde_yaml::from_str(&manifest).unwrap();
    let command: Vec<String> =
        serde_json::from_value(pod["spec"]["containers"][0]["command"].clone()).unwrap();
    for want in [
        "--advertise-address=10.77.0.12".to_owned(),
        format!("--secure-port={}", m2.port),
        format!("--etcd-servers=https://127.0.0.1:{}", c.etcd_port),
    ] {
        assert!(command.contains(&want), "{want} not in {command:?}");
    }
    for name in ["kube-controller-manager", "kube-scheduler"] {
        assert!(
            m2.root()
                .join(format!("etc/kubernetes/manifests/{name}.yaml"))
                .exists()
        );
    }
    let (dns, ips) = support::sans(&m2.read(&format!("{PKI}/apiserver.crt")));
    assert_eq!(
        dns,
        [
            "demo-m2",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
    );
    assert_eq!(ips, ["10.96.0.1", "10.77.0.12", "10.77.0.11", "127.0.0.1"]);
    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(m2.root().join(PKI).join("ca.crt"))
        .arg(m2.root().join(PKI).join("apiserver.crt"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", stderr(&verify));
    assert_eq!(
        m2.read("etc/kubernetes/kubelet.conf"),
        m2.read("etc/kubernetes/discovery.conf")
    );
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(m2.root().join("etc/kubernetes/kubelet.conf")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let kubelet: Value = serde_yaml::from_str(&m2.read("var/lib/kubelet/config.yaml")).unwrap();
    let mut docs = c.m1.docs.clone();
    assert_eq!(&kubelet, kind_mut(&mut docs, "KubeletConfiguration"));
    assert!(
        m2.read("var/lib/kubelet/kubeadm-flags.env")
            .contains("--container-runtime-endpoint=")
    );
}

/// A node's credential reads only the ConfigMaps kubeadm's Roles name, and writes none.
fn what_a_node_may_do(c: &Cluster, m2: &Master) {
    let node = client_of(&m2.read("etc/kubernetes/kubelet.conf"));
    let (code, _) = c.config_map(&node, "kubeadm-config");
    assert_eq!(code, 200);
    let (code, _) = c.config_map(&c.admin(), "kube-proxy");
    assert_eq!(code, 404);
    let forbidden = c.config_map(&node, "kube-proxy");
    assert_eq!(
        forbidden.1["message"],
        "configmaps \"kube-proxy\" is forbidden: User \"system:node:demo-m2\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"kube-system\""
    );
    support::kube::assert_status(forbidden, 403, "Forbidden");
    let url = format!(
        "{}/api/v1/namespaces/kube-system/configmaps/kubeadm-config",
        c.server
    );
    let (_, mut map) = c.config_map(&node, "kubeadm-config");
    map["data"]["ClusterConfiguration"] = json!("kubernetesVersion: v1.99.0\n");
    let put = support::kube::json_of(node.put(&url).json(&map).send().unwrap());
    support::kube::assert_status(put, 403, "Forbidden");
    let (_, after) = c.config_map(&c.admin(), "kubeadm-config");
    assert_ne!(after["data"], map["data"]);
}

/// Joins refused with their exact errors, each on a fresh root that stays as it was.
fn refused_joins(c: &Cluster) {
    type Setup = fn(&mut Master);
    let other_ca = cluster::pki::Ca::generate(
        "kubernetes",
        cluster::pki::KeyAlgorithm::EcdsaP256,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let wrong_ca = base64_of(other_ca.cert_pem());
    let cases: Vec<(&str, Setup, String)> = vec![
        (
            "a shared certificate missing",
            |m| std::fs::remove_file(m.root().join(PKI).join("sa.key")).unwrap(),
            "kubeadm-standin: refused: /etc/kubernetes/kubeadm.yaml: controlPlane (shared certificates) names /etc/kubernetes/pki/sa.key, which does not exist\n".to_owned(),
        ),
        (
            "a static Pod already there",
            |m| put(m.root(), "/etc/kubernetes/manifests/etcd.yaml", "kind: Pod\n"),
            format!("{FRONT_PROXY_WARNING}kubeadm-standin: error execution phase preflight: [preflight] Some fatal errors occurred:\n\t[ERROR DirAvailable--etc-kubernetes-manifests]: /etc/kubernetes/manifests is not empty\n[preflight] If you know what you are doing, you can make a check non-fatal with `--ignore-preflight-errors=...`\n"),
        ),
        (
            "a discovery file whose CA is wrong",
            |_| {},
            String::new(),
        ),
    ];
    for (name, setup, want) in cases {
        let mut m = c.joining();
        setup(&mut m);
        let want = if want.is_empty() {
            let path = m.root().join("etc/kubernetes/discovery.conf");
            let text = std::fs::read_to_string(&path).unwrap();
            let config: Value = serde_yaml::from_str(&text).unwrap();
            let right = config["clusters"][0]["cluster"]["certificate-authority-data"]
                .as_str()
                .unwrap()
                .to_owned();
            std::fs::write(&path, text.replace(&right, &wrong_ca)).unwrap();
            format!(
                "{FRONT_PROXY_WARNING}kubeadm-standin: error execution phase preflight: couldn't validate the identity of the API Server: abort reading the cluster-info ConfigMap after timeout of 3s: GET {url}: error sending request for url ({url}): client error (Connect): invalid peer certificate: BadSignature\n",
                url = format!(
                    "{}/api/v1/namespaces/kube-public/configmaps/cluster-info",
                    c.server
                )
            )
        } else {
            want
        };
        assert_refused(&m, name, &want);
    }
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}
