//! kubeadm init's upload-config phase (`phases/uploadconfig/uploadconfig.go`,
//! `phases/kubelet/config.go` `CreateConfigMap`, kubeadm v1.33): the ClusterConfiguration in
//! `kube-system/kubeadm-config` (key `ClusterConfiguration`) and the KubeletConfiguration in
//! `kube-system/kubelet-config` (key `kubelet`), created or updated with admin.conf, which is
//! what `kubeadm join` reads back. The Roles that let nodes read them are the API server
//! stand-in's fixed authorization, so none is written.

use super::config::InitConfig;
use super::retry::{self, Attempt, Stopped};
use crate::Root;
use crate::docs::Doc;
use crate::kubeclient::KubeClient;
use serde_json::{Value, json};
use std::time::Duration;

pub const NAMESPACE: &str = "kube-system";
pub const KUBEADM_CONFIG: &str = "kubeadm-config";
pub const CLUSTER_CONFIGURATION_KEY: &str = "ClusterConfiguration";
pub const KUBELET_CONFIG: &str = "kubelet-config";
pub const KUBELET_KEY: &str = "kubelet";
/// kubeadm's `APICallRetryInterval`.
const RETRY: Duration = Duration::from_millis(500);

/// Why a ConfigMap could not be written.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("{0}")]
    Client(String),
    #[error(
        "error uploading the {name} ConfigMap: waited {waited_secs}s for the API server at {server}: {last}"
    )]
    Timeout {
        name: &'static str,
        server: String,
        waited_secs: u64,
        last: String,
    },
    #[error("error uploading the {name} ConfigMap: {reason}")]
    Refused { name: &'static str, reason: String },
}

fn config_map(name: &str, key: &str, document: &Value) -> Value {
    let yaml = serde_yaml::to_string(document).expect("a JSON value always renders as YAML");
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": name, "namespace": NAMESPACE },
        "data": { key: yaml },
    })
}

/// The ConfigMaps of the phase, each with its sub-phase (`upload-config/kubeadm`,
/// `upload-config/kubelet`): the documents as given (a KubeletConfiguration with only its
/// type when the config has none, which the kubelet reads as its defaults).
pub fn config_maps(docs: &[Doc]) -> Vec<(&'static str, Value)> {
    let find = |kind: &str| docs.iter().find(|d| d.kind == kind).map(|d| &d.value);
    let mut out = Vec::new();
    if let Some(cluster) = find("ClusterConfiguration") {
        let map = config_map(KUBEADM_CONFIG, CLUSTER_CONFIGURATION_KEY, cluster);
        out.push(("upload-config/kubeadm", map));
    }
    let kubelet = find("KubeletConfiguration").cloned().unwrap_or_else(
        || json!({ "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration" }),
    );
    let map = config_map(KUBELET_CONFIG, KUBELET_KEY, &kubelet);
    out.push(("upload-config/kubelet", map));
    out
}

/// Whether an answer is worth waiting for another: the API server not up yet, or busy.
fn attempt_of(status: u16, reason: String) -> Attempt<()> {
    match status {
        200 | 201 => Attempt::Done(()),
        400 | 401 | 403 | 422 => Attempt::Fail(reason),
        _ => Attempt::Retry(reason),
    }
}

/// One create, or on AlreadyExists the read and the update of its data (`CreateOrMutate`).
fn create_or_update(client: &KubeClient, object: &Value, name: &str) -> Attempt<()> {
    let collection = format!("/api/v1/namespaces/{NAMESPACE}/configmaps");
    let created = match client.post(&collection, object) {
        Ok(answer) => answer,
        Err(e) => return Attempt::Retry(e),
    };
    if created.status != 409 {
        return attempt_of(created.status, created.reason());
    }
    let path = format!("{collection}/{name}");
    let mut current = match client.get(&path) {
        Ok(answer) if answer.status == 200 => answer.body,
        // Not a 200: the read failed, so the answer decides (a GET is never 201).
        Ok(answer) => return attempt_of(answer.status, answer.reason()),
        Err(e) => return Attempt::Retry(e),
    };
    current["data"] = object["data"].clone();
    match client.put(&path, &current) {
        Ok(answer) => attempt_of(answer.status, answer.reason()),
        Err(e) => Attempt::Retry(e),
    }
}

