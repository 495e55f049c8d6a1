//! What `kubeadm init` acts on, read from its Init- and ClusterConfiguration documents with
//! kubeadm's defaults filled in (`cmd/kubeadm/app/apis/kubeadm/v1beta4/defaults.go`, v1.33);
//! and what a control-plane join acts on, the cluster's ClusterConfiguration with the node's
//! part of its JoinConfiguration.
//! The documents have already matched kubeadm's schema, so only meaning is checked here.

use crate::docs::{Doc, str_at};
use serde_json::Value;
use std::net::IpAddr;

const DEFAULT_PKI: &str = "/etc/kubernetes/pki";
const DEFAULT_REPOSITORY: &str = "registry.k8s.io";
const DEFAULT_SERVICE_SUBNET: &str = "10.96.0.0/12";
const DEFAULT_DNS_DOMAIN: &str = "cluster.local";
const DEFAULT_CLUSTER_NAME: &str = "kubernetes";
const DEFAULT_CRI_SOCKET: &str = "unix:///var/run/containerd/containerd.sock";
const DEFAULT_BIND_PORT: u16 = 6443;
/// kubeadm's `controlPlaneComponentHealthCheck` default.
const DEFAULT_HEALTH_CHECK_SECS: u64 = 240;
/// kubeadm's `kubernetesAPICall` default.
const DEFAULT_API_CALL_SECS: u64 = 60;

/// Why a config cannot be acted on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "{0} is not set: kubeadm would guess it from this host, which the stand-in does not do"
    )]
    Unset(&'static str),
    #[error("{field} {value:?} is not {what}")]
    Invalid {
        field: &'static str,
        value: String,
        what: &'static str,
    },
}

/// `etcd.external`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalEtcd {
    pub endpoints: Vec<String>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

/// A `kubeadm init` config, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitConfig {
    pub kubernetes_version: String,
    pub minor: u32,
    pub node_name: String,
    pub advertise_address: IpAddr,
    pub bind_port: u16,
    pub cri_socket: String,
    /// `None`: kubeadm's control-plane taint; `Some(vec![])`: no taint.
    pub taints: Option<Vec<Value>>,
    /// Lower-cased, as kubeadm compares them.
    pub ignore_preflight_errors: Vec<String>,
    pub skip_phases: Vec<String>,
    pub cluster_name: String,
    pub control_plane_endpoint: Option<String>,
    pub certificates_dir: String,
    pub image_repository: String,
    pub service_subnet: String,
    pub pod_subnet: Option<String>,
    pub dns_domain: String,
    pub etcd: Option<ExternalEtcd>,
    pub cert_sans: Vec<String>,
    pub api_server_args: Vec<(String, String)>,
    pub controller_manager_args: Vec<(String, String)>,
    pub scheduler_args: Vec<(String, String)>,
    pub health_check_secs: u64,
    /// `timeouts.kubernetesAPICall` (v1beta4), how long one API call is retried.
    pub api_call_secs: u64,
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// `extraArgs`: a map in v1beta3, a list of `{name, value}` in v1beta4 (repeats allowed).
fn extra_args(value: Option<&Value>) -> Vec<(String, String)> {
    match value {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|a| {
                let field = |f| a.get(f).and_then(Value::as_str).unwrap_or_default();
                (field("name").to_owned(), field("value").to_owned())
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A Go duration of hours, minutes and seconds (`4m0s`, `1h`, `90s`) in seconds.
pub fn go_duration_secs(text: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().ok()?;
        number.clear();
        total += n * match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
    }
    number.is_empty().then_some(total)
}

fn minor_of(version: &str) -> Option<u32> {
    version
        .strip_prefix("v1.")
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
}

fn find<'a>(docs: &'a [Doc], kind: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d.kind == kind).map(|d| &d.value)
}

fn external_etcd(cluster: &Value) -> Option<ExternalEtcd> {
    let external = cluster.get("etcd")?.get("external")?;
    let file = |f| str_at(external, f).map(str::to_owned);
    Some(ExternalEtcd {
        endpoints: strings(external.get("endpoints")),
        ca_file: file("caFile"),
        cert_file: file("certFile"),
        key_file: file("keyFile"),
    })
}

fn health_check_secs(init: &Value, cluster: &Value) -> u64 {
    str_at(init, "timeouts/controlPlaneComponentHealthCheck")
        .or_else(|| str_at(cluster, "apiServer/timeoutForControlPlane"))
        .and_then(go_duration_secs)
        .unwrap_or(DEFAULT_HEALTH_CHECK_SECS)
}

impl InitConfig {
    /// Reads the documents of a `kubeadm init --config` file.
    pub fn from_docs(docs: &[Doc]) -> Result<InitConfig, ConfigError> {
        let empty = Value::Null;
        let init = find(docs, "InitConfiguration").unwrap_or(&empty);
        let cluster = find(docs, "ClusterConfiguration").unwrap_or(&empty);
        InitConfig::from_values(init, cluster)
    }

