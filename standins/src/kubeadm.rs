//! The kubeadm stand-in's checks: API version for the Kubernetes version, the JSON schema of
//! each kubeadm document, every file the config refers to, and the certificates and kubeconfig
//! files kubeadm requires ([`crate::certs`]). The on-disk phases `init` and a control-plane
//! join share (preflight, certs, control-plane) are in [`init`], upload-config in
//! [`upload_config`], a control-plane join's discovery and kubelet files in [`join`],
//! mark-control-plane in [`mark_control_plane`].

pub mod config;
pub mod images;
pub mod init;
pub mod join;
pub mod manifests;
pub mod mark_control_plane;
pub mod pki;
pub mod preflight;
pub mod reset;
pub mod retry;
pub mod upload_config;

use crate::Root;
use crate::certs;
use crate::docs::{self, Doc, str_at};
use serde_json::Value;

const V1BETA3: &str = "kubeadm.k8s.io/v1beta3";
const V1BETA4: &str = "kubeadm.k8s.io/v1beta4";
const DEFAULT_PKI: &str = "/etc/kubernetes/pki";

/// Other groups kubeadm accepts in the same file.
const COMPANIONS: [(&str, &str); 2] = [
    ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration"),
    ("kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration"),
];

macro_rules! schema {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../reference/kubeadm-schema/",
                $name,
                ".json"
            )),
        )
    };
}

/// The kubeadm schemas, `<version>-<Kind>` → JSON text.
const SCHEMAS: [(&str, &str); 8] = [
    schema!("v1beta3-ClusterConfiguration"),
    schema!("v1beta3-InitConfiguration"),
    schema!("v1beta3-JoinConfiguration"),
    schema!("v1beta4-ClusterConfiguration"),
    schema!("v1beta4-InitConfiguration"),
    schema!("v1beta4-JoinConfiguration"),
    schema!("v1beta4-ResetConfiguration"),
    schema!("v1beta4-UpgradeConfiguration"),
];

/// `init` or `join`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Init,
    Join,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Init => "init",
            Verb::Join => "join",
        }
    }
}

/// What the checks found, recorded for whoever looks later.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Checked {
    pub api_version: String,
    pub kubernetes_version: Option<String>,
    pub kinds: Vec<String>,
    /// Every file the config refers to or kubeadm requires, each found to exist.
    pub files: Vec<String>,
    /// Files real kubeadm would write itself because they are missing.
    pub generated: Vec<String>,
    /// What real kubeadm would warn about and go on.
    pub warnings: Vec<String>,
}

/// The kubeadm API version a Kubernetes version is rendered with (`v1.31.0` and later:
/// v1beta4; 1.22 to 1.30: v1beta3).
pub fn expected_api(kubernetes_version: &str) -> Result<&'static str, String> {
    let minor = minor_of(kubernetes_version)
        .ok_or_else(|| format!("kubernetesVersion {kubernetes_version:?} is not v1.MINOR.PATCH"))?;
    match minor {
        31.. => Ok(V1BETA4),
        22..=30 => Ok(V1BETA3),
        _ => Err(format!(
            "kubernetesVersion {kubernetes_version} is older than 1.22, which Launcher does not support"
        )),
    }
}

fn schema_errors(file: &str, doc: &Doc) -> Result<(), String> {
    let version = doc.api_version.trim_start_matches("kubeadm.k8s.io/");
    let key = format!("{version}-{}", doc.kind);
    let Some((_, text)) = SCHEMAS.iter().find(|(name, _)| *name == key) else {
        let known: Vec<&str> = SCHEMAS
            .iter()
            .filter_map(|(n, _)| n.strip_prefix(&format!("{version}-")))
            .collect();
        return Err(format!(
            "{file}: document {} : no kind {} in {} (known: {})",
            doc.index,
            doc.kind,
            doc.api_version,
            known.join(", ")
        ));
    };
    let schema: Value = serde_json::from_str(text).expect("embedded schemas are JSON");
    let validator = jsonschema::draft202012::new(&schema).expect("embedded schemas are valid");
    let mut errors: Vec<String> = validator
        .iter_errors(&doc.value)
        .map(|e| {
            let path = e.instance_path().to_string();
            let path = if path.is_empty() {
                "(document root)".to_string()
            } else {
                path
            };
            format!("  {path}: {e}")
        })
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    errors.sort();
    Err(format!(
        "{file}: document {} ({} {}) does not match kubeadm's schema:\n{}",
        doc.index,
        doc.api_version,
        doc.kind,
        errors.join("\n")
    ))
}

