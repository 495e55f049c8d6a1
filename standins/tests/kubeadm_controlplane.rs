//! `kubeadm-standin init` doing kubeadm's on-disk control-plane work on the files the seed gives
//! the first master: the API server certificate (kubeadm's SANs, chaining to the CA), every
//! given file kept, the three static Pods, preflight refusals that write nothing, and
//! mark-control-plane against the real API server stand-in and a real etcd.

mod support;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use support::control_plane::{client_of, start_api_server, start_etcd};
use support::{kind_mut, put, sans};

const KUBEADM: &str = env!("CARGO_BIN_EXE_kubeadm-standin");
const CONFIG: &str = "/etc/kubernetes/kubeadm.yaml";
const PKI: &str = "etc/kubernetes/pki";
const MANIFESTS: &str = "etc/kubernetes/manifests";

/// A first master's root: the seed's files, a host preflight accepts, the rendered config.
struct Master {
    dir: tempfile::TempDir,
    _cri: std::os::unix::net::UnixListener,
    docs: Vec<Value>,
    bind_port: u16,
}

impl Master {
    fn new(schedulable: bool) -> Master {
        let dir = tempfile::tempdir().unwrap();
        let spec = support::spec(schedulable);
        let files = support::first_master_files(&spec);
        support::write_files(dir.path(), &files);
        let cri = support::good_host(dir.path());
        let mut docs = support::documents(&files[CONFIG]);
        let bind_port = testkit::free_tcp_port();
        let init = kind_mut(&mut docs, "InitConfiguration");
        init["localAPIEndpoint"]["bindPort"] = json!(bind_port);
        init["nodeRegistration"]["ignorePreflightErrors"] = json!(support::busy_fixed_ports());
        Master {
            dir,
            _cri: cri,
            docs,
            bind_port,
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn init_doc(&mut self) -> &mut Value {
        kind_mut(&mut self.docs, "InitConfiguration")
    }

    fn cluster_doc(&mut self) -> &mut Value {
        kind_mut(&mut self.docs, "ClusterConfiguration")
    }

    fn skip_marking(&mut self) {
        self.init_doc()["skipPhases"] = json!(["upload-config", "mark-control-plane"]);
    }

    fn ignore(&mut self, check: &str) {
        let list = &mut self.init_doc()["nodeRegistration"]["ignorePreflightErrors"];
        list.as_array_mut().unwrap().push(json!(check));
    }

    fn init(&self) -> Output {
        put(self.root(), CONFIG, &support::render(&self.docs));
        Command::new(KUBEADM)
            .args(["init", "--config", CONFIG])
            .env("LAUNCHER_STANDIN_ROOT", self.root())
            .env("PATH", support::PATH)
            .env_remove("LAUNCHER_STANDIN_KUBERNETES_VERSION")
            .output()
            .unwrap()
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root().join(rel)).unwrap()
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

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn openssl_verify(root: &Path, leaf: &str) {
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(root.join(PKI).join("ca.crt"))
        .arg(root.join(PKI).join(leaf))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

#[test]
fn init_makes_the_api_server_certificate_and_keeps_every_given_file() {
    if !testkit::require(&["openssl"]) {
        return;
    }
    let mut m = Master::new(false);
    m.skip_marking();
    let sans_list = &mut m.cluster_doc()["apiServer"]["certSANs"];
    sans_list
        .as_array_mut()
        .unwrap()
        .extend([json!("api.example"), json!("10.77.0.99")]);
    let given = support::snapshot(m.root());
    let out = m.init();
    assert_ok(&out);
    let after = support::snapshot(m.root());
    // Every certificate, key and kubeconfig the seed gave (the config file is the test's).
    for (path, bytes) in &given {
        if path.starts_with("etc/kubernetes/") && path != CONFIG.trim_start_matches('/') {
            assert_eq!(after.get(path), Some(bytes), "{path} changed");
        }
    }
    let (dns, ips) = sans(&m.read(&format!("{PKI}/apiserver.crt")));
    assert_eq!(
        dns,
        [
            "api.example",
            "demo-m1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
    );
    assert_eq!(ips, ["10.96.0.1", "10.77.0.11", "10.77.0.99"]);
    openssl_verify(m.root(), "apiserver.crt");
    assert_eq!(mode(&m.root().join(PKI).join("apiserver.key")), 0o600);
    let record: Value =
        serde_json::from_str(&m.read("var/lib/launcher/standin/kubeadm-init.json")).unwrap();
    assert_eq!(
        record["applied"]["made"],
        json!([
            "/etc/kubernetes/pki/apiserver.crt",
            "/etc/kubernetes/pki/apiserver.key"
        ])
    );
    // A second init finds its own manifests: kubeadm's preflight refuses to start over.
    let again = m.init();
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("[ERROR FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml]: /etc/kubernetes/manifests/kube-apiserver.yaml already exists"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn the_static_pods_are_kubeadms_and_the_api_server_stand_in_takes_their_flags() {
    let mut m = Master::new(false);
    m.skip_marking();
    assert_ok(&m.init());
    let mut commands = BTreeMap::new();
    for name in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        let path = m.root().join(MANIFESTS).join(format!("{name}.yaml"));
        assert_eq!(mode(&path), 0o600, "{name}");
        let pod: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            (pod["apiVersion"].as_str(), pod["kind"].as_str()),
            (Some("v1"), Some("Pod"))
        );
        assert_eq!(pod["metadata"]["name"], name);
        assert_eq!(pod["metadata"]["namespace"], "kube-system");
        assert_eq!(pod["spec"]["priorityClassName"], "system-node-critical");
        let container = &pod["spec"]["containers"][0];
        assert_eq!(container["image"], format!("10.77.0.1:8443/{name}:v1.33.4"));
        let command: Vec<String> = serde_json::from_value(container["command"].clone()).unwrap();
        assert_eq!(command[0], name);
        // The cluster file's hardening reaches every component through extraArgs.
        assert!(
            command.contains(&"--profiling=false".to_owned()),
            "{name}: {command:?}"
        );
        commands.insert(name, command);
    }
    let api = &commands["kube-apiserver"];
    standins::apiserver::flags::parse(&api[1..]).unwrap();
    for want in [
        "--advertise-address=10.77.0.11".to_owned(),
        format!("--secure-port={}", m.bind_port),
        "--etcd-servers=https://10.77.0.11:2379".to_owned(),
        "--etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt".to_owned(),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
        "--tls-cert-file=/etc/kubernetes/pki/apiserver.crt".to_owned(),
    ] {
        assert!(api.contains(&want), "{want} not in {api:?}");
    }
    assert!(
        commands["kube-controller-manager"]
            .contains(&"--cluster-signing-key-file=/etc/kubernetes/pki/ca.key".to_owned())
    );
    validate_manifests(m.root());
}

/// `kubernetes-validate` checks the Pods against Kubernetes 1.33's schema when it is
/// installed (`pip install kubernetes-validate`); ci/deps does not install it, so it is
/// skipped, not required, under CI.
fn validate_manifests(root: &Path) {
    let Some(tool) = testkit::which("kubernetes-validate") else {
        eprintln!("skipping the schema check: kubernetes-validate is not installed");
        return;
    };
    let out = Command::new(tool)
        .args(["-k", "1.33.0", "--strict"])
        .args(
            [
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
            ]
            .map(|n| root.join(MANIFESTS).join(format!("{n}.yaml"))),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

const PREFLIGHT_TAIL: &str = "[preflight] If you know what you are doing, you can make a check non-fatal with `--ignore-preflight-errors=...`\n";

fn preflight_error(lines: &[&str]) -> String {
    let errors: String = lines.iter().map(|l| format!("\t{l}\n")).collect();
    format!(
        "kubeadm-standin: error execution phase preflight: [preflight] Some fatal errors occurred:\n{errors}{PREFLIGHT_TAIL}"
    )
}

type Setup = fn(&mut Master, &mut Option<std::net::TcpListener>);

#[test]
fn refused_inits_write_nothing_and_ignored_checks_go_on() {
    let cases: Vec<(&str, Setup, String, Option<&str>)> = vec![
        (
            "a flag kube-apiserver lacks",
            |m, _| {
                let args = &mut m.cluster_doc()["apiServer"]["extraArgs"];
                args.as_array_mut().unwrap().push(json!({"name": "cloud-provider", "value": "external"}));
            },
            "kubeadm-standin: error execution phase control-plane: kube-apiserver would refuse the command of its manifest, so none was written: unknown flag: --cloud-provider\n".to_owned(),
            None,
        ),
        (
            "ip_forward 0",
            |m, _| put(m.root(), "/proc/sys/net/ipv4/ip_forward", "0\n"),
            preflight_error(&["[ERROR FileContent--proc-sys-net-ipv4-ip_forward]: /proc/sys/net/ipv4/ip_forward contents are not set to 1"]),
            Some("FileContent--proc-sys-net-ipv4-ip_forward"),
        ),
        (
            "the API server's port in use",
            |m, held| *held = Some(std::net::TcpListener::bind(("0.0.0.0", m.bind_port)).unwrap()),
            String::new(),
            Some("Port-{port}"),
        ),
        (
            "a manifest already there",
            |m, _| put(m.root(), "/etc/kubernetes/manifests/kube-apiserver.yaml", "kind: Pod\n"),
            preflight_error(&["[ERROR FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml]: /etc/kubernetes/manifests/kube-apiserver.yaml already exists"]),
            None,
        ),
        (
            "too little memory",
            |m, _| put(m.root(), "/proc/meminfo", "MemTotal:        1048576 kB\n"),
            preflight_error(&["[ERROR Mem]: the system RAM (1024 MB) is less than the minimum 1700 MB"]),
            Some("Mem"),
        ),
        (
            "one CPU",
            |m, _| put(m.root(), "/sys/devices/system/cpu/online", "0\n"),
            preflight_error(&["[ERROR NumCPU]: the number of available CPUs 1 is less than the required 2"]),
            Some("NumCPU"),
        ),
        (
            "no iptables",
            |m, _| std::fs::remove_file(m.root().join("usr/sbin/iptables")).unwrap(),
            preflight_error(&["[ERROR FileExisting-iptables]: iptables not found in system path"]),
            Some("FileExisting-iptables"),
        ),
        (
            "no container runtime",
            |m, _| std::fs::remove_file(m.root().join("run/containerd/containerd.sock")).unwrap(),
            preflight_error(&["[ERROR CRI]: container runtime is not running: connecting to unix:///run/containerd/containerd.sock: No such file or directory (os error 2)"]),
            Some("CRI"),
        ),
    ];
    for (name, setup, want, ignorable) in cases {
        let mut m = Master::new(false);
        m.skip_marking();
        let mut held = None;
        setup(&mut m, &mut held);
        let want = if want.is_empty() {
            let port = m.bind_port;
            preflight_error(&[&format!("[ERROR Port-{port}]: Port {port} is in use")])
        } else {
            want
        };
        put(m.root(), CONFIG, &support::render(&m.docs));
        let before = support::snapshot(m.root());
        let out = m.init();
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        assert_eq!(stderr(&out), want, "{name}");
        assert!(
            support::snapshot(m.root()) == before,
            "{name}: something was written"
        );
        let Some(check) = ignorable else {
            continue;
        };
        m.ignore(&check.replace("{port}", &m.bind_port.to_string()));
        let out = m.init();
        assert_ok(&out);
        let warning = want
            .lines()
            .find(|l| l.starts_with("\t[ERROR"))
            .unwrap()
            .replace("[ERROR", "[WARNING");
        assert!(stderr(&out).contains(&warning), "{name}: {}", stderr(&out));
        assert!(
            m.root()
                .join(MANIFESTS)
                .join("kube-scheduler.yaml")
                .exists(),
            "{name}"
        );
    }
}

#[test]
fn swap_is_only_a_warning() {
    let mut m = Master::new(false);
    m.skip_marking();
    put(
        m.root(),
        "/proc/swaps",
        "Filename\tType\tSize\tUsed\tPriority\n/swapfile\tfile\t1048572\t0\t-2\n",
    );
    let out = m.init();
    assert_ok(&out);
    assert!(
        stderr(&out).contains("\t[WARNING Swap]: swap is supported for cgroup v2 only."),
        "{}",
        stderr(&out)
    );
}

/// `kubeadm init` through mark-control-plane against the real API server stand-in: the Node
/// the kubelet registers gets the control-plane label, and the NoSchedule taint unless the
/// masters are schedulable.
fn marked_node(schedulable: bool) -> Value {
    let mut m = Master::new(schedulable);
    let etcd_port = testkit::free_tcp_port();
    let cluster = m.cluster_doc();
    cluster["etcd"]["external"]["endpoints"] = json!([format!("https://127.0.0.1:{etcd_port}")]);
    cluster["apiServer"]["certSANs"]
        .as_array_mut()
        .unwrap()
        .push(json!("127.0.0.1"));
    let timeouts = &mut m.init_doc()["timeouts"];
    timeouts["controlPlaneComponentHealthCheck"] = json!("40s");
    timeouts["kubernetesAPICall"] = json!("20s");
    let server = format!("https://127.0.0.1:{}", m.bind_port);
    for conf in ["admin.conf", "kubelet.conf"] {
        let text = m.read(&format!("etc/kubernetes/{conf}"));
        assert!(text.contains("https://10.77.0.11:6443"), "{conf}");
        put(
            m.root(),
            &format!("/etc/kubernetes/{conf}"),
            &text.replace("https://10.77.0.11:6443", &server),
        );
    }
    let _etcd = start_etcd(m.root(), etcd_port);
    put(m.root(), CONFIG, &support::render(&m.docs));
    let kubeadm = Command::new(KUBEADM)
        .args(["init", "--config", CONFIG])
        .env("LAUNCHER_STANDIN_ROOT", m.root())
        .env("PATH", support::PATH)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let manifest = m.root().join(MANIFESTS).join("kube-apiserver.yaml");
    testkit::wait_for("the manifests", std::time::Duration::from_secs(20), || {
        manifest.exists().then_some(())
    });
    let _api = start_api_server(m.root());
    // The kubelet registers its Node once the API server answers.
    let kubelet = client_of(&m.read("etc/kubernetes/kubelet.conf"));
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "demo-m1",
        "labels": {"kubernetes.io/hostname": "demo-m1"}}});
    testkit::wait_for(
        "the Node registered",
        std::time::Duration::from_secs(30),
        || {
            let sent = kubelet
                .post(format!("{server}/api/v1/nodes"))
                .json(&node)
                .send();
            sent.ok().filter(|r| r.status().as_u16() == 201).map(|_| ())
        },
    );
    let out = kubeadm.wait_with_output().unwrap();
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("[mark-control-plane] Marking the node demo-m1 as control-plane"),
        "{stdout}"
    );
    let admin = client_of(&m.read("etc/kubernetes/admin.conf"));
    let got = admin
        .get(format!("{server}/api/v1/nodes/demo-m1"))
        .send()
        .unwrap();
    assert_eq!(got.status().as_u16(), 200);
    got.json().unwrap()
}

#[test]
fn mark_control_plane_labels_and_taints_the_node_the_kubelet_registered() {
    if !testkit::require(&["etcd"]) {
        return;
    }
    let node = marked_node(false);
    let labels = &node["metadata"]["labels"];
    assert_eq!(
        labels["node-role.kubernetes.io/control-plane"], "",
        "{node}"
    );
    assert_eq!(
        labels["node.kubernetes.io/exclude-from-external-load-balancers"],
        ""
    );
    assert_eq!(labels["kubernetes.io/hostname"], "demo-m1");
    assert_eq!(
        node["spec"]["taints"],
        json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}])
    );
    let node = marked_node(true);
    assert_eq!(
        node["metadata"]["labels"]["node-role.kubernetes.io/control-plane"],
        ""
    );
    assert_eq!(node["spec"]["taints"], Value::Null, "{node}");
}
