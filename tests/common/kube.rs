//! The cluster as an operator reaches it through the control-plane VIP: the real kubectl by
//! `launcher-lab kubectl`, the VIP's holder by `launcher-lab vip`, the API server's certificate
//! as `openssl s_client` sees it at the VIP, and requests made with other identities.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::{lab, text};

/// The control-plane endpoint of every lab.
pub const VIP: &str = "10.77.0.10";

/// `launcher-lab kubectl ARGS…`: (success, stdout and stderr).
pub fn kubectl(run: &Path, args: &[&str]) -> (bool, String) {
    let mut all = vec!["kubectl", "--run-dir", run.to_str().unwrap()];
    all.push("--request-timeout=10s");
    all.extend_from_slice(args);
    let out = Command::new(super::lab_bin()).args(&all).output().unwrap();
    (
        out.status.success(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

/// One row of `kubectl get nodes`, from its JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub name: String,
    /// The Ready condition's status: `True`, `False` or `Unknown`.
    pub ready: String,
    pub control_plane: bool,
    pub taints: Vec<String>,
    /// The `InternalIP` address, when the Node has one.
    pub internal_ip: Option<String>,
}

/// Every Node through the VIP, or `None` while the API does not answer.
pub fn nodes(run: &Path) -> Option<Vec<NodeRow>> {
    let (ok, out) = kubectl(run, &["get", "nodes", "-o", "json"]);
    if !ok {
        return None;
    }
    let list: Value = serde_json::from_str(&out).ok()?;
    let rows = list["items"]
        .as_array()?
        .iter()
        .map(|n| NodeRow {
            name: n["metadata"]["name"].as_str().unwrap_or("").to_owned(),
            ready: n["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .and_then(|c| c["status"].as_str())
                .unwrap_or("")
                .to_owned(),
            control_plane: n["metadata"]["labels"]
                .get("node-role.kubernetes.io/control-plane")
                .is_some(),
            taints: n["spec"]["taints"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .map(|t| format!("{}:{}", t["key"].as_str().unwrap_or(""), t["effect"]))
                        .collect()
                })
                .unwrap_or_default(),
            internal_ip: n["status"]["addresses"]
                .as_array()
                .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
                .and_then(|a| a["address"].as_str())
                .map(str::to_owned),
        })
        .collect();
    Some(rows)
}

/// Waits until `kubectl get nodes` through the VIP lists `count` nodes, all Ready.
pub fn wait_all_ready(run: &Path, count: usize, timeout: Duration) -> Vec<NodeRow> {
    testkit::wait_for(
        &format!("{count} Ready nodes through the VIP"),
        timeout,
        || {
            let rows = nodes(run)?;
            (rows.len() == count && rows.iter().all(|r| r.ready == "True")).then_some(rows)
        },
    )
}

/// The VM holding the VIP (`m1`, …), or `None`.
pub fn vip_holder(run: &Path) -> Option<String> {
    let out = lab(run, &["vip"]);
    let line = text(&out.stdout);
    out.status
        .success()
        .then(|| line.split_whitespace().next().unwrap_or("").to_owned())
}

fn in_namespace(namespace: &str, program: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", namespace, program]);
    cmd
}

/// The certificate the API server presents at the VIP (PEM).
pub fn served_certificate(namespace: &str) -> String {
    let out = in_namespace(namespace, "openssl")
        .args(["s_client", "-connect", &format!("{VIP}:6443")])
        .args(["-servername", "kubernetes", "-showcerts"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let all = text(&out.stdout);
    let start = all
        .find("-----BEGIN CERTIFICATE-----")
        .unwrap_or_else(|| panic!("no certificate at the VIP: {all}{}", text(&out.stderr)));
    let end = all[start..].find("-----END CERTIFICATE-----").unwrap() + start + 25;
    format!("{}\n", &all[start..end])
}

/// The cluster CA of a kubeconfig (PEM), from its `certificate-authority-data`.
pub fn kubeconfig_ca(kubeconfig: &Path) -> String {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let b64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
        .expect("an embedded CA");
    use base64::Engine;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .unwrap(),
    )
    .unwrap()
}

/// `curl` to the VIP with a client certificate and key: the HTTP status.
pub fn curl_status(namespace: &str, ca: &Path, cert: &Path, key: &Path, path: &str) -> String {
    let out = in_namespace(namespace, "curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .arg("--cacert")
        .arg(ca)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .args(["--resolve", &format!("kubernetes:6443:{VIP}")])
        .arg(format!("https://kubernetes:6443{path}"))
        .output()
        .unwrap();
    text(&out.stdout)
}

/// `openssl ARGS…` in `dir`: (success, output).
pub fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

/// The status `/readyz` answers at the VIP (anonymously, trusting any certificate), or `None`
/// when nothing answers there within 3 s.
pub fn readyz_at_vip(namespace: &str) -> Option<u16> {
    let out = in_namespace(namespace, "curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "3",
        ])
        .arg(format!("https://{VIP}:6443/readyz"))
        .output()
        .ok()?;
    text(&out.stdout)
        .trim()
        .parse()
        .ok()
        .filter(|code| *code != 0)
}

/// The Ready status of one Node through the VIP.
pub fn ready_of(run: &Path, node: &str) -> Option<String> {
    nodes(run)?
        .into_iter()
        .find(|r| r.name == node)
        .map(|r| r.ready)
}
