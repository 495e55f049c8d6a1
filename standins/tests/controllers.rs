//! `kube-controller-manager-standin` and `kube-scheduler-standin` against the API server
//! stand-in, a real etcd and the real `kubectl`: one of two controller-managers holds the
//! Lease and the other takes it over only once it expired; a Node whose kubelet goes silent
//! turns `NotReady` with the unreachable taint and back; the scheduler elects and answers its
//! health; bad command lines are refused in pflag's words.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use standins::Root;
use standins::kubeclient::KubeClient;
use standins::kubeclient::parse_time;
use standins::kubelet::node::{NodeAgent, NodeFacts};
use support::kube::*;
use testkit::ChildGuard;

fn controller_manager() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kube-controller-manager-standin"))
}

fn scheduler() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kube-scheduler-standin"))
}

/// A stand-in's command, its arguments and the exact standard error it must end with.
type BadLine = (fn() -> Command, &'static [&'static str], &'static str);

#[test]
fn bad_command_lines_fail_at_start_with_pflags_words() {
    let cases: &[BadLine] = &[
        (
            controller_manager,
            &["--kubeconfig=/k", "--no-such-flag=1"],
            "Error: unknown flag: --no-such-flag\n",
        ),
        (
            scheduler,
            &["--kubeconfig=/k", "--node-monitor-period=5s"],
            "Error: unknown flag: --node-monitor-period\n",
        ),
        (
            controller_manager,
            &["--leader-elect=true"],
            "Error: --kubeconfig must be specified\n",
        ),
        (
            scheduler,
            &["--kubeconfig=/k", "--leader-elect-lease-duration=15"],
            "Error: invalid argument \"15\" for \"--leader-elect-lease-duration\" flag: \
          time: missing unit in duration \"15\"\n",
        ),
        (
            controller_manager,
            &["--kubeconfig=/k", "--leader-elect-renew-deadline=20s"],
            "Error: leaseDuration must be greater than renewDeadline\n",
        ),
        (
            controller_manager,
            &["--kubeconfig=/nonexistent/controller-manager.conf"],
            "Error: loading --kubeconfig: reading /nonexistent/controller-manager.conf: \
          No such file or directory (os error 2)\n",
        ),
    ];
    for (program, args, want) in cases {
        let out = program().args(*args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), *want, "{args:?}");
    }
    let help = scheduler().arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("It schedules nothing"));
    let version = controller_manager().arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout),
        "Kubernetes v1.33.0 (kube-controller-manager-standin)\n"
    );
}

/// The flags kubeadm gives the component, on this test's kubeconfig and port, with short
/// leader-election timings.
fn component_flags(kubeconfig: &str, port: u16) -> Vec<String> {
    [
        format!("--authentication-kubeconfig={kubeconfig}"),
        format!("--authorization-kubeconfig={kubeconfig}"),
        "--bind-address=127.0.0.1".to_owned(),
        format!("--kubeconfig={kubeconfig}"),
        "--leader-elect=true".to_owned(),
        "--leader-elect-lease-duration=4s".to_owned(),
        "--leader-elect-renew-deadline=3s".to_owned(),
        "--leader-elect-retry-period=500ms".to_owned(),
        format!("--secure-port={port}"),
    ]
    .into()
}

fn spawn(name: &str, mut cmd: Command, args: &[String], log: &Path) -> ChildGuard {
    let log = std::fs::File::create(log).unwrap();
    cmd.args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log);
    ChildGuard::spawn(name, &mut cmd)
}

/// The identity a stand-in's log says it campaigns as.
fn identity_in(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let at = text.find(" me=")? + 4;
    Some(text[at..].split_whitespace().next()?.to_owned())
}

fn lease(admin: &reqwest::blocking::Client, server: &str, name: &str) -> Option<Value> {
    let url = format!("{server}/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{name}");
    let (code, body) = json_of(admin.get(url).send().ok()?);
    (code == 200).then_some(body)
}

fn health(port: u16, path: &str) -> Option<String> {
    let http = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let response = http
        .get(format!("https://127.0.0.1:{port}{path}"))
        .send()
        .ok()?;
    response
        .status()
        .is_success()
        .then(|| response.text().unwrap_or_default())
}

