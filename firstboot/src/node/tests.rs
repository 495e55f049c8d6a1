use super::*;
use crate::os::{Action, RecordingOs};
use crate::vip::tests::{commands, join, master as vip_master, recording};
use cluster::api::Role;
use std::os::unix::fs::PermissionsExt;

fn master() -> Plan {
    Plan {
        host_id: "h".into(),
        cluster: "c".into(),
        hostname: "c-m2".into(),
        role: Role::Master,
        ip: Some("10.0.0.12".into()),
        kubernetes_version: "v1.33.0".into(),
        files: vec![],
        etcd: Some(EtcdInstructions {
            member_name: "c-m2".into(),
            initial_cluster_state: "existing".into(),
            learner: true,
            config_path: "/etc/etcd/etcd.yaml".into(),
            client_urls: vec![
                "https://10.0.0.11:2379".into(),
                "https://10.0.0.12:2379".into(),
            ],
        }),
        install: InstallAction::JoinControlPlane {
            config_path: "/etc/kubernetes/kubeadm.yaml".into(),
        },
        vip: None,
        images: cluster::kubeadm::node_images(
            &"v1.33.0".parse().unwrap(),
            &"10.0.0.1:8443".parse().unwrap(),
            cluster::kubeadm::KubeadmAddons::ALL,
        ),
        digest: String::new(),
    }
}

#[test]
fn a_master_starts_etcd_waits_on_its_own_member_then_joins() {
    let root = tempfile::tempdir().unwrap();
    let os = RecordingOs::new(Duration::ZERO, false);
    let plan = master();
    assert!(etcd(root.path(), &os, &plan, Duration::from_secs(1)).unwrap());
    install(root.path(), &os, &plan, true).unwrap();
    let unit =
        std::fs::read_to_string(root.path().join("etc/systemd/system/launcher-etcd.service"))
            .unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/etcd --config-file /etc/etcd/etcd.yaml"));
    let actions = os.actions();
    assert_eq!(
        actions[2],
        Action::Probe {
            url: "https://10.0.0.12:2379/health".into()
        }
    );
    let Action::Run { cmd } = &actions[3] else {
        panic!()
    };
    let cfg = root.path().join("etc/kubernetes/kubeadm.yaml");
    assert_eq!(
        cmd.to_string(),
        format!("kubeadm join --config {}", cfg.display())
    );
}

#[test]
fn an_unhealthy_etcd_fails_with_what_to_check() {
    let root = tempfile::tempdir().unwrap();
    let mut os = RecordingOs::new(Duration::ZERO, false);
    os.outputs.insert(
        "https://10.0.0.12:2379/health".into(),
        r#"{"health":"false"}"#.into(),
    );
    let err = etcd(root.path(), &os, &master(), Duration::ZERO)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("etcd did not become healthy at https://10.0.0.12:2379/health"),
        "{err}"
    );
    assert!(err.contains("journalctl -u launcher-etcd"));
}

#[test]
fn an_etcd_that_will_not_start_reports_the_end_of_its_log() {
    let root = tempfile::tempdir().unwrap();
    let mut os = RecordingOs::new(Duration::ZERO, false);
    os.failures.insert(
        "systemctl enable --now launcher-etcd.service".into(),
        "Job for launcher-etcd.service failed.".into(),
    );
    os.outputs.insert(
        "journalctl".into(),
        "member 3a5e has already been bootstrapped\n".into(),
    );
    let err = etcd(root.path(), &os, &master(), Duration::ZERO)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "`systemctl enable --now launcher-etcd.service` exited with exit status: 1: \
         Job for launcher-etcd.service failed.\n\
         last lines of launcher-etcd.service's log:\n\
         member 3a5e has already been bootstrapped"
    );
    let Action::Run { cmd } = os.actions().last().cloned().unwrap() else {
        panic!()
    };
    assert_eq!(
        cmd.to_string(),
        "journalctl --unit launcher-etcd.service --lines 15 --no-pager --output cat"
    );
}

fn worker() -> Plan {
    Plan {
        role: Role::Worker,
        etcd: None,
        install: InstallAction::Worker {
            kubelet_config_path: "/var/lib/kubelet/config.yaml".into(),
            kubeconfig_path: "/etc/kubernetes/kubelet.conf".into(),
        },
        ..master()
    }
}