    /// What `kubeadm join --control-plane` acts on (`fetchInitConfiguration`): `cluster`, the
    /// ClusterConfiguration `kubeadm init` uploaded, with the JoinConfiguration's node
    /// registration, `controlPlane.localAPIEndpoint`, `skipPhases` and `timeouts`.
    pub fn for_join(join: &Value, cluster: &Value) -> Result<InitConfig, ConfigError> {
        if str_at(join, "controlPlane/localAPIEndpoint/advertiseAddress").is_none() {
            return Err(ConfigError::Unset(
                "controlPlane.localAPIEndpoint.advertiseAddress",
            ));
        }
        let mut init = serde_json::json!({ "kind": "InitConfiguration" });
        for (to, from) in [
            ("localAPIEndpoint", "/controlPlane/localAPIEndpoint"),
            ("nodeRegistration", "/nodeRegistration"),
            ("skipPhases", "/skipPhases"),
            ("timeouts", "/timeouts"),
        ] {
            if let Some(value) = join.pointer(from) {
                init[to] = value.clone();
            }
        }
        InitConfig::from_values(&init, cluster)
    }

    fn from_values(init: &Value, cluster: &Value) -> Result<InitConfig, ConfigError> {
        let empty = Value::Null;
        let text = |v: &Value, path: &str| str_at(v, path).map(str::to_owned);
        let kubernetes_version = text(cluster, "kubernetesVersion")
            .ok_or(ConfigError::Unset("ClusterConfiguration.kubernetesVersion"))?;
        let minor = minor_of(&kubernetes_version).ok_or_else(|| ConfigError::Invalid {
            field: "kubernetesVersion",
            value: kubernetes_version.clone(),
            what: "v1.MINOR.PATCH",
        })?;
        let address = text(init, "localAPIEndpoint/advertiseAddress")
            .ok_or(ConfigError::Unset("localAPIEndpoint.advertiseAddress"))?;
        let advertise_address = address.parse().map_err(|_| ConfigError::Invalid {
            field: "localAPIEndpoint.advertiseAddress",
            value: address.clone(),
            what: "an IP address",
        })?;
        let registration = init.get("nodeRegistration").unwrap_or(&empty);
        Ok(InitConfig {
            kubernetes_version,
            minor,
            node_name: text(registration, "name")
                .ok_or(ConfigError::Unset("nodeRegistration.name"))?,
            advertise_address,
            bind_port: init
                .pointer("/localAPIEndpoint/bindPort")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(DEFAULT_BIND_PORT),
            cri_socket: text(registration, "criSocket").unwrap_or(DEFAULT_CRI_SOCKET.into()),
            taints: registration
                .get("taints")
                .and_then(Value::as_array)
                .cloned(),
            ignore_preflight_errors: strings(registration.get("ignorePreflightErrors"))
                .into_iter()
                .map(|e| e.to_lowercase())
                .collect(),
            skip_phases: strings(init.get("skipPhases")),
            cluster_name: text(cluster, "clusterName").unwrap_or(DEFAULT_CLUSTER_NAME.into()),
            control_plane_endpoint: text(cluster, "controlPlaneEndpoint"),
            certificates_dir: text(cluster, "certificatesDir").unwrap_or(DEFAULT_PKI.into()),
            image_repository: text(cluster, "imageRepository").unwrap_or(DEFAULT_REPOSITORY.into()),
            service_subnet: text(cluster, "networking/serviceSubnet")
                .unwrap_or(DEFAULT_SERVICE_SUBNET.into()),
            pod_subnet: text(cluster, "networking/podSubnet"),
            dns_domain: text(cluster, "networking/dnsDomain").unwrap_or(DEFAULT_DNS_DOMAIN.into()),
            etcd: external_etcd(cluster),
            cert_sans: strings(cluster.pointer("/apiServer/certSANs")),
            api_server_args: extra_args(cluster.pointer("/apiServer/extraArgs")),
            controller_manager_args: extra_args(cluster.pointer("/controllerManager/extraArgs")),
            scheduler_args: extra_args(cluster.pointer("/scheduler/extraArgs")),
            health_check_secs: health_check_secs(init, cluster),
            api_call_secs: str_at(init, "timeouts/kubernetesAPICall")
                .and_then(go_duration_secs)
                .unwrap_or(DEFAULT_API_CALL_SECS),
        })
    }

