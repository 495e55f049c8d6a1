//! `kubeadm join --control-plane` (kubeadm v1.33: `cmd/phases/join/*.go`,
//! `discovery/file/file.go`, `util/config/cluster.go`): discovery from the kubeconfig of
//! `discovery.file.kubeConfigPath`, the cluster's ClusterConfiguration and
//! KubeletConfiguration read back from the ConfigMaps `kubeadm init` uploaded, then the phases
//! it shares with init ([`super::init`]) under join's names, kubelet-start's files and
//! mark-control-plane. Everything is read and checked before the first write.
//!
//! Real kubeadm bootstraps the kubelet's credential from the discovery file; the seed's
//! discovery file already holds the node's own certificate (`system:node:<name>`), so that
//! file becomes `kubelet.conf` as it is.

use super::config::{ConfigError, InitConfig, go_duration_secs};
use super::init::{self, Applied, Command, InitError};
use super::retry::{self, Attempt, Stopped};
use super::upload_config::{
    CLUSTER_CONFIGURATION_KEY, KUBEADM_CONFIG, KUBELET_CONFIG, KUBELET_KEY, NAMESPACE,
};
use crate::Root;
use crate::docs::{Doc, str_at};
use crate::kubeclient::KubeClient;
use serde_json::Value;
use std::time::{Duration, Instant};

pub const KUBELET_CONF: &str = "/etc/kubernetes/kubelet.conf";
pub const KUBELET_CONFIG_YAML: &str = "/var/lib/kubelet/config.yaml";
/// kubeadm's `DiscoveryTimeout` default.
const DEFAULT_DISCOVERY_TIMEOUT: &str = "5m0s";
const RETRY: Duration = Duration::from_secs(1);
const CLUSTER_INFO: &str = "/api/v1/namespaces/kube-public/configmaps/cluster-info";

/// Why the cluster's configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(
        "the JoinConfiguration has no discovery.file.kubeConfigPath: the stand-in discovers only from a file"
    )]
    NoFile,
    #[error("{0}")]
    Kubeconfig(String),
    #[error(
        "couldn't validate the identity of the API Server: abort reading the cluster-info ConfigMap after timeout of {timeout}: {last}"
    )]
    Unreachable { timeout: String, last: String },
    #[error("unable to fetch the {name} ConfigMap after timeout of {timeout}: {last}")]
    Timeout {
        name: &'static str,
        timeout: String,
        last: String,
    },
    #[error("unable to fetch the {name} ConfigMap: {reason}")]
    Refused { name: &'static str, reason: String },
    #[error("unexpected error when reading the {name} ConfigMap: {key} key value pair missing")]
    NoKey {
        name: &'static str,
        key: &'static str,
    },
    #[error("the {key} of the {name} ConfigMap is not YAML: {reason}")]
    Parse {
        name: &'static str,
        key: &'static str,
        reason: String,
    },
}

/// Why `kubeadm join --control-plane` stopped.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("error execution phase preflight")]
    Discovery(#[from] DiscoveryError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Phases(#[from] InitError),
    #[error("error execution phase kubelet-start")]
    KubeletStart(#[from] durable::Error),
}

/// What discovery read from the cluster.
#[derive(Debug, Clone)]
pub struct Discovered {
    /// The ClusterConfiguration of `kubeadm-config`.
    pub cluster: Value,
    /// The KubeletConfiguration of `kubelet-config`, as uploaded.
    pub kubelet_yaml: String,
    /// The discovery kubeconfig's text.
    pub kubeconfig: String,
}

/// Whether a join's documents ask for a control plane.
pub fn is_control_plane(docs: &[Doc]) -> bool {
    join_document(docs).is_some_and(|j| j.get("controlPlane").is_some())
}

fn join_document(docs: &[Doc]) -> Option<&Value> {
    docs.iter()
        .find(|d| d.kind == "JoinConfiguration")
        .map(|d| &d.value)
}

/// `timeouts.discovery` (v1beta4) or `discovery.timeout` (v1beta3), as written and in time.
fn discovery_timeout(join: &Value) -> (String, Duration) {
    let text = str_at(join, "timeouts/discovery")
        .or_else(|| str_at(join, "discovery/timeout"))
        .unwrap_or(DEFAULT_DISCOVERY_TIMEOUT);
    let secs = go_duration_secs(text)
        .or_else(|| go_duration_secs(DEFAULT_DISCOVERY_TIMEOUT))
        .unwrap_or_default();
    (text.to_owned(), Duration::from_secs(secs))
}

/// `cluster-info` read to prove the server's identity: any answer will do (kubeadm goes on
/// when it is Forbidden; the stand-in also when it is missing, as nothing publishes it).
fn cluster_info(client: &KubeClient) -> Attempt<()> {
    match client.get(CLUSTER_INFO) {
        Ok(answer) if answer.status < 500 => Attempt::Done(()),
        Ok(answer) => Attempt::Retry(answer.reason()),
        Err(e) => Attempt::Retry(e),
    }
}

/// One read of a kube-system ConfigMap: not found yet (init has not uploaded it) and server
/// errors are waited out; a refusal is final.
fn config_map(client: &KubeClient, name: &str) -> Attempt<Value> {
    let path = format!("/api/v1/namespaces/{NAMESPACE}/configmaps/{name}");
    match client.get(&path) {
        Ok(answer) if answer.status == 200 => Attempt::Done(answer.body),
        Ok(answer) if answer.status == 404 || answer.status >= 500 => {
            Attempt::Retry(answer.reason())
        }
        Ok(answer) => Attempt::Fail(answer.reason()),
        Err(e) => Attempt::Retry(e),
    }
}

fn data_key(map: &Value, name: &'static str, key: &'static str) -> Result<String, DiscoveryError> {
    str_at(map, &format!("data/{key}"))
        .map(str::to_owned)
        .ok_or(DiscoveryError::NoKey { name, key })
}

/// Discovery and the cluster's configuration, within the discovery timeout.
pub fn discover(root: &Root, join: &Value) -> Result<Discovered, DiscoveryError> {
    let file = str_at(join, "discovery/file/kubeConfigPath").ok_or(DiscoveryError::NoFile)?;
    println!("[preflight] Reading configuration from the cluster...");
    let client = KubeClient::from_kubeconfig(root, file).map_err(DiscoveryError::Kubeconfig)?;
    let kubeconfig =
        crate::read(root, file).map_err(|e| DiscoveryError::Kubeconfig(format!("{e:#}")))?;
    let (timeout, limit) = discovery_timeout(join);
    let start = Instant::now();
    let left = || limit.saturating_sub(start.elapsed());
    retry::until("[discovery]", left(), RETRY, || cluster_info(&client)).map_err(|s| {
        let last = match s {
            Stopped::Timeout { last, .. } | Stopped::Failed(last) => last,
        };
        DiscoveryError::Unreachable {
            timeout: timeout.clone(),
            last,
        }
    })?;
    let fetch = |name: &'static str| {
        retry::until("[preflight]", left(), RETRY, || config_map(&client, name)).map_err(
            |s| match s {
                Stopped::Timeout { last, .. } => DiscoveryError::Timeout {
                    name,
                    timeout: timeout.clone(),
                    last,
                },
                Stopped::Failed(reason) => DiscoveryError::Refused { name, reason },
            },
        )
    };
    let kubeadm = fetch(KUBEADM_CONFIG)?;
    let kubelet = fetch(KUBELET_CONFIG)?;
    let text = data_key(&kubeadm, KUBEADM_CONFIG, CLUSTER_CONFIGURATION_KEY)?;
    let cluster = serde_yaml::from_str(&text).map_err(|e| DiscoveryError::Parse {
        name: KUBEADM_CONFIG,
        key: CLUSTER_CONFIGURATION_KEY,
        reason: e.to_string(),
    })?;
    Ok(Discovered {
        cluster,
        kubelet_yaml: data_key(&kubelet, KUBELET_CONFIG, KUBELET_KEY)?,
        kubeconfig,
    })
}

