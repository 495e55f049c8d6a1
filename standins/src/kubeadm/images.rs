//! `kubeadm config images list --config FILE`: the images kubeadm pulls, read from the
//! configuration as kubeadm's `images.GetControlPlaneImages` reads it. The API server,
//! controller manager and scheduler from `imageRepository` at `kubernetesVersion`; kube-proxy
//! unless `proxy.disabled`; CoreDNS unless `dns.disabled`, from `dns.imageRepository` (else
//! `imageRepository`; `/coredns` is added under the repository, and upstream's own registry
//! keeps its `coredns/coredns` path); pause; etcd only for a local etcd. The pause and CoreDNS
//! tags are the ones kubeadm pins for the version.

use crate::docs::{Doc, str_at};
use serde_json::Value;

const UPSTREAM: &str = "registry.k8s.io";

/// `PauseVersion` and `CoreDNSVersion` of kubeadm's `constants.go` at the latest patch of each
/// minor the stand-in takes: its own copy, as each kubeadm binary has its own, so that the
/// stand-in checks Launcher's table instead of repeating it.
const CONSTANTS: &[(u32, &str, &str)] = &[
    (22, "3.5", "v1.8.4"),
    (23, "3.6", "v1.8.6"),
    (24, "3.7", "v1.8.6"),
    (25, "3.8", "v1.9.3"),
    (26, "3.9", "v1.9.3"),
    (27, "3.9", "v1.10.1"),
    (28, "3.9", "v1.10.1"),
    (29, "3.9", "v1.11.1"),
    (30, "3.9", "v1.11.3"),
    (31, "3.10", "v1.11.3"),
    (32, "3.10", "v1.11.3"),
    (33, "3.10", "v1.12.0"),
    (34, "3.10.1", "v1.12.1"),
    (35, "3.10.1", "v1.13.1"),
];

/// The pause tag kubeadm pins for `kubernetes_version` (`vX.Y.Z`).
pub fn pause_tag(kubernetes_version: &str) -> Option<&'static str> {
    let minor = super::minor_of(kubernetes_version)?;
    CONSTANTS
        .iter()
        .find(|(m, _, _)| *m == minor)
        .map(|(_, pause, _)| *pause)
}

