//! The VIP on a master: the interface found from `ip`, keepalived's configuration, the check;
//! the plans and recording `Os` that `node`'s tests start keepalived before kubeadm with.

use super::*;
use crate::os::{Action, RecordingOs};
use cluster::api::{InstallAction, Role, VipInstructions};

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

pub(crate) fn master(install: InstallAction, vip: bool) -> Plan {
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

pub(crate) fn join() -> InstallAction {
    InstallAction::JoinControlPlane {
        config_path: "/etc/kubernetes/kubeadm.yaml".into(),
    }
}

pub(crate) fn commands(os: &RecordingOs) -> Vec<String> {
    os.actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Run { cmd } => Some(cmd.to_string()),
            _ => None,
        })
        .collect()
}

pub(crate) fn recording() -> RecordingOs {
    let mut os = RecordingOs::new(Duration::ZERO, false);
    os.outputs.insert("ip".into(), IP_ADDR.into());
    os
}

#[test]
fn a_master_whose_address_no_interface_carries_stops_before_kubeadm() {
    let root = tempfile::tempdir().unwrap();
    let mut os = RecordingOs::new(Duration::ZERO, false);
    os.outputs.insert(
        "ip".into(),
        "1: lo    inet 127.0.0.1/8 scope host lo\n".into(),
    );
    let err = configure(root.path(), &os, &master(join(), true)).unwrap_err();
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
