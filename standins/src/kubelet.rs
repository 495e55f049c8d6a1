//! The kubelet stand-in's checks: a KubeletConfiguration and a kubeconfig whose referenced
//! certificate files exist.

pub mod node;
pub mod pods;

use crate::Root;
use crate::docs::{self, str_at};
use serde_json::Value;

/// What the checks found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Checked {
    /// The kubeconfig's user, e.g. `system:node:<name>` is in its certificate, not here.
    pub server: String,
    pub files: Vec<String>,
}

fn need(
    root: &Root,
    file: &str,
    field: &str,
    path: &str,
    files: &mut Vec<String>,
) -> Result<(), String> {
    if !root.path(path).exists() {
        return Err(format!(
            "{file}: {field} names {path}, which does not exist"
        ));
    }
    files.push(path.to_string());
    Ok(())
}

/// Checks `--config FILE`: one KubeletConfiguration (kubelet.config.k8s.io/v1beta1) and the
/// files it names.
pub fn check_config(
    root: &Root,
    file: &str,
    text: &str,
    files: &mut Vec<String>,
) -> Result<(), String> {
    let docs = docs::parse(file, text)?;
    let [doc] = docs.as_slice() else {
        return Err(format!(
            "{file}: expected one KubeletConfiguration document, found {}",
            docs.len()
        ));
    };
    if doc.api_version != "kubelet.config.k8s.io/v1beta1" || doc.kind != "KubeletConfiguration" {
        return Err(format!(
            "{file}: {} {} is not a kubelet.config.k8s.io/v1beta1 KubeletConfiguration",
            doc.api_version, doc.kind
        ));
    }
    for (field, key) in [
        (
            "authentication.x509.clientCAFile",
            "authentication/x509/clientCAFile",
        ),
        ("tlsCertFile", "tlsCertFile"),
        ("tlsPrivateKeyFile", "tlsPrivateKeyFile"),
    ] {
        if let Some(p) = str_at(&doc.value, key) {
            need(root, file, field, p, files)?;
        }
    }
    Ok(())
}

fn named<'a>(list: Option<&'a Value>, name: &str) -> Option<&'a Value> {
    list?
        .as_array()?
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
}

/// Checks `--kubeconfig FILE`: a v1 Config whose current context resolves to a cluster with an
/// https server and a CA, and a user with a client certificate and key (inline or files).
pub fn check_kubeconfig(
    root: &Root,
    file: &str,
    text: &str,
    files: &mut Vec<String>,
) -> Result<String, String> {
    // Like client-go, accept a kubeconfig without apiVersion or kind; refuse a wrong one.
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| format!("{file}: not valid YAML: {e}"))?;
    let cfg = serde_json::to_value(&yaml).map_err(|e| format!("{file}: {e}"))?;
    let cfg = &cfg;
    if !cfg.is_object() {
        return Err(format!("{file}: not a mapping"));
    }
    for (field, want) in [("apiVersion", "v1"), ("kind", "Config")] {
        if let Some(got) = str_at(cfg, field).filter(|g| *g != want) {
            return Err(format!(
                "{file}: {field} {got} is not {want} (a kubeconfig)"
            ));
        }
    }
    let current =
        str_at(cfg, "current-context").ok_or_else(|| format!("{file}: no current-context"))?;
    let ctx = named(cfg.get("contexts"), current)
        .and_then(|c| c.get("context"))
        .ok_or_else(|| format!("{file}: current-context {current:?} is not among contexts"))?;
    let cluster_name = str_at(ctx, "cluster").unwrap_or_default();
    let user_name = str_at(ctx, "user").unwrap_or_default();
    let cluster = named(cfg.get("clusters"), cluster_name)
        .and_then(|c| c.get("cluster"))
        .ok_or_else(|| {
            format!("{file}: cluster {cluster_name:?} of context {current:?} is not among clusters")
        })?;
    let user = named(cfg.get("users"), user_name)
        .and_then(|u| u.get("user"))
        .ok_or_else(|| {
            format!("{file}: user {user_name:?} of context {current:?} is not among users")
        })?;
    let server = str_at(cluster, "server").unwrap_or_default();
    if !server.starts_with("https://") {
        return Err(format!(
            "{file}: cluster {cluster_name:?} has server {server:?}, not an https:// URL"
        ));
    }
    for (obj, inline, path, what) in [
        (
            cluster,
            "certificate-authority-data",
            "certificate-authority",
            "a CA",
        ),
        (
            user,
            "client-certificate-data",
            "client-certificate",
            "a client certificate",
        ),
        (user, "client-key-data", "client-key", "a client key"),
    ] {
        match (str_at(obj, inline), str_at(obj, path)) {
            (Some(_), _) => {}
            (None, Some(p)) => need(root, file, path, p, files)?,
            (None, None) => return Err(format!("{file}: {what} is missing ({inline} or {path})")),
        }
    }
    Ok(server.to_string())
}