/// A control-plane join whose checks passed, nothing written yet.
#[derive(Debug)]
pub struct Prepared {
    /// The phases shared with init, on the cluster's configuration and this node's.
    pub shared: init::Prepared,
    discovered: Discovered,
}

/// Discovery, then every check of the shared phases (`missing`: the certificates kubeadm
/// finds absent, from [`crate::certs`]).
pub fn prepare(root: &Root, docs: &[Doc], missing: &[String]) -> Result<Prepared, JoinError> {
    let join = join_document(docs).expect("checked: a join has its JoinConfiguration");
    let discovered = discover(root, join)?;
    let config = InitConfig::for_join(join, &discovered.cluster)?;
    let shared = init::check(root, config, Command::JoinControlPlane, missing)?;
    Ok(Prepared { shared, discovered })
}

impl Prepared {
    /// control-plane-prepare: the missing certificates and the static Pod manifests.
    pub fn apply(
        &self,
        root: &Root,
        missing: &[String],
        now: time::OffsetDateTime,
    ) -> Result<Applied, JoinError> {
        Ok(self.shared.apply(root, missing, now)?)
    }

    /// kubelet-start's files: the cluster's KubeletConfiguration and the node's kubeconfig.
    pub fn write_kubelet_files(&self, root: &Root) -> Result<(), JoinError> {
        if self.shared.config.skips("kubelet-start") {
            return Ok(());
        }
        let yaml = self.discovered.kubelet_yaml.as_bytes();
        durable::write_atomic(&root.path(KUBELET_CONFIG_YAML), yaml, 0o644)?;
        println!("[kubelet-start] Writing kubelet configuration to file \"{KUBELET_CONFIG_YAML}\"");
        let conf = self.discovered.kubeconfig.as_bytes();
        durable::write_atomic(&root.path(KUBELET_CONF), conf, 0o600)?;
        println!("[kubelet-start] Wrote the node's credential to \"{KUBELET_CONF}\"");
        Ok(())
    }

    /// Whether control-plane-join's mark-control-plane runs.
    pub fn marks(&self) -> bool {
        !self
            .shared
            .config
            .skips("control-plane-join/mark-control-plane")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_discovery_timeout_of_either_api() {
        let v1beta4 = json!({"timeouts": {"discovery": "2s"}});
        assert_eq!(
            discovery_timeout(&v1beta4),
            ("2s".to_owned(), Duration::from_secs(2))
        );
        let v1beta3 = json!({"discovery": {"timeout": "1m30s"}});
        assert_eq!(discovery_timeout(&v1beta3).1, Duration::from_secs(90));
        assert_eq!(
            discovery_timeout(&json!({})),
            ("5m0s".to_owned(), Duration::from_secs(300))
        );
    }

    #[test]
    fn a_config_map_without_its_key_is_refused_by_name() {
        let map = json!({"data": {"other": "x"}});
        assert_eq!(
            data_key(&map, KUBEADM_CONFIG, CLUSTER_CONFIGURATION_KEY)
                .unwrap_err()
                .to_string(),
            "unexpected error when reading the kubeadm-config ConfigMap: ClusterConfiguration key value pair missing"
        );
    }
}
