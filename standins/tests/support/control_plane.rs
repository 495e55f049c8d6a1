//! A control plane on a master's own files for the kubeadm stand-in's tests: etcd on its
//! etcd certificates, the API server stand-in started from the manifest kubeadm wrote, and
//! HTTPS clients of its kubeconfigs.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

const MANIFESTS: &str = "etc/kubernetes/manifests";

/// An HTTPS client with the CA and embedded credentials of a kubeconfig.
pub fn client_of(kubeconfig: &str) -> reqwest::blocking::Client {
    use base64::Engine;
    let config: Value = serde_yaml::from_str(kubeconfig).unwrap();
    let data = |v: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    let user = &config["users"][0]["user"];
    let mut identity = data(&user["client-certificate-data"]);
    identity.extend(data(&user["client-key-data"]));
    let ca = data(&config["clusters"][0]["cluster"]["certificate-authority-data"]);
    reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .identity(reqwest::Identity::from_pem(&identity).unwrap())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}

/// etcd on the master's own certificates, mutual TLS, on 127.0.0.1.
pub fn start_etcd(root: &Path, client_port: u16) -> testkit::ChildGuard {
    let file = |p: &str| root.join(p.trim_start_matches('/'));
    let tls = super::kube::EtcdTls {
        ca: file("/etc/kubernetes/pki/etcd/ca.crt"),
        cert: file("/etc/kubernetes/pki/etcd/server.crt"),
        key: file("/etc/kubernetes/pki/etcd/server.key"),
    };
    let url = format!("https://127.0.0.1:{client_port}");
    super::kube::etcd("demo-m1", root, &url, testkit::free_tcp_port(), &tls)
}

/// Starts kube-apiserver's stand-in as the kubelet would from the manifest kubeadm wrote, its
/// host paths placed under the root.
pub fn start_api_server(root: &Path) -> testkit::ChildGuard {
    let manifest = root.join(MANIFESTS).join("kube-apiserver.yaml");
    let pod: Value = serde_yaml::from_str(&std::fs::read_to_string(manifest).unwrap()).unwrap();
    let command: Vec<String> =
        serde_json::from_value(pod["spec"]["containers"][0]["command"].clone()).unwrap();
    let args = command[1..].iter().map(|a| match a.split_once("=/") {
        Some((flag, path)) => format!("{flag}={}", root.join(path).display()),
        None => a.clone(),
    });
    let log = std::fs::File::create(root.join("kube-apiserver.log")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kube-apiserver-standin"));
    cmd.args(args)
        .stdout(std::process::Stdio::null())
        .stderr(log);
    testkit::ChildGuard::spawn("kube-apiserver-standin", &mut cmd)
}