/// Writes the ConfigMaps `cfg` does not skip through the API server of `kubeconfig`,
/// retrying every 500 ms for as long as kubeadm waits for the control plane and one API call.
pub fn run(
    root: &Root,
    cfg: &InitConfig,
    docs: &[Doc],
    kubeconfig: &str,
) -> Result<(), UploadError> {
    let maps: Vec<_> = config_maps(docs)
        .into_iter()
        .filter(|(phase, _)| !cfg.skips(phase))
        .collect();
    if maps.is_empty() {
        return Ok(());
    }
    let client = KubeClient::from_kubeconfig(root, kubeconfig).map_err(UploadError::Client)?;
    let limit = Duration::from_secs(cfg.health_check_secs + cfg.api_call_secs);
    for (phase, object) in maps {
        let name = match phase {
            "upload-config/kubeadm" => KUBEADM_CONFIG,
            _ => KUBELET_CONFIG,
        };
        if name == KUBEADM_CONFIG {
            println!(
                "[upload-config] Storing the configuration used in ConfigMap \"{name}\" in the \"{NAMESPACE}\" Namespace"
            );
        } else {
            println!(
                "[kubelet] Creating a ConfigMap \"{name}\" in namespace {NAMESPACE} with the configuration for the kubelets in the cluster"
            );
        }
        let done = retry::until("[upload-config]", limit, RETRY, || {
            create_or_update(&client, &object, name)
        });
        done.map_err(|stopped| match stopped {
            Stopped::Timeout { waited_secs, last } => UploadError::Timeout {
                name,
                server: client.server.clone(),
                waited_secs,
                last,
            },
            Stopped::Failed(reason) => UploadError::Refused { name, reason },
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_and_kubelet_configurations_under_kubeadms_keys() {
        let text = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n\
                    kubernetesVersion: v1.33.4\n---\n\
                    apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
                    cgroupDriver: systemd\n";
        let docs = crate::docs::parse("k", text).unwrap();
        let maps = config_maps(&docs);
        let phases: Vec<&str> = maps.iter().map(|(p, _)| *p).collect();
        assert_eq!(phases, ["upload-config/kubeadm", "upload-config/kubelet"]);
        let (_, kubeadm) = &maps[0];
        assert_eq!(
            kubeadm["metadata"],
            json!({"name": "kubeadm-config", "namespace": "kube-system"})
        );
        let cluster: Value =
            serde_yaml::from_str(kubeadm["data"]["ClusterConfiguration"].as_str().unwrap())
                .unwrap();
        assert_eq!(cluster["kubernetesVersion"], "v1.33.4");
        let kubelet: Value =
            serde_yaml::from_str(maps[1].1["data"]["kubelet"].as_str().unwrap()).unwrap();
        assert_eq!(kubelet["cgroupDriver"], "systemd");
        let bare = crate::docs::parse("k", &text[..text.find("---").unwrap()]).unwrap();
        let kubelet: Value =
            serde_yaml::from_str(config_maps(&bare)[1].1["data"]["kubelet"].as_str().unwrap())
                .unwrap();
        assert_eq!(
            kubelet,
            json!({"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration"})
        );
    }

    #[test]
    fn only_a_refusal_stops_the_wait() {
        assert!(matches!(attempt_of(201, String::new()), Attempt::Done(())));
        assert!(matches!(attempt_of(403, String::new()), Attempt::Fail(_)));
        assert!(matches!(attempt_of(503, String::new()), Attempt::Retry(_)));
        assert!(matches!(attempt_of(409, String::new()), Attempt::Retry(_)));
    }
}