/// A kubelet's Node agent ticking every second while `alive` is set.
fn kubelet(kubeconfig: &str, alive: Arc<AtomicBool>) {
    let client = KubeClient::from_kubeconfig(&Root("/".into()), kubeconfig).unwrap();
    let facts = NodeFacts {
        name: "w1".into(),
        ip: Some("127.0.0.1".into()),
        labels: Default::default(),
        taints: Vec::new(),
        kubelet_version: "v1.33.0".into(),
        os_image: "Debian GNU/Linux 12 (bookworm)".into(),
        kernel_version: "6.1.0".into(),
        runtime_version: "containerd://1.6.20".into(),
    };
    let mut agent = NodeAgent::new(client, facts);
    std::thread::spawn(move || {
        loop {
            if alive.load(Ordering::SeqCst) {
                _ = agent.tick(time::OffsetDateTime::now_utc());
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
}

fn node_row(admin: &str) -> String {
    let (_, out) = kubectl(admin, &["get", "nodes", "--no-headers"]);
    out
}

fn unreachable_taint(admin: &str) -> bool {
    let (ok, out) = kubectl(admin, &["get", "node", "w1", "-o", "json"]);
    assert!(ok, "{out}");
    let node: Value = serde_json::from_str(&out).unwrap();
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoSchedule")
}

#[test]
fn leaders_take_over_and_a_silent_node_goes_not_ready() {
    if !testkit::require(&["etcd", "kubectl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, setup, peer_port, port) = prepare(dir.path());
    let _etcd = start_etcd(&setup, peer_port);
    let _api = start_standin(&setup, port, &dir.path().join("apiserver.log"));
    let admin = setup.kubeconfig(
        &ca,
        "kubernetes-admin",
        Some("kubeadm:cluster-admins"),
        "admin",
    );
    let cm_conf = setup.kubeconfig(&ca, "system:kube-controller-manager", None, "cm.conf");
    let sched_conf = setup.kubeconfig(&ca, "system:kube-scheduler", None, "sched.conf");
    let node_conf = setup.kubeconfig(&ca, "system:node:w1", Some("system:nodes"), "node.conf");
    let admin_http = setup.http("admin");
    testkit::wait_for("/readyz", Duration::from_secs(30), || {
        let r = admin_http
            .get(format!("{}/readyz", setup.server))
            .send()
            .ok()?;
        r.status().is_success().then_some(())
    });
    let alive = Arc::new(AtomicBool::new(true));
    kubelet(&node_conf, alive.clone());

    // Two controller-managers: exactly one holds the Lease.
    let monitor = ["--node-monitor-grace-period=6s", "--node-monitor-period=1s"].map(String::from);
    let mut managers = Vec::new();
    for i in 0..2 {
        let health_port = testkit::free_tcp_port();
        let mut args = component_flags(&cm_conf, health_port);
        args.extend(monitor.clone());
        let log = dir.path().join(format!("cm{i}.log"));
        let child = spawn(
            "kube-controller-manager-standin",
            controller_manager(),
            &args,
            &log,
        );
        managers.push((child, log, health_port));
    }
    let ids: Vec<String> = managers
        .iter()
        .map(|(_, log, _)| {
            testkit::wait_for("an identity", Duration::from_secs(10), || identity_in(log))
        })
        .collect();
    let first = testkit::wait_for("a leader", Duration::from_secs(10), || {
        lease(&admin_http, &setup.server, "kube-controller-manager")
    });
    std::thread::sleep(Duration::from_secs(2));
    let held = lease(&admin_http, &setup.server, "kube-controller-manager").unwrap();
    let holder = held["spec"]["holderIdentity"].as_str().unwrap().to_owned();
    assert_eq!(
        first["spec"]["holderIdentity"],
        holder.as_str(),
        "the leader changed: {held}"
    );
    let leader = ids
        .iter()
        .position(|id| *id == holder)
        .expect("the holder is one of the two");
    assert_eq!(held["spec"]["leaseDurationSeconds"], 4);
    for (_, _, health_port) in &managers {
        let ok = testkit::wait_for("/healthz", Duration::from_secs(10), || {
            health(*health_port, "/healthz")
        });
        assert_eq!(ok, "ok");
    }

    // A silent kubelet: NotReady, Unknown, tainted; back: Ready, untainted.
    testkit::wait_for("w1 Ready", Duration::from_secs(15), || {
        node_row(&admin).contains(" Ready ").then_some(())
    });
    alive.store(false, Ordering::SeqCst);
    let silent = Instant::now();
    testkit::wait_for("w1 NotReady", Duration::from_secs(20), || {
        node_row(&admin).contains("NotReady").then_some(())
    });
    assert!(
        silent.elapsed() >= Duration::from_secs(4),
        "NotReady too early"
    );
    let (_, out) = kubectl(&admin, &["get", "node", "w1", "-o", "json"]);
    let node: Value = serde_json::from_str(&out).unwrap();
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "Unknown", "{ready}");
    assert_eq!(ready["reason"], "NodeStatusUnknown", "{ready}");
    assert_eq!(
        ready["message"], "Kubelet stopped posting node status.",
        "{ready}"
    );
    testkit::wait_for("the unreachable taint", Duration::from_secs(10), || {
        unreachable_taint(&admin).then_some(())
    });
    alive.store(true, Ordering::SeqCst);
    testkit::wait_for("w1 Ready again", Duration::from_secs(15), || {
        node_row(&admin).contains(" Ready ").then_some(())
    });
    testkit::wait_for("the taint gone", Duration::from_secs(10), || {
        (!unreachable_taint(&admin)).then_some(())
    });

    // The leader dies: the other takes over, only once the Lease expired.
    let before = lease(&admin_http, &setup.server, "kube-controller-manager").unwrap();
    managers[leader].0.kill();
    let taken = testkit::wait_for("a takeover", Duration::from_secs(20), || {
        let now = lease(&admin_http, &setup.server, "kube-controller-manager")?;
        (now["spec"]["holderIdentity"] == ids[1 - leader].as_str()).then_some(now)
    });
    let last_renewal = parse_time(&before["spec"]["renewTime"]).unwrap();
    let acquired = parse_time(&taken["spec"]["acquireTime"]).unwrap();
    assert!(
        acquired >= last_renewal + time::Duration::seconds(4),
        "{before} → {taken}"
    );
    assert_eq!(
        taken["spec"]["leaseTransitions"].as_u64(),
        before["spec"]["leaseTransitions"].as_u64().map(|n| n + 1)
    );

    // The scheduler elects its leader and answers its health.
    let sched_port = testkit::free_tcp_port();
    let _scheduler = spawn(
        "kube-scheduler-standin",
        scheduler(),
        &component_flags(&sched_conf, sched_port),
        &dir.path().join("scheduler.log"),
    );
    let elected = testkit::wait_for("the scheduler's Lease", Duration::from_secs(10), || {
        lease(&admin_http, &setup.server, "kube-scheduler")
    });
    assert!(
        elected["spec"]["holderIdentity"]
            .as_str()
            .unwrap()
            .contains('_')
    );
    for path in ["/healthz", "/livez", "/readyz"] {
        let ok = testkit::wait_for(path, Duration::from_secs(10), || health(sched_port, path));
        assert_eq!(ok, "ok", "{path}");
    }
}
