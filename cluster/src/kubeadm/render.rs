//! The YAML documents themselves, field by field as the kubeadm API reference names them.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::images::{KubeadmAddons, coredns_repository, coredns_tag};
use super::{API_SERVER_PORT, CRI_SOCKET, DISCOVERY_KUBECONFIG, NodeConfig, PKI_DIR};
use crate::spec::{ClusterSpec, Host, KubeadmApi};

/// How long kubeadm waits for the static pods; emulated and small machines need more than
/// kubeadm's 4 minutes.
const CONTROL_PLANE_TIMEOUT: &str = "10m0s";

/// `kubeadm init --config` for the first master: InitConfiguration, ClusterConfiguration,
/// KubeletConfiguration (kubeadm uploads it for every later node) and KubeProxyConfiguration.
pub fn render_init(node: &NodeConfig) -> String {
    let api = node.spec.kubernetes_version.kubeadm_api();
    let mut init = json!({
        "apiVersion": api.api_version(),
        "kind": "InitConfiguration",
        "localAPIEndpoint": {
            "advertiseAddress": node.advertise_address.to_string(),
            "bindPort": API_SERVER_PORT,
        },
        "nodeRegistration": node_registration(node, api),
    });
    if api == KubeadmApi::V1Beta4 {
        init["timeouts"] = timeouts();
    }
    if !node.spec.skip_phases.is_empty() {
        init["skipPhases"] = json!(node.spec.skip_phases);
    }
    documents(&[
        init,
        cluster_configuration(node, api),
        kubelet_configuration(node.spec),
        kube_proxy_configuration(node.spec),
    ])
}

/// `kubeadm join --config` for every other master. kubeadm join reads only the
/// JoinConfiguration from its file (the kubelet's and kube-proxy's come from the cluster), so
/// that is all this holds. Discovery is by [`DISCOVERY_KUBECONFIG`]; the certificates are
/// already in place, so no `certificateKey` is needed.
pub fn render_join_control_plane(node: &NodeConfig) -> String {
    let api = node.spec.kubernetes_version.kubeadm_api();
    let mut join = json!({
        "apiVersion": api.api_version(),
        "kind": "JoinConfiguration",
        "caCertPath": format!("{PKI_DIR}/ca.crt"),
        "discovery": { "file": { "kubeConfigPath": DISCOVERY_KUBECONFIG } },
        "controlPlane": {
            "localAPIEndpoint": {
                "advertiseAddress": node.advertise_address.to_string(),
                "bindPort": API_SERVER_PORT,
            },
        },
        "nodeRegistration": node_registration(node, api),
    });
    match api {
        KubeadmApi::V1Beta3 => join["discovery"]["timeout"] = json!("5m0s"),
        KubeadmApi::V1Beta4 => join["timeouts"] = timeouts(),
    }
    documents(&[join])
}

/// `/var/lib/kubelet/config.yaml` for every node, masters and workers alike.
pub fn render_kubelet_config(spec: &ClusterSpec) -> String {
    documents(&[kubelet_configuration(spec)])
}

/// Multi-document YAML: each document after a `---` line.
fn documents(docs: &[Value]) -> String {
    let mut out = String::new();
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(doc).expect("a JSON value always renders as YAML"));
    }
    out
}

/// Command-line arguments: a map in v1beta3, a list of `{name, value}` in v1beta4.
fn extra_args(api: KubeadmApi, args: &[(&str, String)]) -> Value {
    match api {
        KubeadmApi::V1Beta3 => Value::Object(
            args.iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect(),
        ),
        KubeadmApi::V1Beta4 => args
            .iter()
            .map(|(k, v)| json!({ "name": k, "value": v }))
            .collect(),
    }
}

fn node_registration(node: &NodeConfig, api: KubeadmApi) -> Value {
    let mut reg = json!({
        "name": node.node_name.as_str(),
        "criSocket": CRI_SOCKET,
        "imagePullPolicy": "IfNotPresent",
        "kubeletExtraArgs": extra_args(api, &[("node-ip", node.advertise_address.to_string())]),
    });
    // Unset means kubeadm's NoSchedule control-plane taint; an empty list means none.
    if node.spec.schedulable_masters {
        reg["taints"] = json!([]);
    }
    if !node.spec.ignore_preflight_errors.is_empty() {
        reg["ignorePreflightErrors"] = json!(node.spec.ignore_preflight_errors);
    }
    reg
}

fn timeouts() -> Value {
    json!({
        "controlPlaneComponentHealthCheck": CONTROL_PLANE_TIMEOUT,
        "kubeletHealthCheck": "4m0s",
        "kubernetesAPICall": "1m0s",
        "etcdAPICall": "2m0s",
        "tlsBootstrap": "5m0s",
        "discovery": "5m0s",
    })
}

