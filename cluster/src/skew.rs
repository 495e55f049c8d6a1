//! Which node images a cluster takes, by the Kubernetes version an image carries: a master's
//! kubeadm and control-plane images are the cluster's exact release; a worker's kubelet
//! follows Kubernetes' version-skew policy (never newer than the API server, at most three
//! minor versions older from 1.28 on, two before).

use crate::api::Role;
use crate::spec::KubeVersion;

/// How many minor versions a kubelet may trail the API server of `cluster`.
pub fn kubelet_skew(cluster: KubeVersion) -> u32 {
    if cluster.at_least(28) { 3 } else { 2 }
}

/// Whether a host whose image carries `image` may become a `role` node of a `cluster` cluster;
/// the reason, naming both versions, when it may not.
pub fn image_fits(role: Role, image: KubeVersion, cluster: KubeVersion) -> Result<(), String> {
    let carries = format!("this host's image carries Kubernetes {image}");
    match role {
        Role::Master if image != cluster => Err(format!(
            "{carries}, and a master of this cluster runs exactly {cluster} (kubeadm and the \
             control-plane images are of one release): boot it from an image built for {cluster}"
        )),
        Role::Worker if image.minor() > cluster.minor() => Err(format!(
            "{carries}, newer than the cluster's {cluster}: a kubelet may not be newer than the \
             API server; boot it from an image for v1.{} or older",
            cluster.minor()
        )),
        Role::Worker if image.minor() + kubelet_skew(cluster) < cluster.minor() => Err(format!(
            "{carries}, more than {} minor versions older than the cluster's {cluster}: boot it \
             from an image for v1.{} or newer",
            kubelet_skew(cluster),
            cluster.minor() - kubelet_skew(cluster)
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> KubeVersion {
        s.parse().unwrap()
    }

    #[test]
    fn masters_take_the_exact_release_workers_the_skew_policy() {
        let fits = [
            (Role::Master, "v1.33.4", "v1.33.4"),
            (Role::Worker, "v1.33.4", "v1.33.4"),
            (Role::Worker, "v1.33.9", "v1.33.4"),
            (Role::Worker, "v1.30.0", "v1.33.4"),
            (Role::Worker, "v1.25.2", "v1.27.1"),
        ];
        for (role, image, cluster) in fits {
            assert_eq!(
                image_fits(role, v(image), v(cluster)),
                Ok(()),
                "{role} {image} {cluster}"
            );
        }
        let refused = [
            (
                Role::Master,
                "v1.33.5",
                "v1.33.4",
                "this host's image carries Kubernetes v1.33.5, and a master of this cluster runs \
                 exactly v1.33.4 (kubeadm and the control-plane images are of one release): boot \
                 it from an image built for v1.33.4",
            ),
            (
                Role::Worker,
                "v1.34.0",
                "v1.33.4",
                "this host's image carries Kubernetes v1.34.0, newer than the cluster's v1.33.4: a \
                 kubelet may not be newer than the API server; boot it from an image for v1.33 or \
                 older",
            ),
            (
                Role::Worker,
                "v1.29.9",
                "v1.33.4",
                "this host's image carries Kubernetes v1.29.9, more than 3 minor versions older \
                 than the cluster's v1.33.4: boot it from an image for v1.30 or newer",
            ),
            (
                Role::Worker,
                "v1.24.0",
                "v1.27.1",
                "this host's image carries Kubernetes v1.24.0, more than 2 minor versions older \
                 than the cluster's v1.27.1: boot it from an image for v1.25 or newer",
            ),
        ];
        for (role, image, cluster, why) in refused {
            assert_eq!(image_fits(role, v(image), v(cluster)), Err(why.into()));
        }
    }
}
