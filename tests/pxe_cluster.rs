//! End to end: one master and one worker power on with blank disks and wrong clocks (the
//! master's in 2001), PXE-boot from the seed in a lab namespace, and both reach `done` with a
//! healthy etcd; `down` then stops every process and removes the namespace. Their data disks,
//! read from outside afterwards, show what each host was given: the worker holds no CA key, and
//! the kubeadm stand-in on the master checked a v1beta4 config naming the external etcd and the
//! seed's registry, and the kubelet stand-in on the worker its seed-signed kubeconfig.

mod common;

use serde::Deserialize;

use std::process::Command;

use common::{DataDisk, journal_plan, namespaces, plan_file, print_logs, text};
use lab::plan::namespace_for;
use lab::procs::Procfs;
use lab::state::LabState;

/// CA keys a master holds and a worker never does.
const CA_KEYS: [&str; 2] = ["/etc/kubernetes/pki/ca.key", "/etc/kubernetes/pki/sa.key"];
/// CA keys no host holds: the seed signs every etcd and front-proxy certificate.
const SEED_ONLY_KEYS: [&str; 2] = [
    "/etc/kubernetes/pki/etcd/ca.key",
    "/etc/kubernetes/pki/front-proxy-ca.key",
];

#[test]
fn one_master_and_one_worker_boot_by_pxe_and_reach_done() {
    let Some(image) = common::image_or_skip() else {
        return;
    };
    let run_holder = tempfile::tempdir().unwrap();
    let run = run_holder.path().to_path_buf();
    let output = Command::new(common::lab_bin())
        .args([
            "up",
            "--masters",
            "1",
            "--workers",
            "1",
            "--timeout",
            "1500",
            "--image",
        ])
        .arg(&image)
        .arg("--run-dir")
        .arg(&run)
        .output()
        .unwrap();
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    let state = LabState::load(&run).unwrap();
    let checked = std::panic::catch_unwind(|| {
        assert!(
            output.status.success(),
            "launcher-lab up failed\n{stdout}\n{stderr}"
        );
        assert!(stdout.contains("every host is done"), "{stdout}");
        assert!(stdout.contains("m1 (master"), "{stdout}");
        assert!(stdout.contains("w1 (worker"), "{stdout}");
        assert!(stdout.contains("done succeeded"), "{stdout}");
        assert!(stdout.contains(" voting   healthy "), "{stdout}");
        assert!(stdout.contains("the cluster is up"), "{stdout}");
        let state = state.as_ref().expect("a running lab has a state file");
        assert_eq!(state.namespace, namespace_for(&run));
        assert_eq!(state.processes.len(), 4, "{state:?}");
        assert!(namespaces().contains(&state.namespace));
        // m1 powered on in 2001 (systemd advances a clock that old to its own epoch, still
        // months behind) and stepped its clock from the seed before enrolling.
        let m1 = stdout
            .lines()
            .find(|l| l.trim_start().starts_with("m1 "))
            .unwrap_or_default();
        assert!(
            m1.contains("rtc 2001-01-01T00:00:00")
                && m1.contains("behind the seed, then")
                && m1.contains(" ms off"),
            "{stdout}"
        );
    });
    if let Err(panic) = checked {
        print_logs(&run);
        let _ = common::lab(&run, &["down"]);
        std::panic::resume_unwind(panic);
    }
    let state = state.unwrap();

    let down = common::lab(&run, &["down"]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    for p in &state.processes {
        assert!(
            !p.runs(&Procfs::system()),
            "{} ({}) still runs after down",
            p.name,
            p.pid
        );
    }
    assert!(!namespaces().contains(&state.namespace));
    assert_eq!(LabState::load(&run).unwrap(), None);
    common::assert_nothing_left(&run, &state);

    let master = DataDisk::open(&run.join("vm-1.data.raw"));
    let worker = DataDisk::open(&run.join("vm-2.data.raw"));
    let (master_plan, worker_plan) = (journal_plan(&master), journal_plan(&worker));
    assert_eq!(master_plan["role"], "master", "{master_plan}");
    assert_eq!(worker_plan["role"], "worker", "{worker_plan}");

    // The worker's tree has no CA key: not in its plan, and not a byte of the cluster CA's key
    // anywhere on its disk, where the master's disk has it.
    for key in CA_KEYS {
        assert!(
            plan_file(&master_plan, key).is_some(),
            "the master lacks {key}"
        );
        assert_eq!(plan_file(&worker_plan, key), None, "the worker got {key}");
    }
    for key in SEED_ONLY_KEYS {
        assert_eq!(plan_file(&master_plan, key), None, "the master got {key}");
        assert_eq!(plan_file(&worker_plan, key), None, "the worker got {key}");
    }
    let ca_key = plan_file(&master_plan, CA_KEYS[0]).unwrap();
    let key_line = ca_key
        .lines()
        .find(|l| !l.starts_with("-----") && l.len() >= 40)
        .expect("a PEM body line");
    assert!(master.holds_bytes(key_line));
    assert!(
        !worker.holds_bytes(key_line),
        "the CA key is on the worker's disk"
    );

    // The kubeadm stand-in on the master checked and recorded a v1beta4 config naming the
    // external etcd and the seed's registry.
    let record = master
        .read("launcher/standin/kubeadm-init.json")
        .expect("the stand-in recorded kubeadm init");
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["standin_for"], "kubeadm");
    assert_eq!(
        record["checked"]["api_version"], "kubeadm.k8s.io/v1beta4",
        "{record}"
    );
    let config = master
        .read("launcher/standin/kubeadm-init.yaml")
        .expect("the stand-in kept the config it was given");
    let cluster_config = serde_yaml::Deserializer::from_str(&config)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .find(|d| d["kind"] == "ClusterConfiguration")
        .expect("a ClusterConfiguration");
    assert_eq!(cluster_config["apiVersion"], "kubeadm.k8s.io/v1beta4");
    assert_eq!(cluster_config["imageRepository"], "10.77.0.1:8443");
    let endpoints: Vec<&str> = cluster_config["etcd"]["external"]["endpoints"]
        .as_sequence()
        .expect("external etcd endpoints")
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert_eq!(endpoints, ["https://10.77.0.101:2379"]);
    // The worker runs no kubeadm: the kubelet stand-in checked its seed-signed kubeconfig,
    // which points at the control-plane endpoint.
    assert_eq!(worker.read("launcher/standin/kubeadm-join.json"), None);
    let kubelet = worker
        .read("launcher/standin/kubelet.json")
        .expect("the kubelet stand-in recorded its start on the worker");
    let kubelet: serde_json::Value = serde_json::from_str(&kubelet).unwrap();
    assert_eq!(kubelet["standin_for"], "kubelet");
    assert_eq!(kubelet["server"], "https://10.77.0.10:6443", "{kubelet}");
}
