//! The VIP on a master: the interface found from `ip`, keepalived configured and started before
//! kubeadm, and nothing of it on workers or in clusters without a VIP.

use super::*;
use crate::node;
use crate::os::{Action, RecordingOs};
use cluster::api::{InstallAction, Role, VipInstructions};
use std::os::unix::fs::PermissionsExt;

const IP_ADDR: &str = "\
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
2: enp0s3    inet 10.77.0.12/24 brd 10.77.0.255 scope global enp0s3\\       valid_lft forever preferred_lft forever
5: eth1@if6    inet 10.213.0.12/26 scope global eth1\\       valid_lft forever preferred_lft forever
";

#[test]
fn the_interface_is_the_one_carrying_the_hosts_address() {
    let cases = [
        ("10.77.0.12", Some(("enp0s3", 24))),
        ("10.213.0.12", Some(("eth1", 26))),
        ("127.0.0.1", Some(("lo", 8))),
        ("10.77.0.13", None),
        ("10.77.0.1", None),
    ];
    for (address, want) in cases {
        let got = interface_of(IP_ADDR, address.parse().unwrap());
        let want = want.map(|(name, prefix)| (name.to_string(), prefix));
        assert_eq!(got, want, "{address}");
    }
    assert_eq!(interface_of("", "10.77.0.12".parse().unwrap()), None);
    assert_eq!(
        interface_of("garbage\n2: x inet\n", "10.77.0.12".parse().unwrap()),
        None
    );
}

fn master(install: InstallAction, vip: bool) -> Plan {
    Plan {
        role: Role::Master,
        hostname: "demo-m2".into(),
        ip: Some("10.77.0.12".into()),
        install,
        vip: vip.then(|| VipInstructions {
            address: "10.77.0.10".parse().unwrap(),
            router_id: 42,
            priority: 100,
            advert_interval_cs: 25,
        }),
        ..crate::test_plan::worker_plan("h", "v1.33.4", vec![])
    }
}

fn join() -> InstallAction {
    InstallAction::JoinControlPlane {
        config_path: "/etc/kubernetes/kubeadm.yaml".into(),
    }
}

fn commands(os: &RecordingOs) -> Vec<String> {
    os.actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Run { cmd } => Some(cmd.to_string()),
            _ => None,
        })
        .collect()
}

fn recording() -> RecordingOs {
    let mut os = RecordingOs::new(Duration::ZERO, false);
    os.outputs.insert("ip".into(), IP_ADDR.into());
    os
}

#[test]
fn a_master_starts_keepalived_before_kubeadm() {
    let init = InstallAction::Init {
        config_path: "/etc/kubernetes/kubeadm.yaml".into(),
    };
    for (action, kubeadm) in [(init, "init"), (join(), "join")] {
        let root = tempfile::tempdir().unwrap();
        let os = recording();
        node::install(root.path(), &os, &master(action, true), false).unwrap();
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
fn a_rebooted_master_starts_keepalived_even_when_kubeadm_is_not_run_again() {
    let root = tempfile::tempdir().unwrap();
    let manifest = root
        .path()
        .join("etc/kubernetes/manifests/kube-apiserver.yaml");
    std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
    std::fs::write(&manifest, "").unwrap();
    let os = recording();
    node::install(root.path(), &os, &master(join(), true), true).unwrap();
    assert_eq!(
        commands(&os).last().unwrap(),
        "systemctl enable --now keepalived.service"
    );
}

#[test]
fn workers_and_clusters_without_a_vip_start_no_keepalived() {
    let mut worker = crate::test_plan::worker_plan("h", "v1.33.4", vec![]);
    worker.vip = master(join(), true).vip;
    let single = master(join(), false);
    for plan in [worker, single] {
        let root = tempfile::tempdir().unwrap();
        let mut os = recording();
        os.outputs.insert(
            "systemctl".into(),
            "ActiveState=active\nNRestarts=0\n".into(),
        );
        node::install(root.path(), &os, &plan, false).unwrap();
        let ran = commands(&os);
        assert!(
            !ran.iter()
                .any(|c| c.contains("keepalived") || c.starts_with("ip ")),
            "{ran:?}"
        );
        assert!(!root.path().join("etc/keepalived").exists());
    }
}

#[test]
fn a_master_whose_address_no_interface_carries_stops_before_kubeadm() {
    let root = tempfile::tempdir().unwrap();
    let mut os = RecordingOs::new(Duration::ZERO, false);
    os.outputs.insert(
        "ip".into(),
        "1: lo    inet 127.0.0.1/8 scope host lo\n".into(),
    );
    let err = node::install(root.path(), &os, &master(join(), true), false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no interface carries 10.77.0.12; `ip -o -4 addr show` lists:\n\
         1: lo    inet 127.0.0.1/8 scope host lo"
    );
    assert_eq!(commands(&os), ["ip -o -4 addr show"]);

    let mut plan = master(join(), true);
    plan.ip = None;
    let err = configure(root.path(), &recording(), &plan).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the plan gives this master the VIP but no IPv4 address of its own (None)"
    );
}

#[test]
fn the_check_fails_without_the_cluster_ca_or_an_api_server() {
    let root = tempfile::tempdir().unwrap();
    let err = check_apiserver(root.path()).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "reading the cluster CA {}/etc/kubernetes/pki/ca.crt",
            root.path().display()
        )
    );
}
