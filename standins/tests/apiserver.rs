//! `kube-apiserver-standin` against a real etcd (mutual TLS) and the real `kubectl`: an admin
//! lists nodes, a node registers itself, its Lease and its Ready condition, and may not touch
//! another node; a stranger's certificate is refused; `/readyz` follows etcd.

mod support;

use cluster::pki::Ca;
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::kube::*;
use testkit::ChildGuard;

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
    let (ca, setup, peer_port, port) = prepare(dir.path());

    let mut etcd = start_etcd(&setup, peer_port);
    let _standin = start_standin(&setup, port, &dir.path().join("standin.log"));

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
    // `-o wide` adds the address, OS image, kernel and runtime the kubelet reported.
    let (ok, out) = kubectl(admin, &["get", "nodes", "-o", "wide"]);
    let header = out.lines().next().unwrap_or_default();
    let row = out
        .lines()
        .find(|l| l.starts_with("w5 "))
        .unwrap_or_default();
    assert!(
        ok && header.contains("INTERNAL-IP") && header.contains("CONTAINER-RUNTIME"),
        "{out}"
    );
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells.get(5), Some(&"127.0.0.1"), "{out}");
    assert_eq!(cells.get(6), Some(&"<none>"), "{out}");
    assert!(
        cells.last().is_some_and(|c| c.starts_with("containerd://")),
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

/// `--etcd-servers` lists first an endpoint that accepts connections and never answers (a
/// master that hangs, or one powered off whose address still takes a while to fail): the API
/// server is ready anyway, and once the live endpoint has answered, later requests go to it
/// and never to the hung one again.
#[test]
fn a_hung_first_etcd_endpoint_is_left_for_one_that_answers() {
    if !testkit::require(&["etcd"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, mut setup, peer_port, port) = prepare(dir.path());
    let mut etcd = start_etcd(&setup, peer_port);
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_url = format!("https://{}", hung.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in hung.incoming().flatten() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(conn);
        }
    });
    setup.etcd_url = format!("{hung_url},{}", setup.etcd_url);
    let _standin = start_standin(&setup, port, &dir.path().join("standin.log"));
    setup.kubeconfig(
        &ca,
        "kubernetes-admin",
        Some("kubeadm:cluster-admins"),
        "admin",
    );
    let admin = setup.http("admin");
    let url = |path: &str| format!("{}{path}", setup.server);
    testkit::wait_for("/readyz to answer 200", Duration::from_secs(30), || {
        let r = admin.get(url("/readyz")).send().ok()?;
        r.status().is_success().then_some(())
    });
    let before = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!(before >= 1, "the hung endpoint was never tried");
    for i in 0..10 {
        let ready = admin.get(url("/readyz")).send().unwrap();
        assert!(
            ready.status().is_success(),
            "readyz {i}: {}",
            ready.status()
        );
        let nodes = admin.get(url("/api/v1/nodes")).send().unwrap();
        assert!(nodes.status().is_success(), "nodes {i}: {}", nodes.status());
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "requests went back to the hung endpoint"
    );
    etcd.kill();
}
