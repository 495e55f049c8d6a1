//! kubeadm's control-plane phase: the static Pods of kube-apiserver, kube-controller-manager
//! and kube-scheduler for an external etcd, with the flags, hostPath volumes, probes and images
//! kubeadm v1.33 writes (`phases/controlplane/manifests.go`, `volumes.go`,
//! `util/staticpod/utils.go`), `extraArgs` replacing defaults of the same name. The API
//! server's command must pass the stand-in's flag table before any manifest is written.

use super::config::InitConfig;
use crate::Root;
use crate::apiserver::flags::{self, FlagError};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Where the kubelet finds static Pods.
pub const MANIFESTS_DIR: &str = "/etc/kubernetes/manifests";
const KUBERNETES_DIR: &str = "/etc/kubernetes";
const CA_CERTS: &str = "/etc/ssl/certs";
const FLEXVOLUME_DIR: &str = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec";
pub const COMPONENTS: [&str; 3] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// Why the manifests cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("kube-apiserver would refuse the command of its manifest, so none was written")]
    ApiServerFlags(#[source] FlagError),
    #[error("rendering the {0} manifest")]
    Render(&'static str, #[source] serde_yaml::Error),
    #[error(transparent)]
    Write(#[from] durable::Error),
}

/// The CA directories kubeadm mounts into the API server and controller-manager when the
/// host has them (`caCertsExtraVolumePaths`): 1.31 replaced `/etc/pki` with two of its subdirectories.
fn ca_paths(minor: u32) -> Vec<(&'static str, &'static str)> {
    let mut paths = vec![
        ("etc-ca-certificates", "/etc/ca-certificates"),
        ("usr-share-ca-certificates", "/usr/share/ca-certificates"),
        (
            "usr-local-share-ca-certificates",
            "/usr/local/share/ca-certificates",
        ),
    ];
    if minor >= 31 {
        paths.push(("etc-pki-ca-trust", "/etc/pki/ca-trust"));
        paths.push(("etc-pki-tls-certs", "/etc/pki/tls/certs"));
    } else {
        paths.push(("etc-pki", "/etc/pki"));
    }
    paths
}

/// A hostPath volume and its mount.
struct Volume {
    name: String,
    path: String,
    kind: &'static str,
    read_only: bool,
}

impl Volume {
    fn dir(name: &str, path: &str) -> Volume {
        Volume {
            name: name.to_owned(),
            path: path.to_owned(),
            kind: "DirectoryOrCreate",
            read_only: true,
        }
    }

    fn kubeconfig(file: &str) -> Volume {
        Volume {
            name: "kubeconfig".to_owned(),
            path: format!("{KUBERNETES_DIR}/{file}"),
            kind: "FileOrCreate",
            read_only: true,
        }
    }
}

fn common_volumes(root: &Root, cfg: &InitConfig) -> Vec<Volume> {
    let mut volumes = vec![
        Volume::dir("ca-certs", CA_CERTS),
        Volume::dir("k8s-certs", &cfg.certificates_dir),
    ];
    for (name, path) in ca_paths(cfg.minor) {
        if root.path(path).is_dir() {
            volumes.push(Volume::dir(name, path));
        }
    }
    volumes
}

/// `etcd-certs-N`: the directories of the external etcd files not already mounted.
fn etcd_volumes(cfg: &InitConfig) -> Vec<Volume> {
    let Some(etcd) = &cfg.etcd else {
        return Vec::new();
    };
    let mounted: Vec<&str> = [CA_CERTS, cfg.certificates_dir.as_str()]
        .into_iter()
        .chain(ca_paths(cfg.minor).into_iter().map(|(_, p)| p))
        .collect();
    let under = |dir: &str, parent: &str| dir == parent || dir.starts_with(&format!("{parent}/"));
    let dirs: BTreeSet<&str> = [&etcd.ca_file, &etcd.cert_file, &etcd.key_file]
        .into_iter()
        .flatten()
        .filter_map(|f| {
            f.rsplit_once('/')
                .map(|(d, _)| if d.is_empty() { "/" } else { d })
        })
        .filter(|d| !mounted.iter().any(|m| under(d, m)))
        .collect();
    let outer: Vec<&str> = dirs
        .iter()
        .copied()
        .filter(|d| !dirs.iter().any(|o| o != d && under(d, o)))
        .collect();
    outer
        .iter()
        .enumerate()
        .map(|(i, d)| Volume::dir(&format!("etcd-certs-{i}"), d))
        .collect()
}

/// Defaults, then `extraArgs` replacing every default of the same name, sorted by name
/// (kubeadm's `ArgumentsToCommand`; repeats of an extra argument are kept in order).
fn command(binary: &str, defaults: Vec<(&str, String)>, extra: &[(String, String)]) -> Vec<String> {
    let mut args: Vec<(String, String)> = defaults
        .into_iter()
        .filter(|(name, _)| !extra.iter().any(|(n, _)| n == name))
        .map(|(n, v)| (n.to_owned(), v))
        .collect();
    args.extend(extra.iter().cloned());
    args.sort_by(|a, b| a.0.cmp(&b.0));
    std::iter::once(binary.to_owned())
        .chain(args.into_iter().map(|(n, v)| format!("--{n}={v}")))
        .collect()
}

fn api_server_command(cfg: &InitConfig) -> Vec<String> {
    let pki = &cfg.certificates_dir;
    let mut args = vec![
        ("advertise-address", cfg.advertise_address.to_string()),
        ("allow-privileged", "true".into()),
        ("authorization-mode", "Node,RBAC".into()),
        ("client-ca-file", format!("{pki}/ca.crt")),
        ("enable-admission-plugins", "NodeRestriction".into()),
        ("enable-bootstrap-token-auth", "true".into()),
        (
            "kubelet-client-certificate",
            format!("{pki}/apiserver-kubelet-client.crt"),
        ),
        (
            "kubelet-client-key",
            format!("{pki}/apiserver-kubelet-client.key"),
        ),
        (
            "kubelet-preferred-address-types",
            "InternalIP,ExternalIP,Hostname".into(),
        ),
        (
            "proxy-client-cert-file",
            format!("{pki}/front-proxy-client.crt"),
        ),
        (
            "proxy-client-key-file",
            format!("{pki}/front-proxy-client.key"),
        ),
        ("requestheader-allowed-names", "front-proxy-client".into()),
        (
            "requestheader-client-ca-file",
            format!("{pki}/front-proxy-ca.crt"),
        ),
        (
            "requestheader-extra-headers-prefix",
            "X-Remote-Extra-".into(),
        ),
        ("requestheader-group-headers", "X-Remote-Group".into()),
        ("requestheader-username-headers", "X-Remote-User".into()),
        ("secure-port", cfg.bind_port.to_string()),
        (
            "service-account-issuer",
            format!("https://kubernetes.default.svc.{}", cfg.dns_domain),
        ),
        ("service-account-key-file", format!("{pki}/sa.pub")),
        ("service-account-signing-key-file", format!("{pki}/sa.key")),
        ("service-cluster-ip-range", cfg.service_subnet.clone()),
        ("tls-cert-file", format!("{pki}/apiserver.crt")),
        ("tls-private-key-file", format!("{pki}/apiserver.key")),
    ];
    if let Some(etcd) = &cfg.etcd {
        args.push(("etcd-servers", etcd.endpoints.join(",")));
        if let Some(ca) = &etcd.ca_file {
            args.push(("etcd-cafile", ca.clone()));
        }
        if let (Some(cert), Some(key)) = (&etcd.cert_file, &etcd.key_file) {
            args.push(("etcd-certfile", cert.clone()));
            args.push(("etcd-keyfile", key.clone()));
        }
    }
    command("kube-apiserver", args, &cfg.api_server_args)
}

fn controller_manager_command(root: &Root, cfg: &InitConfig) -> Vec<String> {
    let pki = &cfg.certificates_dir;
    let kubeconfig = format!("{KUBERNETES_DIR}/controller-manager.conf");
    // Without ca.key the CA is external and kube-controller-manager signs nothing.
    let has_ca_key = root.path(&format!("{pki}/ca.key")).exists();
    let signing = |file: &str| {
        if has_ca_key {
            format!("{pki}/{file}")
        } else {
            String::new()
        }
    };
    let mut args = vec![
        ("authentication-kubeconfig", kubeconfig.clone()),
        ("authorization-kubeconfig", kubeconfig.clone()),
        ("bind-address", "127.0.0.1".into()),
        ("client-ca-file", format!("{pki}/ca.crt")),
        ("cluster-name", cfg.cluster_name.clone()),
        ("cluster-signing-cert-file", signing("ca.crt")),
        ("cluster-signing-key-file", signing("ca.key")),
        ("controllers", "*,bootstrapsigner,tokencleaner".into()),
        ("kubeconfig", kubeconfig),
        ("leader-elect", "true".into()),
        (
            "requestheader-client-ca-file",
            format!("{pki}/front-proxy-ca.crt"),
        ),
        ("root-ca-file", format!("{pki}/ca.crt")),
        ("service-account-private-key-file", format!("{pki}/sa.key")),
        ("use-service-account-credentials", "true".into()),
    ];
    if let Some(pods) = &cfg.pod_subnet {
        args.push(("allocate-node-cidrs", "true".into()));
        args.push(("cluster-cidr", pods.clone()));
        args.push(("service-cluster-ip-range", cfg.service_subnet.clone()));
    }
    command(
        "kube-controller-manager",
        args,
        &cfg.controller_manager_args,
    )
}

fn scheduler_command(cfg: &InitConfig) -> Vec<String> {
    let kubeconfig = format!("{KUBERNETES_DIR}/scheduler.conf");
    let args = vec![
        ("authentication-kubeconfig", kubeconfig.clone()),
        ("authorization-kubeconfig", kubeconfig.clone()),
        ("bind-address", "127.0.0.1".into()),
        ("kubeconfig", kubeconfig),
        ("leader-elect", "true".into()),
    ];
    command("kube-scheduler", args, &cfg.scheduler_args)
}

fn probe(host: &str, port: u16, path: &str, failures: u64, initial_delay: bool) -> Value {
    let mut probe = json!({
        "failureThreshold": failures,
        "httpGet": { "host": host, "path": path, "port": port, "scheme": "HTTPS" },
        "periodSeconds": 10,
        "timeoutSeconds": 15,
    });
    if initial_delay {
        probe["initialDelaySeconds"] = json!(10);
    }
    probe
}

/// The value of `--name` in a command, for probes that follow `extraArgs`.
fn flag<'a>(command: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("--{name}=");
    command.iter().rev().find_map(|a| a.strip_prefix(&prefix))
}

/// `staticpod.ComponentPod` with its probes.
fn pod(
    name: &str,
    cfg: &InitConfig,
    command: Vec<String>,
    cpu: &str,
    probes: Value,
    volumes: &[Volume],
) -> Value {
    let mut container = json!({
        "name": name,
        "image": format!("{}/{name}:{}", cfg.image_repository, cfg.kubernetes_version.replace('+', "_")),
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "resources": { "requests": { "cpu": cpu } },
        "volumeMounts": volumes.iter().map(|v| {
            let mut m = json!({ "mountPath": v.path, "name": v.name });
            if v.read_only { m["readOnly"] = json!(true); }
            m
        }).collect::<Vec<_>>(),
    });
    for (k, v) in probes.as_object().into_iter().flatten() {
        container[k] = v.clone();
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "creationTimestamp": null,
            "labels": { "component": name, "tier": "control-plane" },
            "name": name,
            "namespace": "kube-system",
        },
        "spec": {
            "containers": [container],
            "hostNetwork": true,
            "priority": 2_000_001_000,
            "priorityClassName": "system-node-critical",
            "securityContext": { "seccompProfile": { "type": "RuntimeDefault" } },
            "volumes": volumes.iter().map(|v| json!({
                "hostPath": { "path": v.path, "type": v.kind },
                "name": v.name,
            })).collect::<Vec<_>>(),
        },
        "status": {},
    })
}