    /// Whether `skipPhases` names `phase` or the phase it belongs to (`certs` for
    /// `certs/apiserver`), as kubeadm's phase runner decides.
    pub fn skips(&self, phase: &str) -> bool {
        self.skip_phases.iter().any(|s| {
            s == phase
                || phase
                    .strip_prefix(s.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        })
    }

    /// Whether `ignorePreflightErrors` lowers check `name` to a warning.
    pub fn ignores(&self, name: &str) -> bool {
        let name = name.to_lowercase();
        self.ignore_preflight_errors
            .iter()
            .any(|e| e == "all" || *e == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(init: &str, cluster: &str) -> Result<InitConfig, ConfigError> {
        let text = format!(
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n{init}\n---\n\
             apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n{cluster}\n"
        );
        InitConfig::from_docs(&crate::docs::parse("k.yaml", &text).unwrap())
    }

    const INIT: &str =
        "localAPIEndpoint: {advertiseAddress: 10.0.0.5}\nnodeRegistration: {name: m1}";

    #[test]
    fn defaults_are_kubeadms() {
        let c = config(INIT, "kubernetesVersion: v1.33.4").unwrap();
        assert_eq!(c.minor, 33);
        assert_eq!(c.bind_port, 6443);
        assert_eq!(c.certificates_dir, "/etc/kubernetes/pki");
        assert_eq!(c.service_subnet, "10.96.0.0/12");
        assert_eq!(c.dns_domain, "cluster.local");
        assert_eq!(c.image_repository, "registry.k8s.io");
        assert_eq!(c.taints, None);
        assert_eq!(c.health_check_secs, 240);
        assert!(c.etcd.is_none());
    }

    #[test]
    fn extra_args_in_both_forms_and_phases() {
        let c = config(
            &format!(
                "{INIT}\nskipPhases: [certs, mark-control-plane]\ntimeouts: {{controlPlaneComponentHealthCheck: 10m0s}}"
            ),
            "kubernetesVersion: v1.33.4\napiServer:\n  extraArgs:\n  - {name: a, value: '1'}\n  - {name: a, value: '2'}",
        )
        .unwrap();
        assert_eq!(
            c.api_server_args,
            [("a".into(), "1".into()), ("a".into(), "2".into())]
        );
        assert!(c.skips("certs/apiserver") && c.skips("mark-control-plane"));
        assert!(!c.skips("certs-x") && !c.skips("control-plane"));
        assert_eq!(c.health_check_secs, 600);
        let map = extra_args(Some(&serde_json::json!({"profiling": "false"})));
        assert_eq!(map, [("profiling".into(), "false".into())]);
    }

    #[test]
    fn values_kubeadm_would_guess_are_required() {
        let cases = [
            (
                "nodeRegistration: {name: m1}",
                "kubernetesVersion: v1.33.4",
                "localAPIEndpoint.advertiseAddress is not set: kubeadm would guess it from this host, which the stand-in does not do",
            ),
            (
                "localAPIEndpoint: {advertiseAddress: x}\nnodeRegistration: {name: m1}",
                "kubernetesVersion: v1.33.4",
                "localAPIEndpoint.advertiseAddress \"x\" is not an IP address",
            ),
            (
                "localAPIEndpoint: {advertiseAddress: 10.0.0.5}",
                "kubernetesVersion: v1.33.4",
                "nodeRegistration.name is not set: kubeadm would guess it from this host, which the stand-in does not do",
            ),
        ];
        for (init, cluster, want) in cases {
            assert_eq!(config(init, cluster).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn a_join_takes_the_clusters_configuration_and_its_own_node() {
        let join = serde_json::json!({
            "controlPlane": {"localAPIEndpoint": {"advertiseAddress": "10.0.0.6", "bindPort": 7443}},
            "nodeRegistration": {"name": "m2", "ignorePreflightErrors": ["Mem"]},
            "skipPhases": ["control-plane-join/mark-control-plane"],
            "timeouts": {"kubernetesAPICall": "20s"},
        });
        let cluster = serde_json::json!({"kubernetesVersion": "v1.33.4", "clusterName": "demo"});
        let c = InitConfig::for_join(&join, &cluster).unwrap();
        assert_eq!((c.node_name.as_str(), c.bind_port), ("m2", 7443));
        assert_eq!(c.advertise_address.to_string(), "10.0.0.6");
        assert_eq!(c.cluster_name, "demo");
        assert!(c.ignores("mem") && c.skips("control-plane-join/mark-control-plane"));
        assert_eq!(c.api_call_secs, 20);
        let worker = serde_json::json!({"nodeRegistration": {"name": "m2"}});
        assert_eq!(
            InitConfig::for_join(&worker, &cluster)
                .unwrap_err()
                .to_string(),
            "controlPlane.localAPIEndpoint.advertiseAddress is not set: kubeadm would guess it from this host, which the stand-in does not do"
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration_secs("4m0s"), Some(240));
        assert_eq!(go_duration_secs("1h30m"), Some(5400));
        assert_eq!(go_duration_secs("10"), None);
        assert_eq!(go_duration_secs("5d"), None);
    }
}
