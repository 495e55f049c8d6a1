//! kubeadm's mark-control-plane phase (`phases/markcontrolplane/markcontrolplane.go`,
//! `util/apiclient/idempotency.go`, kubeadm v1.33): with admin.conf, wait for the API server
//! and for the kubelet to register the Node, then label it as a control plane and add the
//! configured taints (kubeadm's NoSchedule taint when the config names none), by one
//! strategic-merge PATCH.

use super::config::InitConfig;
use crate::Root;
use base64::Engine;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

pub const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";
const EXCLUDE_LB_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// kubeadm's `APICallRetryInterval`.
const RETRY: Duration = Duration::from_millis(500);
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Why the Node could not be marked.
#[derive(Debug, thiserror::Error)]
pub enum MarkError {
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Kubeconfig { path: String, reason: String },
    #[error("building the API client from {path}")]
    Client {
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "error patching Node {node}: waited {waited_secs}s for the API server at {server} and the Node: {last}"
    )]
    Timeout {
        node: String,
        server: String,
        waited_secs: u64,
        last: String,
    },
}

/// The control-plane taint kubeadm adds when `nodeRegistration.taints` is unset.
pub fn default_taint() -> Value {
    json!({ "key": CONTROL_PLANE_LABEL, "effect": "NoSchedule" })
}

/// The taints kubeadm asks for: the config's, then the Node's own that the config does not
/// name (same key and effect); `None` when nothing is to change.
fn taints(wanted: &[Value], current: &[Value]) -> Option<Vec<Value>> {
    if wanted.is_empty() {
        return None;
    }
    let same = |a: &Value, b: &Value| a["key"] == b["key"] && a["effect"] == b["effect"];
    let mut out = wanted.to_vec();
    out.extend(
        current
            .iter()
            .filter(|c| !wanted.iter().any(|w| same(w, c)))
            .cloned(),
    );
    (out.as_slice() != current).then_some(out)
}

/// The strategic-merge patch from the Node as read to the marked Node.
pub fn patch_for(node: &Value, wanted_taints: &[Value]) -> Value {
    let mut patch = json!({ "metadata": { "labels": {
        CONTROL_PLANE_LABEL: "",
        EXCLUDE_LB_LABEL: "",
    }}});
    let current: Vec<Value> = node["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if let Some(taints) = taints(wanted_taints, &current) {
        patch["spec"] = json!({ "taints": taints });
    }
    patch
}

/// The API server and credentials of a kubeconfig's current context.
struct Access {
    server: String,
    client: reqwest::blocking::Client,
}

fn decoded(path: &str, value: &Value, field: &str) -> Result<Vec<u8>, MarkError> {
    let bad = |reason: String| MarkError::Kubeconfig {
        path: path.to_owned(),
        reason,
    };
    let text = value[field].as_str().ok_or_else(|| {
        bad(format!(
            "no {field} (the stand-in reads embedded credentials only)"
        ))
    })?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| bad(format!("{field} is not base64: {e}")))
}