/// Refuses documents kubeadm would not take with this verb, and mixed kubeadm versions.
fn check_kinds(file: &str, verb: Verb, docs: &[Doc]) -> Result<String, String> {
    let allowed: &[&str] = match verb {
        Verb::Init => &["InitConfiguration", "ClusterConfiguration"],
        Verb::Join => &["JoinConfiguration"],
    };
    let mut version: Option<&str> = None;
    for doc in docs {
        if COMPANIONS.contains(&(doc.api_version.as_str(), doc.kind.as_str())) {
            continue;
        }
        if doc.api_version != V1BETA3 && doc.api_version != V1BETA4 {
            return Err(format!(
                "{file}: document {}: {} {} is not a kubeadm config (kubeadm.k8s.io/v1beta3 or v1beta4) nor a kubelet/kube-proxy config",
                doc.index, doc.api_version, doc.kind
            ));
        }
        if !allowed.contains(&doc.kind.as_str()) {
            return Err(format!(
                "{file}: document {}: kubeadm {} does not take a {} (it takes {})",
                doc.index,
                verb.as_str(),
                doc.kind,
                allowed.join(", ")
            ));
        }
        match version {
            Some(v) if v != doc.api_version => {
                return Err(format!(
                    "{file}: document {}: {} mixed with {v} in one file",
                    doc.index, doc.api_version
                ));
            }
            _ => version = Some(&doc.api_version),
        }
    }
    let need = allowed[0];
    if !docs.iter().any(|d| allowed.contains(&d.kind.as_str())) {
        return Err(format!(
            "{file}: no {need} document for kubeadm {}",
            verb.as_str()
        ));
    }
    Ok(version.expect("a kubeadm document was found").to_string())
}

fn kind<'a>(docs: &'a [Doc], kind: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d.kind == kind).map(|d| &d.value)
}

/// The files the config refers to, and what kubeadm's certificate and kubeconfig handling
/// needs on disk ([`certs`]).
fn check_files(
    root: &Root,
    file: &str,
    verb: Verb,
    docs: &[Doc],
    kubernetes_version: Option<&str>,
) -> Result<certs::Outcome, String> {
    let missing =
        |field: &str, path: &str| format!("{file}: {field} names {path}, which does not exist");
    match verb {
        Verb::Init => {
            let cluster = kind(docs, "ClusterConfiguration");
            let pki = cluster
                .and_then(|c| str_at(c, "certificatesDir"))
                .unwrap_or(DEFAULT_PKI);
            let mut etcd_files = Vec::new();
            // Preflight ExternalEtcdClientCertificates.
            for f in ["caFile", "certFile", "keyFile"] {
                if let Some(p) = cluster.and_then(|c| str_at(c, &format!("etcd/external/{f}"))) {
                    if !root.path(p).exists() {
                        return Err(missing(&format!("etcd.external.{f}"), p));
                    }
                    etcd_files.push(p.to_string());
                }
            }
            let minor = kubernetes_version.and_then(minor_of).unwrap_or(0);
            let mut out = certs::init(root, file, pki, minor)?;
            out.present.extend(etcd_files);
            Ok(out)
        }
        Verb::Join => {
            let join = kind(docs, "JoinConfiguration");
            let ca = join
                .and_then(|j| str_at(j, "caCertPath"))
                .unwrap_or("/etc/kubernetes/pki/ca.crt");
            let mut present = Vec::new();
            if let Some(p) = join.and_then(|j| str_at(j, "discovery/file/kubeConfigPath")) {
                if !root.path(p).exists() {
                    return Err(missing("discovery.file.kubeConfigPath", p));
                }
                present.push(p.to_string());
            }
            let control_plane = join.and_then(|j| j.get("controlPlane"));
            let Some(control_plane) = control_plane else {
                // Preflight FileAvailable: a worker's join writes the CA itself.
                if root.path(ca).exists() {
                    return Err(format!(
                        "{file}: caCertPath names {ca}, which exists: kubeadm join refuses it on \
                         a worker (preflight FileAvailable)"
                    ));
                }
                return Ok(certs::Outcome {
                    present,
                    ..Default::default()
                });
            };
            if control_plane.get("certificateKey").is_some() {
                return Err(format!(
                    "{file}: controlPlane.certificateKey asks kubeadm to download the \
                     kubeadm-certs Secret, which the stand-in cannot"
                ));
            }
            // The cluster's certificatesDir, which the stand-in cannot read: caCertPath's.
            let pki = ca.rsplit_once('/').map_or(DEFAULT_PKI, |(d, _)| d);
            let mut out = certs::join_control_plane(root, file, pki)?;
            out.present.splice(0..0, present);
            Ok(out)
        }
    }
}

/// The minor of `v1.MINOR.PATCH`.
pub(crate) fn minor_of(kubernetes_version: &str) -> Option<u32> {
    kubernetes_version
        .strip_prefix('v')
        .and_then(|v| v.strip_prefix("1."))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok())
}

