//! The container images kubeadm runs for each Kubernetes minor, named at the seed's registry.
//!
//! kubeadm pins CoreDNS and pause per release (its `constants.go`); the tags below are those of
//! the latest patch of each minor. The builder preloads exactly these references, and each host's
//! plan carries them ([`node_images`]): containerd's `sandbox_image` names [`pause_image`],
//! since kubeadm's `imageRepository` does not reach it (kubeadm#2801).

use crate::api::NodeImages;
use crate::spec::{KubeVersion, RegistryHost};

/// `(minor, pause tag, CoreDNS tag)` as kubeadm pins them: `PauseVersion` and `CoreDNSVersion`
/// in `cmd/kubeadm/app/constants/constants.go` of kubernetes/kubernetes at each minor's release
/// branch. Checked against that file at release-1.31 (3.10, v1.11.3) and release-1.35 (3.10.1,
/// v1.13.1), against kubeadm's own per-release pause table for 1.22-1.26 (3.5, 3.6, 3.7, 3.8,
/// 3.9), and against `kubeadm config images list` of v1.30.14 and v1.33.4
/// (`reference/kubeadm-behaviour.md` §7). kubeadm's `imageRepository` never changes the pause
/// tag, so a wrong row here leaves containerd asking for a sandbox image nobody imported.
const PINNED: &[(u32, &str, &str)] = &[
    (22, "3.5", "v1.8.4"),
    (23, "3.6", "v1.8.6"),
    (24, "3.7", "v1.8.6"),
    (25, "3.8", "v1.9.3"),
    (26, "3.9", "v1.9.3"),
    (27, "3.9", "v1.10.1"),
    (28, "3.9", "v1.10.1"),
    (29, "3.9", "v1.11.1"),
    (30, "3.9", "v1.11.1"),
    (31, "3.10", "v1.11.3"),
    (32, "3.10", "v1.11.3"),
    (33, "3.10", "v1.12.0"),
    (34, "3.10.1", "v1.12.1"),
    (35, "3.10.1", "v1.13.1"),
];

fn pinned(version: &KubeVersion) -> (&'static str, &'static str) {
    // A KubeVersion is always within MIN_MINOR..=MAX_MINOR, which the table covers.
    let (_, pause, coredns) = PINNED
        .iter()
        .find(|(minor, _, _)| *minor == version.minor())
        .expect("every renderable minor has pinned image tags");
    (pause, coredns)
}

/// The pause (sandbox) image kubeadm expects: `<registry>/pause:<tag>`.
pub fn pause_image(version: &KubeVersion, registry: &RegistryHost) -> String {
    format!("{registry}/pause:{}", pinned(version).0)
}

/// The CoreDNS tag kubeadm deploys for this version.
pub fn coredns_tag(version: &KubeVersion) -> &'static str {
    pinned(version).1
}

/// The repository set as `dns.imageRepository`: kubeadm appends `/coredns`, so the image keeps
/// upstream's `coredns/coredns` path under the registry (kubeadm#2714).
pub fn coredns_repository(registry: &RegistryHost) -> String {
    format!("{registry}/coredns")
}

/// The CoreDNS image: `<registry>/coredns/coredns:<tag>`.
pub fn coredns_image(version: &KubeVersion, registry: &RegistryHost) -> String {
    format!(
        "{}/coredns:{}",
        coredns_repository(registry),
        coredns_tag(version)
    )
}

/// Every image a node pulls with an external etcd: the four Kubernetes components, pause and
/// CoreDNS, in that order.
pub fn control_plane_images(version: &KubeVersion, registry: &RegistryHost) -> Vec<String> {
    let mut images: Vec<String> = [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kube-proxy",
    ]
    .iter()
    .map(|name| format!("{registry}/{name}:{version}"))
    .collect();
    images.push(pause_image(version, registry));
    images.push(coredns_image(version, registry));
    images
}

/// The images of a host's plan: the sandbox image and every image its kubelet runs.
pub fn node_images(version: &KubeVersion, registry: &RegistryHost) -> NodeImages {
    NodeImages {
        sandbox: pause_image(version, registry),
        all: control_plane_images(version, registry),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{MAX_MINOR, MIN_MINOR};

    #[test]
    fn every_renderable_minor_has_tags() {
        for minor in MIN_MINOR..=MAX_MINOR {
            let v: KubeVersion = format!("v1.{minor}.0").parse().unwrap();
            let _ = pinned(&v);
        }
    }

    #[test]
    fn pause_tags_are_kubeadms() {
        let r: RegistryHost = "10.77.0.1:8443".parse().unwrap();
        let want = [
            ("v1.22.17", "3.5"),
            ("v1.23.17", "3.6"),
            ("v1.24.17", "3.7"),
            ("v1.25.16", "3.8"),
            ("v1.26.15", "3.9"),
            ("v1.30.14", "3.9"),
            ("v1.31.0", "3.10"),
            ("v1.33.4", "3.10"),
            ("v1.34.1", "3.10.1"),
            ("v1.35.0", "3.10.1"),
        ];
        for (version, tag) in want {
            let v: KubeVersion = version.parse().unwrap();
            let images = node_images(&v, &r);
            assert_eq!(
                images.sandbox,
                format!("10.77.0.1:8443/pause:{tag}"),
                "{version}"
            );
            assert!(images.all.contains(&images.sandbox), "{version}");
        }
    }

    #[test]
    fn images_for_1_33_at_the_seed() {
        let v: KubeVersion = "v1.33.4".parse().unwrap();
        let r: RegistryHost = "10.77.0.1:8443".parse().unwrap();
        assert_eq!(
            control_plane_images(&v, &r),
            [
                "10.77.0.1:8443/kube-apiserver:v1.33.4",
                "10.77.0.1:8443/kube-controller-manager:v1.33.4",
                "10.77.0.1:8443/kube-scheduler:v1.33.4",
                "10.77.0.1:8443/kube-proxy:v1.33.4",
                "10.77.0.1:8443/pause:3.10",
                "10.77.0.1:8443/coredns/coredns:v1.12.0",
            ]
        );
        let old: KubeVersion = "v1.24.17".parse().unwrap();
        assert_eq!(pause_image(&old, &r), "10.77.0.1:8443/pause:3.7");
    }
}