#[test]
fn a_worker_is_done_only_once_its_kubelet_keeps_running() {
    let root = tempfile::tempdir().unwrap();
    let mut os = RecordingOs::new(Duration::ZERO, false);
    os.outputs.insert(
        "systemctl".into(),
        "ActiveState=active\nNRestarts=0\n".into(),
    );
    install(root.path(), &os, &worker(), true).unwrap();
    assert!(
        root.path()
            .join("etc/systemd/system/kubelet.service")
            .is_file()
    );

    // Restarts before firstboot started it do not count.
    os.outputs.insert(
        "systemctl".into(),
        "ActiveState=active\nNRestarts=7\n".into(),
    );
    install(root.path(), &os, &worker(), true).unwrap();

    let cases = [
        (
            "ActiveState=activating\nNRestarts=2\n",
            "state activating, restarts 2 then 2",
        ),
        (
            "ActiveState=failed\nNRestarts=0\n",
            "state failed, restarts 0 then 0",
        ),
        ("", "state unknown, restarts unknown then unknown"),
    ];
    for (shown, state) in cases {
        let mut os = RecordingOs::new(Duration::ZERO, false);
        os.outputs.insert("systemctl".into(), shown.into());
        os.outputs
            .insert("journalctl".into(), "refused: bad kubeconfig\n".into());
        let err = install(root.path(), &os, &worker(), true)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "kubelet.service did not keep running after it started ({state}); \
                 last lines of its log:\nrefused: bad kubeconfig"
            )
        );
    }
}

/// kubeadm gives up waiting for the API server the kubelet runs: the report says what the
/// kubelet said, which is where the reason is.
#[test]
fn a_failed_kubeadm_reports_the_kubelets_last_lines() {
    let root = tempfile::tempdir().unwrap();
    let mut os = recording();
    let cfg = root.path().join("etc/kubernetes/kubeadm.yaml");
    os.failures.insert(
        format!("kubeadm init --config {}", cfg.display()),
        "mark-control-plane: the API server did not answer\n".into(),
    );
    os.outputs.insert(
        "journalctl".into(),
        "kubelet-standin: static Pod: k8s_kube-apiserver_kube-apiserver-m1: pulling 10.77.0.1:8443/kube-apiserver:v1.33.4: not found\n"
            .into(),
    );
    let init = InstallAction::Init {
        config_path: "/etc/kubernetes/kubeadm.yaml".into(),
    };
    let plan = vip_master(init, true);
    // The API server's container refused a flag: the kubelet's CRI log (two runs, the
    // newer one last) and a raw one of the scheduler's.
    let pods = root.path().join("var/log/pods");
    let apiserver = pods.join(format!(
        "kube-system_kube-apiserver-{}_0a1b/kube-apiserver",
        plan.hostname
    ));
    std::fs::create_dir_all(&apiserver).unwrap();
    std::fs::write(
        apiserver.join("0.log"),
        "2026-12-01T03:00:00.1Z stderr F old run\n",
    )
    .unwrap();
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(apiserver.join("0.log"))
        .and_then(|f| f.set_modified(an_hour_ago))
        .unwrap();
    std::fs::write(
        apiserver.join("1.log"),
        "2026-12-01T03:00:05.1Z stderr F Error: unknown flag: --no-such-flag\n\
         2026-12-01T03:00:05.2Z stderr P Usage:\x1b[31m\n",
    )
    .unwrap();
    let scheduler = pods.join(format!(
        "kube-system_kube-scheduler-{}_9f/kube-scheduler",
        plan.hostname
    ));
    std::fs::create_dir_all(&scheduler).unwrap();
    std::fs::write(scheduler.join("0.log"), "a\nb\nc\nd\n").unwrap();
    let other_node = pods.join("kube-system_kube-apiserver-elsewhere_77/kube-apiserver");
    std::fs::create_dir_all(&other_node).unwrap();
    std::fs::write(other_node.join("0.log"), "not this node's\n").unwrap();
    let err = install(root.path(), &os, &plan, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with(&format!(
            "mark-control-plane: the API server did not answer\n\
             last output of kube-apiserver (/var/log/pods/kube-system_kube-apiserver-{host}_0a1b/kube-apiserver/1.log):\n  \
             Error: unknown flag: --no-such-flag\n  Usage:[31m\n\
             last output of kube-scheduler (/var/log/pods/kube-system_kube-scheduler-{host}_9f/kube-scheduler/0.log):\n  \
             b\n  c\n  d\n\
             last lines of kubelet.service's log:\n\
             kubelet-standin: static Pod: k8s_kube-apiserver_kube-apiserver-m1: pulling 10.77.0.1:8443/kube-apiserver:v1.33.4: not found",
            host = plan.hostname
        )),
        "{err}"
    );
}