/// Reads an InitConfiguration/ClusterConfiguration file as `kubeadm config` commands do: the
/// kinds `init` takes, each kubeadm document matching kubeadm's schema; no file on disk is
/// looked at.
pub fn read_init_config(file: &str, text: &str) -> Result<Vec<Doc>, String> {
    let docs = docs::parse(file, text)?;
    check_kinds(file, Verb::Init, &docs)?;
    for doc in docs
        .iter()
        .filter(|d| d.api_version.starts_with("kubeadm.k8s.io/"))
    {
        schema_errors(file, doc)?;
    }
    Ok(docs)
}

/// Checks the config file of `kubeadm <verb> --config FILE`. `join_version` is the Kubernetes
/// version a join must match when known (a JoinConfiguration does not name one).
pub fn check(
    root: &Root,
    file: &str,
    text: &str,
    verb: Verb,
    join_version: Option<&str>,
) -> Result<(Checked, Vec<Doc>), String> {
    let docs = docs::parse(file, text)?;
    let api_version = check_kinds(file, verb, &docs)?;
    let kubernetes_version = match verb {
        Verb::Init => {
            let v = kind(&docs, "ClusterConfiguration")
                .and_then(|c| str_at(c, "kubernetesVersion"))
                .ok_or_else(|| format!("{file}: no ClusterConfiguration.kubernetesVersion: an unpinned kubeadm would fetch the version from the internet"))?;
            Some(v.to_string())
        }
        Verb::Join => join_version.map(str::to_string),
    };
    if let Some(v) = &kubernetes_version {
        let want = expected_api(v).map_err(|e| format!("{file}: {e}"))?;
        if api_version != want {
            return Err(format!(
                "{file}: kubernetesVersion {v} needs {want}, the file has {api_version}"
            ));
        }
    }
    for doc in docs
        .iter()
        .filter(|d| d.api_version.starts_with("kubeadm.k8s.io/"))
    {
        schema_errors(file, doc)?;
    }
    let outcome = check_files(root, file, verb, &docs, kubernetes_version.as_deref())?;
    let kinds = docs.iter().map(|d| d.kind.clone()).collect();
    Ok((
        Checked {
            api_version,
            kubernetes_version,
            kinds,
            files: outcome.present,
            generated: outcome.generated,
            warnings: outcome.warnings,
        },
        docs,
    ))
}

/// The kubelet flags kubeadm writes into `/var/lib/kubelet/kubeadm-flags.env` from
/// `nodeRegistration`: the CRI endpoint, the node name (`--hostname-override`, which kubeadm
/// adds when the name is not the host's; always here, which means the same), then
/// `kubeletExtraArgs` (v1beta4's list of `{name, value}` or v1beta3's map).
pub fn kubelet_flags(registration: Option<&Value>) -> Vec<String> {
    let field = |name: &str| registration.and_then(|r| r.get(name));
    let endpoint = field("criSocket")
        .and_then(Value::as_str)
        .unwrap_or("unix:///run/containerd/containerd.sock");
    let mut flags = vec![format!("--container-runtime-endpoint={endpoint}")];
    if let Some(name) = field("name").and_then(Value::as_str) {
        flags.push(format!("--hostname-override={name}"));
    }
    match field("kubeletExtraArgs") {
        Some(Value::Array(list)) => {
            for arg in list {
                if let (Some(n), Some(v)) = (arg["name"].as_str(), arg["value"].as_str()) {
                    flags.push(format!("--{n}={v}"));
                }
            }
        }
        Some(Value::Object(map)) => {
            for (n, v) in map {
                if let Some(v) = v.as_str() {
                    flags.push(format!("--{n}={v}"));
                }
            }
        }
        _ => {}
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubelet_flags_carry_the_name_and_extra_args_of_either_api() {
        let v1beta4 = json!({"name": "m1", "criSocket": "unix:///run/c.sock",
            "kubeletExtraArgs": [{"name": "node-ip", "value": "10.0.0.1"}]});
        assert_eq!(
            kubelet_flags(Some(&v1beta4)),
            [
                "--container-runtime-endpoint=unix:///run/c.sock",
                "--hostname-override=m1",
                "--node-ip=10.0.0.1"
            ]
        );
        let v1beta3 = json!({"name": "m1", "kubeletExtraArgs": {"node-ip": "10.0.0.1"}});
        assert_eq!(
            kubelet_flags(Some(&v1beta3))[1..],
            ["--hostname-override=m1", "--node-ip=10.0.0.1"]
        );
        assert_eq!(
            kubelet_flags(None),
            ["--container-runtime-endpoint=unix:///run/containerd/containerd.sock"]
        );
    }
}
