//! The container images kubeadm runs for each Kubernetes minor, named at the seed's registry.
//!
//! kubeadm pins CoreDNS and pause per release (its `constants.go`); the tags below are those of
//! the latest patch of each minor. The builder preloads exactly these references, and each host's
//! plan carries them ([`node_images`]): containerd's `sandbox_image` names [`pause_image`],
//! since kubeadm's `imageRepository` does not reach it (kubeadm#2801).

use crate::api::NodeImages;
use crate::spec::{ClusterSpec, InitPhase, KubeVersion, RegistryHost};

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
    (30, "3.9", "v1.11.3"),
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

/// The add-ons kubeadm deploys itself and therefore lists images for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KubeadmAddons {
    pub coredns: bool,
    pub kube_proxy: bool,
}

impl KubeadmAddons {
    pub const ALL: KubeadmAddons = KubeadmAddons {
        coredns: true,
        kube_proxy: true,
    };

    /// As `kubeadm init` reads `skipPhases` (its `manageSkippedAddons`): `addon` skips both,
    /// `addon/coredns` and `addon/kube-proxy` one each, and a skipped add-on is disabled, so
    /// its image is not listed or pulled.
    pub fn from_skip_phases(phases: &[InitPhase]) -> KubeadmAddons {
        let skipped = |name: &str| phases.iter().any(|p| p.as_str() == name);
        KubeadmAddons {
            coredns: !skipped("addon") && !skipped("addon/coredns"),
            kube_proxy: !skipped("addon") && !skipped("addon/kube-proxy"),
        }
    }
}

/// Every image kubeadm pulls with an external etcd, in `kubeadm config images list`'s order:
/// the API server, controller manager and scheduler, kube-proxy and CoreDNS unless disabled,
/// then pause (no etcd image: the etcd is external).
pub fn control_plane_images(
    version: &KubeVersion,
    registry: &RegistryHost,
    addons: KubeadmAddons,
) -> Vec<String> {
    let mut names = vec![
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ];
    if addons.kube_proxy {
        names.push("kube-proxy");
    }
    let mut images: Vec<String> = names
        .iter()
        .map(|name| format!("{registry}/{name}:{version}"))
        .collect();
    if addons.coredns {
        images.push(coredns_image(version, registry));
    }
    images.push(pause_image(version, registry));
    images
}

/// Every image a cluster of `spec` pulls: what `images required` lists and what must be in the
/// seed's registry before a host installs.
pub fn required_images(spec: &ClusterSpec) -> Vec<String> {
    control_plane_images(
        &spec.kubernetes_version,
        &spec.seed.registry,
        KubeadmAddons::from_skip_phases(&spec.skip_phases),
    )
}

/// The images of a host's plan: the sandbox image and every image its kubelet runs.
pub fn node_images(
    version: &KubeVersion,
    registry: &RegistryHost,
    addons: KubeadmAddons,
) -> NodeImages {
    NodeImages {
        sandbox: pause_image(version, registry),
        all: control_plane_images(version, registry, addons),
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
            let images = node_images(&v, &r, KubeadmAddons::ALL);
            assert_eq!(
                images.sandbox,
                format!("10.77.0.1:8443/pause:{tag}"),
                "{version}"
            );
            assert!(images.all.contains(&images.sandbox), "{version}");
        }
    }

    /// `kubeadm config images list` of v1.30.14 and v1.33.4 (`reference/kubeadm-behaviour.md`
    /// §7) with `imageRepository` at the seed and its etcd line dropped, as with an external
    /// etcd.
    #[test]
    fn the_lists_are_kubeadms_for_1_30_and_1_33() {
        let r: RegistryHost = "10.77.0.1:8443".parse().unwrap();
        let kubeadm = |version: &str, coredns: &str, pause: &str| -> Vec<String> {
            [
                format!("kube-apiserver:{version}"),
                format!("kube-controller-manager:{version}"),
                format!("kube-scheduler:{version}"),
                format!("kube-proxy:{version}"),
                format!("coredns/coredns:{coredns}"),
                format!("pause:{pause}"),
            ]
            .iter()
            .map(|i| format!("10.77.0.1:8443/{i}"))
            .collect()
        };
        for (version, coredns, pause) in [
            ("v1.30.14", "v1.11.3", "3.9"),
            ("v1.33.4", "v1.12.0", "3.10"),
        ] {
            let v: KubeVersion = version.parse().unwrap();
            assert_eq!(
                control_plane_images(&v, &r, KubeadmAddons::ALL),
                kubeadm(version, coredns, pause),
                "{version}"
            );
        }
        let old: KubeVersion = "v1.24.17".parse().unwrap();
        assert_eq!(pause_image(&old, &r), "10.77.0.1:8443/pause:3.7");
    }

    #[test]
    fn skipped_addon_phases_drop_their_images() {
        let r: RegistryHost = "10.77.0.1:8443".parse().unwrap();
        let v: KubeVersion = "v1.33.4".parse().unwrap();
        let phases =
            |list: &[&str]| -> Vec<InitPhase> { list.iter().map(|p| p.parse().unwrap()).collect() };
        let listed = |skip: &[&str]| -> Vec<String> {
            control_plane_images(&v, &r, KubeadmAddons::from_skip_phases(&phases(skip)))
                .iter()
                .map(|i| i.trim_start_matches("10.77.0.1:8443/").to_owned())
                .collect()
        };
        let core = [
            "kube-apiserver:v1.33.4",
            "kube-controller-manager:v1.33.4",
            "kube-scheduler:v1.33.4",
        ];
        let with = |extra: &[&str]| -> Vec<String> {
            core.iter().chain(extra).map(|s| s.to_string()).collect()
        };
        assert_eq!(listed(&["addon"]), with(&["pause:3.10"]));
        assert_eq!(
            listed(&["addon/coredns"]),
            with(&["kube-proxy:v1.33.4", "pause:3.10"])
        );
        assert_eq!(
            listed(&["addon/kube-proxy"]),
            with(&["coredns/coredns:v1.12.0", "pause:3.10"])
        );
        assert_eq!(
            listed(&["upload-certs", "show-join-command"]),
            with(&[
                "kube-proxy:v1.33.4",
                "coredns/coredns:v1.12.0",
                "pause:3.10"
            ])
        );
    }
}
