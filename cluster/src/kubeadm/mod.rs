//! kubeadm configuration for a node: Init/Cluster/Join configurations, the kubelet's and
//! kube-proxy's, rendered as YAML for `kubeadm.k8s.io/v1beta3` (1.22-1.30) or `v1beta4` (1.31+).
//!
//! Every master talks to an external etcd (the etcd members Launcher runs on the masters), pulls
//! from the seed's registry, and already has its certificates on disk when kubeadm runs.

mod images;
mod render;

use std::net::IpAddr;

pub use self::images::{
    KubeadmAddons, control_plane_images, coredns_image, coredns_repository, coredns_tag,
    node_images, pause_image, required_images,
};
pub use self::render::{render_init, render_join_control_plane, render_kubelet_config};
use crate::spec::{ClusterSpec, Hostname};

/// containerd's CRI socket, as kubeadm and the kubelet name it.
pub const CRI_SOCKET: &str = "unix:///run/containerd/containerd.sock";
/// Where kubeadm finds and the seed writes the cluster's certificates.
pub const PKI_DIR: &str = "/etc/kubernetes/pki";
/// The discovery kubeconfig of a joining master: the cluster's CA, the control-plane endpoint
/// and the node's own client credentials (which kubeadm then uses for the TLS bootstrap), all
/// written by the seed before `kubeadm join` runs.
pub const DISCOVERY_KUBECONFIG: &str = "/etc/kubernetes/discovery.conf";
/// Where the kubelet reads its configuration.
pub const KUBELET_CONFIG_PATH: &str = "/var/lib/kubelet/config.yaml";
/// The port every API server listens on locally.
pub const API_SERVER_PORT: u16 = 6443;

/// What differs between masters: who this node is and where etcd runs.
#[derive(Debug, Clone)]
pub struct NodeConfig<'a> {
    pub spec: &'a ClusterSpec,
    pub node_name: &'a Hostname,
    /// The address the API server advertises and the kubelet reports (`node-ip`).
    pub advertise_address: IpAddr,
    /// `https://IP:2379` of every etcd member (every master): [`crate::etcd::client_urls`].
    pub etcd_endpoints: Vec<String>,
}
