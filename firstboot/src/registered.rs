//! The install's last check: the host is a node once the API server has its Node, read with
//! the kubelet's own kubeconfig.

use crate::fsutil::{self, FsError};
use crate::os::Os;
use cluster::api::{InstallAction, Plan};
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(
        "the kubelet did not register Node {node} in {waited_secs} s (last: {last}); check `journalctl -u kubelet` and the server and CA in {kubeconfig}"
    )]
    NotRegistered {
        node: String,
        kubeconfig: String,
        waited_secs: u64,
        last: String,
    },
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// The kubeconfig kubeadm gives a master's kubelet.
const MASTER_KUBELET_KUBECONFIG: &str = "/etc/kubernetes/kubelet.conf";

/// The host is a node once the API server has its Node: read with the kubelet's own
/// kubeconfig, the address and credential the kubelet registers with, so that a wrong server,
/// CA or certificate shows here as it does to the kubelet. Registered is enough; Ready also
/// needs a pod network, which may come later.
pub fn wait_registered(
    root: &Path,
    os: &dyn Os,
    plan: &Plan,
    wait: Duration,
) -> Result<(), RegisterError> {
    let kubeconfig = kubelet_kubeconfig(plan);
    let path = fsutil::under_root(root, kubeconfig)?;
    let node = plan.hostname.as_str();
    let start = Instant::now();
    loop {
        let last = match check_registered(os, &path, node) {
            Ok(ready) => {
                tracing::info!("Node {node} is registered; Ready: {ready}");
                return Ok(());
            }
            Err(why) => why,
        };
        if start.elapsed() >= wait {
            return Err(RegisterError::NotRegistered {
                node: node.to_string(),
                kubeconfig: kubeconfig.to_string(),
                waited_secs: start.elapsed().as_secs(),
                last,
            });
        }
        tracing::info!("Node {node} not registered yet: {last}");
        os.sleep(Duration::from_secs(3));
    }
}

/// The kubeconfig the host's kubelet registers with.
pub fn kubelet_kubeconfig(plan: &Plan) -> &str {
    match &plan.install {
        InstallAction::Worker {
            kubeconfig_path, ..
        } => kubeconfig_path.as_str(),
        _ => MASTER_KUBELET_KUBECONFIG,
    }
}

/// Asks once, with `kubeconfig`'s server and credential, for the Node `node`: its Ready
/// condition when it is there, why not otherwise (the TLS verdict, the API's answer).
pub fn check_registered(os: &dyn Os, kubeconfig: &Path, node: &str) -> Result<String, String> {
    let body = os
        .kube_get(kubeconfig, &format!("/api/v1/nodes/{node}"))
        .map_err(|e| e.to_string())?;
    registered(&body, node)
}

/// Whether `body` is the Node `name`; its Ready condition (status and message) when it is.
pub(crate) fn registered(body: &str, name: &str) -> Result<String, String> {
    let node: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    if node["kind"] != "Node" || node["metadata"]["name"] != name {
        let start: String = body.chars().take(200).collect();
        return Err(format!("the answer is not Node {name}: {start}"));
    }
    let conditions = node["status"]["conditions"].as_array().cloned();
    let ready = conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c["type"] == "Ready");
    Ok(match ready {
        Some(c) => format!(
            "{} ({})",
            c["status"].as_str().unwrap_or("?"),
            c["message"].as_str().unwrap_or_default()
        ),
        None => "not reported yet".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::{Action, RecordingOs};
    use cluster::api::Role;

    fn worker() -> Plan {
        Plan {
            hostname: "c-m2".into(),
            ..crate::test_plan::worker_plan("h", "v1.33.0", vec![])
        }
    }

    fn master() -> Plan {
        Plan {
            role: Role::Master,
            install: InstallAction::JoinControlPlane {
                config_path: "/etc/kubernetes/kubeadm.yaml".into(),
            },
            ..worker()
        }
    }

    #[test]
    fn a_host_is_a_node_once_the_api_server_has_its_node() {
        let root = tempfile::tempdir().unwrap();
        let os = RecordingOs::new(Duration::ZERO, false);
        wait_registered(root.path(), &os, &worker(), Duration::ZERO).unwrap();
        wait_registered(root.path(), &os, &master(), Duration::ZERO).unwrap();
        let asked = Action::KubeGet {
            kubeconfig: root.path().join("etc/kubernetes/kubelet.conf"),
            path: "/api/v1/nodes/c-m2".into(),
        };
        assert_eq!(os.actions(), vec![asked.clone(), asked]);
    }

    #[test]
    fn a_node_that_never_registers_fails_with_the_last_answer() {
        let cases = [
            (
                None,
                Some("invalid peer certificate: UnknownIssuer"),
                "probing /api/v1/nodes/c-m2: invalid peer certificate: UnknownIssuer",
            ),
            (
                Some(r#"{"kind":"Node","metadata":{"name":"c-m3"}}"#),
                None,
                r#"the answer is not Node c-m2: {"kind":"Node","metadata":{"name":"c-m3"}}"#,
            ),
            (Some("<html>"), None, "the answer is not Node c-m2: <html>"),
        ];
        for (answer, failure, last) in cases {
            let root = tempfile::tempdir().unwrap();
            let mut os = RecordingOs::new(Duration::ZERO, false);
            let path = "/api/v1/nodes/c-m2".to_string();
            if let Some(answer) = answer {
                os.outputs.insert(path.clone(), answer.into());
            }
            if let Some(failure) = failure {
                os.failures.insert(path, failure.into());
            }
            let err = wait_registered(root.path(), &os, &worker(), Duration::ZERO)
                .unwrap_err()
                .to_string();
            assert_eq!(
                err,
                format!(
                    "the kubelet did not register Node c-m2 in 0 s (last: {last}); check \
                     `journalctl -u kubelet` and the server and CA in /etc/kubernetes/kubelet.conf"
                )
            );
        }
    }

    #[test]
    fn the_ready_condition_is_reported_not_required() {
        let node = |conditions: &str| {
            format!(
                r#"{{"kind":"Node","metadata":{{"name":"w1"}},"status":{{"conditions":{conditions}}}}}"#
            )
        };
        assert_eq!(
            registered(
                &node(
                    r#"[{"type":"Ready","status":"False","message":"cni plugin not initialized"}]"#
                ),
                "w1"
            ),
            Ok("False (cni plugin not initialized)".into())
        );
        assert_eq!(registered(&node("[]"), "w1"), Ok("not reported yet".into()));
    }

    // The control-plane VIP: keepalived before kubeadm on masters that hold one, never elsewhere.
}
