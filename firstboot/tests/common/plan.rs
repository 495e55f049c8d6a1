//! The worker's plan firstboot's tests start from, written once for the unit tests (through
//! `#[path]` in `lib.rs`) and the integration tests (through `common`).

use cluster::api::{InstallAction, Plan, PlanFile, Role};
use cluster::kubeadm::{KubeadmAddons, node_images};
use cluster::spec::{KubeVersion, RegistryHost};

/// A sealed worker's plan for `host_id` with `files`, its images in the registry at
/// 10.0.0.1:8443.
pub fn worker_plan(host_id: &str, version: &str, files: Vec<PlanFile>) -> Plan {
    let v: KubeVersion = version.parse().unwrap();
    let registry: RegistryHost = "10.0.0.1:8443".parse().unwrap();
    Plan {
        host_id: host_id.into(),
        cluster: "demo".into(),
        hostname: "demo-w1".into(),
        role: Role::Worker,
        ip: None,
        kubernetes_version: version.into(),
        files,
        etcd: None,
        install: InstallAction::Worker {
            kubelet_config_path: "/var/lib/kubelet/config.yaml".into(),
            kubeconfig_path: "/etc/kubernetes/kubelet.conf".into(),
        },
        vip: None,
        images: node_images(&v, &registry, KubeadmAddons::ALL),
        digest: String::new(),
    }
    .seal()
}