/// Launcher's hardening flags with the operator's over them, one per name, sorted by name.
fn api_server_args<'a>(
    spec: &'a ClusterSpec,
    hardening: &[(&'a str, String)],
) -> Vec<(&'a str, String)> {
    let mut args: BTreeMap<&str, String> = hardening.iter().cloned().collect();
    args.extend(
        spec.api_server_extra_args
            .iter()
            .map(|(name, value)| (name.as_str(), value.to_string())),
    );
    args.into_iter().collect()
}

/// The API server certificate's extra names: the endpoint's host and this master's address.
fn cert_sans(node: &NodeConfig) -> Vec<String> {
    let endpoint_host = match node.spec.control_plane_endpoint.host() {
        Host::Ip(ip) => ip.to_string(),
        Host::Name(name) => name.to_string(),
    };
    let mut sans = vec![endpoint_host];
    let own = node.advertise_address.to_string();
    if !sans.contains(&own) {
        sans.push(own);
    }
    sans
}

fn cluster_configuration(node: &NodeConfig, api: KubeadmApi) -> Value {
    let spec = node.spec;
    let registry = &spec.seed.registry;
    let hardening = [("profiling", "false".to_owned())];
    let mut cluster = json!({
        "apiVersion": api.api_version(),
        "kind": "ClusterConfiguration",
        "clusterName": spec.name.as_str(),
        "kubernetesVersion": spec.kubernetes_version.to_string(),
        "controlPlaneEndpoint": spec.control_plane_endpoint.to_string(),
        "certificatesDir": PKI_DIR,
        "imageRepository": registry.to_string(),
        "dns": {
            "imageRepository": coredns_repository(registry),
            "imageTag": coredns_tag(&spec.kubernetes_version),
        },
        "networking": {
            "podSubnet": spec.pod_subnet.to_string(),
            "serviceSubnet": spec.service_subnet.to_string(),
            "dnsDomain": spec.dns_domain.as_str(),
        },
        "etcd": {
            "external": {
                "endpoints": node.etcd_endpoints,
                "caFile": format!("{PKI_DIR}/etcd/ca.crt"),
                "certFile": format!("{PKI_DIR}/apiserver-etcd-client.crt"),
                "keyFile": format!("{PKI_DIR}/apiserver-etcd-client.key"),
            },
        },
        "apiServer": {
            "certSANs": cert_sans(node),
            "extraArgs": extra_args(api, &api_server_args(spec, &hardening)),
        },
        "controllerManager": { "extraArgs": extra_args(api, &hardening) },
        "scheduler": { "extraArgs": extra_args(api, &hardening) },
    });
    match api {
        KubeadmApi::V1Beta3 => {
            cluster["apiServer"]["timeoutForControlPlane"] = json!(CONTROL_PLANE_TIMEOUT);
        }
        KubeadmApi::V1Beta4 => {
            cluster["encryptionAlgorithm"] = json!(spec.key_algorithm.kubeadm_name());
            // What kubeadm init itself concludes from skipPhases (manageSkippedAddons), said in
            // the config so that `kubeadm config images list` leaves those images out too.
            let addons = KubeadmAddons::from_skip_phases(&spec.skip_phases);
            if !addons.coredns {
                cluster["dns"]["disabled"] = json!(true);
            }
            if !addons.kube_proxy {
                cluster["proxy"] = json!({ "disabled": true });
            }
        }
    }
    cluster
}

fn kubelet_configuration(spec: &ClusterSpec) -> Value {
    let mut kubelet = json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "systemd",
        "clusterDNS": [spec.cluster_dns_ip().to_string()],
        "clusterDomain": spec.dns_domain.as_str(),
        "staticPodPath": "/etc/kubernetes/manifests",
        "authentication": {
            "anonymous": { "enabled": false },
            "webhook": { "enabled": true },
            "x509": { "clientCAFile": format!("{PKI_DIR}/ca.crt") },
        },
        "authorization": { "mode": "Webhook" },
        // The seed signs the kubelet's client certificate; the kubelet does not renew it itself.
        "rotateCertificates": false,
    });
    // The field exists from 1.27; before that the kubelet takes the flag.
    if spec.kubernetes_version.at_least(27) {
        kubelet["containerRuntimeEndpoint"] = json!(CRI_SOCKET);
    }
    kubelet
}

fn kube_proxy_configuration(spec: &ClusterSpec) -> Value {
    json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clusterCIDR": spec.pod_subnet.to_string(),
    })
}