fn disabled(cluster: &Value, addon: &str) -> bool {
    cluster
        .get(addon)
        .and_then(|a| a.get("disabled"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The image list of the ClusterConfiguration in `docs`, in kubeadm's order.
pub fn list(file: &str, docs: &[Doc]) -> Result<Vec<String>, String> {
    let cluster = docs
        .iter()
        .find(|d| d.kind == "ClusterConfiguration")
        .map(|d| &d.value)
        .ok_or_else(|| {
            format!("{file}: no ClusterConfiguration: an unpinned kubeadm would fetch the version from the internet")
        })?;
    let given = str_at(cluster, "kubernetesVersion").ok_or_else(|| {
        format!("{file}: no ClusterConfiguration.kubernetesVersion: an unpinned kubeadm would fetch the version from the internet")
    })?;
    let (_, pause, coredns) = super::minor_of(given)
        .and_then(|minor| CONSTANTS.iter().find(|(m, _, _)| *m == minor))
        .ok_or_else(|| {
            format!("{file}: kubernetesVersion {given}: not a version this stand-in knows the images of (1.22 to 1.35)")
        })?;
    let repo = str_at(cluster, "imageRepository").unwrap_or(UPSTREAM);
    // Image tags cannot hold `+`; kubeadm writes build metadata with `_`.
    let tag = given.replace('+', "_");
    let mut images: Vec<String> = [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ]
    .iter()
    .map(|name| format!("{repo}/{name}:{tag}"))
    .collect();
    if !disabled(cluster, "proxy") {
        images.push(format!("{repo}/kube-proxy:{tag}"));
    }
    if !disabled(cluster, "dns") {
        let dns_repo = str_at(cluster, "dns/imageRepository").unwrap_or(repo);
        let path = if dns_repo == UPSTREAM {
            format!("{UPSTREAM}/coredns/coredns")
        } else {
            format!("{dns_repo}/coredns")
        };
        let dns_tag = str_at(cluster, "dns/imageTag").unwrap_or(coredns);
        images.push(format!("{path}:{dns_tag}"));
    }
    images.push(format!("{repo}/pause:{pause}"));
    if let Some(local) = cluster.get("etcd").and_then(|e| e.get("local")) {
        let etcd_repo = str_at(local, "imageRepository").unwrap_or(repo);
        let etcd_tag = str_at(local, "imageTag").ok_or_else(|| {
            format!("{file}: a local etcd without etcd.local.imageTag: the stand-in does not know kubeadm's etcd tags")
        })?;
        images.push(format!("{etcd_repo}/etcd:{etcd_tag}"));
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(cluster: Value) -> Vec<Doc> {
        vec![Doc {
            index: 1,
            api_version: "kubeadm.k8s.io/v1beta4".into(),
            kind: "ClusterConfiguration".into(),
            value: cluster,
        }]
    }

    /// `kubeadm config images list` of v1.33.4 and v1.30.14 with the defaults
    /// (`reference/kubeadm-behaviour.md` §7).
    #[test]
    fn upstream_defaults_are_kubeadms_lists() {
        let upstream = |v: &str, coredns: &str, pause: &str, etcd: &str| -> Vec<String> {
            [
                format!("kube-apiserver:{v}"),
                format!("kube-controller-manager:{v}"),
                format!("kube-scheduler:{v}"),
                format!("kube-proxy:{v}"),
                format!("coredns/coredns:{coredns}"),
                format!("pause:{pause}"),
                format!("etcd:{etcd}"),
            ]
            .iter()
            .map(|i| format!("registry.k8s.io/{i}"))
            .collect()
        };
        for (v, coredns, pause, etcd) in [
            ("v1.33.4", "v1.12.0", "3.10", "3.5.21-0"),
            ("v1.30.14", "v1.11.3", "3.9", "3.5.15-0"),
        ] {
            let cluster = json!({"kubernetesVersion": v, "etcd": {"local": {"imageTag": etcd}}});
            assert_eq!(
                list("c.yaml", &doc(cluster)).unwrap(),
                upstream(v, coredns, pause, etcd),
                "{v}"
            );
        }
    }

    #[test]
    fn repositories_disabled_addons_and_refusals() {
        let cluster = json!({
            "kubernetesVersion": "v1.33.4",
            "imageRepository": "10.77.0.1:8443",
            "dns": {"disabled": true},
            "etcd": {"external": {"endpoints": ["https://10.77.0.11:2379"]}},
        });
        assert_eq!(
            list("c.yaml", &doc(cluster)).unwrap(),
            [
                "10.77.0.1:8443/kube-apiserver:v1.33.4",
                "10.77.0.1:8443/kube-controller-manager:v1.33.4",
                "10.77.0.1:8443/kube-scheduler:v1.33.4",
                "10.77.0.1:8443/kube-proxy:v1.33.4",
                "10.77.0.1:8443/pause:3.10",
            ]
        );
        // Another repository gets CoreDNS under `/coredns`, a DNS repository of its own too.
        let mirrored = json!({"kubernetesVersion": "v1.33.4", "imageRepository": "mirror.example",
                              "proxy": {"disabled": true}, "dns": {"imageTag": "v1.12.1"}});
        let listed = list("c.yaml", &doc(mirrored)).unwrap();
        assert_eq!(listed[3], "mirror.example/coredns:v1.12.1");
        assert_eq!(listed.len(), 5);
        let refused = [
            (
                json!({}),
                "c.yaml: no ClusterConfiguration.kubernetesVersion: an unpinned kubeadm would fetch the version from the internet",
            ),
            (
                json!({"kubernetesVersion": "v1.21.0"}),
                "c.yaml: kubernetesVersion v1.21.0: not a version this stand-in knows the images of (1.22 to 1.35)",
            ),
            (
                json!({"kubernetesVersion": "v1.33.4", "etcd": {"local": {}}}),
                "c.yaml: a local etcd without etcd.local.imageTag: the stand-in does not know kubeadm's etcd tags",
            ),
        ];
        for (cluster, error) in refused {
            assert_eq!(list("c.yaml", &doc(cluster)).unwrap_err(), error);
        }
    }
}