fn access(root: &Root, path: &str) -> Result<Access, MarkError> {
    let text = std::fs::read_to_string(root.path(path)).map_err(|source| MarkError::Read {
        path: path.to_owned(),
        source,
    })?;
    let config: Value = serde_yaml::from_str(&text).map_err(|e| MarkError::Kubeconfig {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let named = |list: &str, name: &Value| {
        let items = config[list].as_array().cloned().unwrap_or_default();
        items
            .iter()
            .find(|i| name.is_string() && i["name"] == *name)
            .or(items.first())
            .cloned()
            .unwrap_or(Value::Null)
    };
    let context = named("contexts", &config["current-context"]);
    let cluster = &named("clusters", &context["context"]["cluster"])["cluster"];
    let user = &named("users", &context["context"]["user"])["user"];
    let server = cluster["server"]
        .as_str()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_owned();
    let ca = decoded(path, cluster, "certificate-authority-data")?;
    let mut identity = decoded(path, user, "client-certificate-data")?;
    identity.extend(decoded(path, user, "client-key-data")?);
    let client = (|| {
        reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
            .identity(reqwest::Identity::from_pem(&identity)?)
            .timeout(Duration::from_secs(10))
            .build()
    })()
    .map_err(|source| MarkError::Client {
        path: path.to_owned(),
        source,
    })?;
    Ok(Access { server, client })
}

/// One attempt: the Node, once registered with its hostname label, marked. `Err` says why
/// it has to be tried again.
fn attempt(access: &Access, node: &str, wanted: &[Value]) -> Result<(), String> {
    let url = format!("{}/api/v1/nodes/{node}", access.server);
    let response = access
        .client
        .get(&url)
        .send()
        .map_err(|e| format!("{e:#}"))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(format!("nodes \"{node}\" not found"));
    }
    let current: Value = response.json().map_err(|e| format!("{e:#}"))?;
    if !status.is_success() {
        return Err(format!("GET {url}: {status}: {}", current["message"]));
    }
    if current["metadata"]["labels"][HOSTNAME_LABEL].is_null() {
        return Err(format!("node \"{node}\" has no {HOSTNAME_LABEL} label yet"));
    }
    let response = access
        .client
        .patch(&url)
        .header("Content-Type", "application/strategic-merge-patch+json")
        .body(patch_for(&current, wanted).to_string())
        .send()
        .map_err(|e| format!("{e:#}"))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body: Value = response.json().unwrap_or(Value::Null);
    Err(format!("PATCH {url}: {status}: {}", body["message"]))
}

/// Marks `cfg`'s node through the API server of `kubeconfig`, retrying every 500 ms for as
/// long as kubeadm waits for the control plane and then for one API call.
pub fn run(root: &Root, cfg: &InitConfig, kubeconfig: &str) -> Result<(), MarkError> {
    let access = access(root, kubeconfig)?;
    let wanted = cfg.taints.clone().unwrap_or_else(|| vec![default_taint()]);
    let node = &cfg.node_name;
    println!(
        "[mark-control-plane] Marking the node {node} as control-plane by adding the labels: [{CONTROL_PLANE_LABEL} {EXCLUDE_LB_LABEL}]"
    );
    if !wanted.is_empty() {
        let shown: Vec<String> = wanted
            .iter()
            .map(|t| {
                format!(
                    "{}:{}",
                    t["key"].as_str().unwrap_or_default(),
                    t["effect"].as_str().unwrap_or_default()
                )
            })
            .collect();
        println!(
            "[mark-control-plane] Marking the node {node} as control-plane by adding the taints [{}]",
            shown.join(" ")
        );
    }
    let limit = Duration::from_secs(cfg.health_check_secs + cfg.api_call_secs);
    let start = Instant::now();
    let mut reported = start;
    loop {
        let last = match attempt(&access, node, &wanted) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if start.elapsed() >= limit {
            return Err(MarkError::Timeout {
                node: node.clone(),
                server: access.server,
                waited_secs: start.elapsed().as_secs(),
                last,
            });
        }
        if reported.elapsed() >= PROGRESS_EVERY {
            println!(
                "[mark-control-plane] still waiting after {}s: {last}",
                start.elapsed().as_secs()
            );
            reported = Instant::now();
        }
        std::thread::sleep(RETRY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_adds_labels_and_taints_once() {
        let node = json!({ "metadata": {}, "spec": {} });
        assert_eq!(
            patch_for(&node, &[default_taint()]),
            json!({
                "metadata": { "labels": { CONTROL_PLANE_LABEL: "", EXCLUDE_LB_LABEL: "" } },
                "spec": { "taints": [default_taint()] },
            })
        );
        let other = json!({ "key": "example.com/x", "effect": "NoExecute" });
        let tainted = json!({ "spec": { "taints": [other.clone()] } });
        assert_eq!(
            patch_for(&tainted, &[default_taint()])["spec"]["taints"],
            json!([default_taint(), other])
        );
        let done = json!({ "spec": { "taints": [default_taint()] } });
        assert!(patch_for(&done, &[default_taint()]).get("spec").is_none());
        // `taints: []`: schedulable, nothing of the Node's taints changes.
        assert!(patch_for(&tainted, &[]).get("spec").is_none());
    }
}
