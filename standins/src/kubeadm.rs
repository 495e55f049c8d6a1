//! The kubeadm stand-in's checks: API version for the Kubernetes version, the JSON schema of
//! each kubeadm document, and every file the config refers to.

use crate::Root;
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
    /// Every file the config refers to, each found to exist.
    pub files: Vec<String>,
}

/// The kubeadm API version a Kubernetes version is rendered with (`v1.31.0` and later:
/// v1beta4; 1.22 to 1.30: v1beta3).
pub fn expected_api(kubernetes_version: &str) -> Result<&'static str, String> {
    let minor = kubernetes_version
        .strip_prefix('v')
        .and_then(|v| v.strip_prefix("1."))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok())
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

/// The files a config refers to: (field, path).
fn referenced_files(verb: Verb, docs: &[Doc]) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut add = |field: &str, path: String| files.push((field.to_string(), path));
    match verb {
        Verb::Init => {
            let cluster = kind(docs, "ClusterConfiguration");
            let pki = cluster
                .and_then(|c| str_at(c, "certificatesDir"))
                .unwrap_or(DEFAULT_PKI)
                .to_string();
            add("certificatesDir (CA certificate)", format!("{pki}/ca.crt"));
            add("certificatesDir (CA key)", format!("{pki}/ca.key"));
            for f in ["caFile", "certFile", "keyFile"] {
                if let Some(p) = cluster.and_then(|c| str_at(c, &format!("etcd/external/{f}"))) {
                    add(&format!("etcd.external.{f}"), p.to_string());
                }
            }
        }
        Verb::Join => {
            let join = kind(docs, "JoinConfiguration");
            let ca = join
                .and_then(|j| str_at(j, "caCertPath"))
                .unwrap_or("/etc/kubernetes/pki/ca.crt");
            add("caCertPath", ca.to_string());
            if let Some(p) = join.and_then(|j| str_at(j, "discovery/file/kubeConfigPath")) {
                add("discovery.file.kubeConfigPath", p.to_string());
            }
            if join.is_some_and(|j| j.get("controlPlane").is_some()) {
                let pki = ca.rsplit_once('/').map_or(DEFAULT_PKI, |(d, _)| d);
                for name in [
                    "ca.key",
                    "sa.key",
                    "sa.pub",
                    "front-proxy-ca.crt",
                    "front-proxy-ca.key",
                ] {
                    add(
                        "controlPlane (shared certificates)",
                        format!("{pki}/{name}"),
                    );
                }
            }
        }
    }
    files
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
    let mut files = Vec::new();
    for (field, path) in referenced_files(verb, &docs) {
        if !root.path(&path).exists() {
            return Err(format!(
                "{file}: {field} names {path}, which does not exist"
            ));
        }
        files.push(path);
    }
    let kinds = docs.iter().map(|d| d.kind.clone()).collect();
    Ok((
        Checked {
            api_version,
            kubernetes_version,
            kinds,
            files,
        },
        docs,
    ))
}