fn sorted(mut volumes: Vec<Volume>) -> Vec<Volume> {
    volumes.sort_by(|a, b| a.name.cmp(&b.name));
    volumes
}

fn api_server_pod(root: &Root, cfg: &InitConfig) -> Value {
    let command = api_server_command(cfg);
    let address = cfg.advertise_address;
    let host = if address.is_unspecified() {
        String::new()
    } else {
        address.to_string()
    };
    let port = flag(&command, "secure-port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(cfg.bind_port);
    let startup_failures = cfg.health_check_secs.div_ceil(10);
    let mut readiness = probe(&host, port, "/readyz", 3, false);
    readiness["periodSeconds"] = json!(1);
    let probes = json!({
        "livenessProbe": probe(&host, port, "/livez", 8, true),
        "readinessProbe": readiness,
        "startupProbe": probe(&host, port, "/livez", startup_failures, true),
    });
    let mut volumes = common_volumes(root, cfg);
    volumes.extend(etcd_volumes(cfg));
    let mut pod = pod(
        "kube-apiserver",
        cfg,
        command,
        "250m",
        probes,
        &sorted(volumes),
    );
    let endpoint = match address {
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        v4 => format!("{v4}:{port}"),
    };
    pod["metadata"]["annotations"] =
        json!({ "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint": endpoint });
    pod
}

fn controller_manager_pod(root: &Root, cfg: &InitConfig) -> Value {
    let command = controller_manager_command(root, cfg);
    let host = flag(&command, "bind-address")
        .unwrap_or("127.0.0.1")
        .to_owned();
    let probes = json!({
        "livenessProbe": probe(&host, 10257, "/healthz", 8, true),
        "startupProbe": probe(&host, 10257, "/healthz", cfg.health_check_secs.div_ceil(10), true),
    });
    let mut volumes = common_volumes(root, cfg);
    let flex = flag(&command, "flex-volume-plugin-dir").unwrap_or(FLEXVOLUME_DIR);
    volumes.push(Volume {
        read_only: false,
        ..Volume::dir("flexvolume-dir", flex)
    });
    volumes.push(Volume::kubeconfig("controller-manager.conf"));
    pod(
        "kube-controller-manager",
        cfg,
        command,
        "200m",
        probes,
        &sorted(volumes),
    )
}

fn scheduler_pod(cfg: &InitConfig) -> Value {
    let command = scheduler_command(cfg);
    let host = flag(&command, "bind-address")
        .unwrap_or("127.0.0.1")
        .to_owned();
    let startup = cfg.health_check_secs.div_ceil(10);
    // 1.32 moved the scheduler's probes to /livez and added a readiness probe.
    let probes = if cfg.minor >= 32 {
        let mut readiness = probe(&host, 10259, "/readyz", 3, false);
        readiness["periodSeconds"] = json!(1);
        json!({
            "livenessProbe": probe(&host, 10259, "/livez", 8, true),
            "readinessProbe": readiness,
            "startupProbe": probe(&host, 10259, "/livez", startup, true),
        })
    } else {
        json!({
            "livenessProbe": probe(&host, 10259, "/healthz", 8, true),
            "startupProbe": probe(&host, 10259, "/healthz", startup, true),
        })
    };
    let volumes = [Volume::kubeconfig("scheduler.conf")];
    pod("kube-scheduler", cfg, command, "100m", probes, &volumes)
}

/// The three manifests as `(host path, YAML)`, checked: the API server's command is one the
/// stand-in's kube-apiserver accepts.
pub fn render(root: &Root, cfg: &InitConfig) -> Result<Vec<(String, String)>, ManifestError> {
    let api_server = api_server_pod(root, cfg);
    let args: Vec<String> = api_server["spec"]["containers"][0]["command"]
        .as_array()
        .into_iter()
        .flatten()
        .skip(1)
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    flags::parse(&args).map_err(ManifestError::ApiServerFlags)?;
    let pods = [
        api_server,
        controller_manager_pod(root, cfg),
        scheduler_pod(cfg),
    ];
    COMPONENTS
        .iter()
        .zip(pods)
        .map(|(name, pod)| {
            let yaml = serde_yaml::to_string(&pod).map_err(|e| ManifestError::Render(name, e))?;
            Ok((format!("{MANIFESTS_DIR}/{name}.yaml"), yaml))
        })
        .collect()
}

/// Writes what [`render`] made, each file whole, 0600 as kubeadm writes them.
pub fn write(root: &Root, manifests: &[(String, String)]) -> Result<(), ManifestError> {
    for (path, yaml) in manifests {
        durable::write_atomic(&root.path(path), yaml.as_bytes(), 0o600)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> InitConfig {
        let text = format!(
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n\
             localAPIEndpoint: {{advertiseAddress: 10.77.0.11, bindPort: 6443}}\nnodeRegistration: {{name: demo-m1}}\n\
             ---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n\
             kubernetesVersion: v1.33.4\nimageRepository: 10.77.0.1:8443/k8s\n\
             networking: {{podSubnet: 10.244.0.0/16}}\n\
             etcd:\n  external:\n    endpoints: [https://10.77.0.11:2379, https://10.77.0.12:2379]\n\
             \x20   caFile: /etc/etcd/pki/ca.crt\n    certFile: /etc/kubernetes/pki/apiserver-etcd-client.crt\n\
             \x20   keyFile: /etc/kubernetes/pki/apiserver-etcd-client.key\n{extra}"
        );
        InitConfig::from_docs(&crate::docs::parse("k", &text).unwrap()).unwrap()
    }

    fn empty_root() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let root = Root(dir.path().to_owned());
        (dir, root)
    }

    #[test]
    fn the_api_server_takes_kubeadms_flags_and_extra_args_replace_them() {
        let c = cfg(
            "apiServer:\n  extraArgs:\n  - {name: profiling, value: 'false'}\n  - {name: authorization-mode, value: RBAC}\n",
        );
        let command = api_server_command(&c);
        assert_eq!(command[0], "kube-apiserver");
        assert!(command.contains(&"--authorization-mode=RBAC".to_owned()));
        assert!(!command.contains(&"--authorization-mode=Node,RBAC".to_owned()));
        assert!(command.contains(&"--profiling=false".to_owned()));
        assert!(command.contains(
            &"--etcd-servers=https://10.77.0.11:2379,https://10.77.0.12:2379".to_owned()
        ));
        let mut sorted = command[1..].to_vec();
        sorted.sort();
        assert_eq!(sorted, command[1..]);
        flags::parse(&command[1..]).unwrap();
    }

    #[test]
    fn an_unknown_api_server_flag_refuses_every_manifest() {
        let (_dir, root) = empty_root();
        let c = cfg("apiServer:\n  extraArgs:\n  - {name: cloud-provider, value: aws}\n");
        let err = render(&root, &c).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kube-apiserver would refuse the command of its manifest, so none was written"
        );
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert_eq!(source, "unknown flag: --cloud-provider");
    }

    #[test]
    fn volumes_follow_the_host_and_the_etcd_files() {
        let (dir, root) = empty_root();
        std::fs::create_dir_all(dir.path().join("etc/pki/ca-trust")).unwrap();
        let c = cfg("");
        let pod = api_server_pod(&root, &c);
        let names: Vec<&str> = pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["ca-certs", "etc-pki-ca-trust", "etcd-certs-0", "k8s-certs"]
        );
        assert_eq!(
            pod["spec"]["volumes"][2]["hostPath"]["path"],
            "/etc/etcd/pki"
        );
        assert_eq!(
            pod["spec"]["containers"][0]["image"],
            "10.77.0.1:8443/k8s/kube-apiserver:v1.33.4"
        );
        assert_eq!(
            pod["spec"]["containers"][0]["startupProbe"]["failureThreshold"],
            24
        );
        let kcm = controller_manager_pod(&root, &c);
        assert!(
            kcm["spec"]["containers"][0]["command"]
                .as_array()
                .unwrap()
                .contains(&json!("--cluster-signing-key-file="))
        );
    }
}