#[test]
fn a_master_starts_keepalived_before_kubeadm() {
    let init = InstallAction::Init {
        config_path: "/etc/kubernetes/kubeadm.yaml".into(),
    };
    for (action, kubeadm) in [(init, "init"), (join(), "join")] {
        let root = tempfile::tempdir().unwrap();
        let os = recording();
        install(root.path(), &os, &vip_master(action, true), true).unwrap();
        let cfg = root.path().join("etc/kubernetes/kubeadm.yaml");
        assert_eq!(
            commands(&os),
            [
                "ip -o -4 addr show".to_string(),
                "systemctl daemon-reload".into(),
                "systemctl enable --now keepalived.service".into(),
                format!("kubeadm {kubeadm} --config {}", cfg.display()),
            ]
        );
        let conf = root.path().join("etc/keepalived/keepalived.conf");
        let mode = std::fs::metadata(&conf).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&conf).unwrap();
        assert!(text.contains("    interface enp0s3\n"), "{text}");
        assert!(
            text.contains("        10.77.0.10/24 dev enp0s3\n"),
            "{text}"
        );
        assert!(text.contains("    mcast_src_ip 10.77.0.12\n"), "{text}");
        assert!(text.contains("script \"/usr/bin/launcher-firstboot check-apiserver\""));
    }
}

#[test]
fn kubeadm_runs_once_a_boot_and_after_its_own_leftovers_only_behind_a_reset() {
    use Kubeadm::*;
    // (succeeded in this boot, rebooted, manifests there) → what to do
    let cases = [
        ((false, false, false), Run),
        ((false, true, false), Run),
        ((false, false, true), ResetThenRun),
        ((false, true, true), Skip),
        ((true, false, true), Skip),
        ((true, false, false), Skip),
    ];
    for ((done, rebooted, manifests), want) in cases {
        assert_eq!(
            kubeadm_step(done, rebooted, manifests),
            want,
            "{done} {rebooted} {manifests}"
        );
    }
    let root = tempfile::tempdir().unwrap();
    assert!(!manifests_present(root.path()).unwrap());
    std::fs::create_dir_all(root.path().join("etc/kubernetes/manifests")).unwrap();
    assert!(!manifests_present(root.path()).unwrap());
    std::fs::write(root.path().join("etc/kubernetes/manifests/etcd.yaml"), "").unwrap();
    assert!(manifests_present(root.path()).unwrap());
}

#[test]
fn a_master_starts_keepalived_even_when_kubeadm_is_not_run_again() {
    let root = tempfile::tempdir().unwrap();
    let os = recording();
    install(root.path(), &os, &vip_master(join(), true), false).unwrap();
    assert_eq!(
        commands(&os).last().unwrap(),
        "systemctl enable --now keepalived.service"
    );
}

#[test]
fn workers_and_clusters_without_a_vip_start_no_keepalived() {
    let mut worker = crate::test_plan::worker_plan("h", "v1.33.4", vec![]);
    worker.vip = vip_master(join(), true).vip;
    let single = vip_master(join(), false);
    for plan in [worker, single] {
        let root = tempfile::tempdir().unwrap();
        let mut os = recording();
        os.outputs.insert(
            "systemctl".into(),
            "ActiveState=active\nNRestarts=0\n".into(),
        );
        install(root.path(), &os, &plan, true).unwrap();
        let ran = commands(&os);
        assert!(
            !ran.iter()
                .any(|c| c.contains("keepalived") || c.starts_with("ip ")),
            "{ran:?}"
        );
        assert!(!root.path().join("etc/keepalived").exists());
    }
}
