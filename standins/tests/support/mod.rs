//! What the kubeadm stand-in's tests share: a host under a temporary root that passes
//! kubeadm's preflight (its `/proc`, `/sys`, executables and CRI socket), and the files the
//! seed gives the first master, planned by `cluster`.

#![allow(dead_code)]

pub mod control_plane;
pub mod kube;

use cluster::api::{FileSource, Role};
use cluster::etcd::{ClusterState, Member};
use cluster::pki::{CaSet, KeyAlgorithm};
use cluster::plan::{EtcdPlacement, HostInput, plan_host};
use cluster::spec::{ClusterSpec, Hostname};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::Path;
use testkit::fixtures::ClusterFile;

/// The PATH the stand-in is run with; its directories are looked up under the root.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Executables kubeadm 1.33's preflight looks for.
pub const EXECUTABLES: [&str; 9] = [
    "ip", "iptables", "mount", "nsenter", "ebtables", "ethtool", "socat", "tc", "touch",
];

pub fn put(root: &Path, host_path: &str, text: &str) {
    let p = root.join(host_path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A host kubeadm's preflight accepts: 4 CPUs, 4 GiB, no swap, forwarding on, every
/// executable, a CRI socket that answers (kept open by the returned listener).
pub fn good_host(root: &Path) -> UnixListener {
    use std::os::unix::fs::PermissionsExt;
    put(root, "/sys/devices/system/cpu/online", "0-3\n");
    put(
        root,
        "/proc/meminfo",
        "MemTotal:        4194304 kB\nMemFree:         1000 kB\n",
    );
    put(
        root,
        "/proc/swaps",
        "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n",
    );
    put(root, "/proc/sys/net/ipv4/ip_forward", "1\n");
    for exe in EXECUTABLES {
        let dir = if exe == "touch" || exe == "mount" {
            "/usr/bin"
        } else {
            "/usr/sbin"
        };
        let path = format!("{dir}/{exe}");
        put(root, &path, "#!/bin/sh\n");
        let file = root.join(path.trim_start_matches('/'));
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let socket = root.join("run/containerd/containerd.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    UnixListener::bind(socket).unwrap()
}

/// kubeadm's fixed ports (kubelet, scheduler, controller-manager) that something on this
/// machine already holds: preflight is told to ignore those, as an operator would.
pub fn busy_fixed_ports() -> Vec<String> {
    let busy: Vec<String> = [10250u16, 10257, 10259]
        .into_iter()
        .filter(|p| TcpListener::bind(("0.0.0.0", *p)).is_err())
        .map(|p| format!("Port-{p}"))
        .collect();
    if !busy.is_empty() {
        eprintln!("note: {busy:?} in use on this machine; preflight ignores them here");
    }
    busy
}

/// The one-master cluster of `testkit::fixtures` (10.77.0.11, endpoint 10.77.0.11:6443).
pub fn spec(schedulable: bool) -> ClusterSpec {
    let text = ClusterFile {
        schedulable_masters: schedulable,
        ..ClusterFile::one_master("10.77.0.1:8443")
    }
    .render();
    ClusterSpec::parse("cluster.toml", &text).unwrap().spec
}

/// Every file the seed gives the first master of `spec`, by host path.
pub fn first_master_files(spec: &ClusterSpec) -> BTreeMap<String, String> {
    let now = time::OffsetDateTime::now_utc();
    let cas = CaSet::generate(KeyAlgorithm::EcdsaP256, now).unwrap();
    let m1 = ("demo-m1", "10.77.0.11".parse().unwrap());
    master_files(spec, &cas, m1, &[m1])
}

/// Every file the seed gives the master `(name, ip)` of `spec`, by host path: the first
/// master's when `members` (the etcd members it starts with, itself last) is only itself, a
/// joining master's (an etcd learner) otherwise.
pub fn master_files(
    spec: &ClusterSpec,
    cas: &CaSet,
    (name, ip): (&str, std::net::IpAddr),
    members: &[(&str, std::net::IpAddr)],
) -> BTreeMap<String, String> {
    let hostname: Hostname = name.parse().unwrap();
    let first_master = members.len() == 1;
    let input = HostInput {
        spec,
        cas,
        host_id: name,
        hostname: &hostname,
        role: Role::Master,
        ip: Some(ip),
        first_master,
        etcd: Some(EtcdPlacement {
            members: members.iter().map(|(n, ip)| Member::new(*n, *ip)).collect(),
            state: if first_master {
                ClusterState::New
            } else {
                ClusterState::Existing
            },
            learner: !first_master,
        }),
        csrs: &BTreeMap::new(),
        now: time::OffsetDateTime::now_utc(),
    };
    let plan = plan_host(&input).unwrap();
    plan.files
        .into_iter()
        .map(|f| match f.source {
            FileSource::Text { text } => (f.path, text),
            FileSource::HostKey { name } => panic!("{} is the host's key {name}", f.path),
        })
        .collect()
}

pub fn write_files(root: &Path, files: &BTreeMap<String, String>) {
    for (path, text) in files {
        put(root, path, text);
    }
}

/// The documents of a multi-document YAML file, as JSON values.
pub fn documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).unwrap()).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// `documents` written back as one file.
pub fn render(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| format!("---\n{}", serde_yaml::to_string(d).unwrap()))
        .collect()
}

/// The first document of `kind` in `docs`.
pub fn kind_mut<'a>(docs: &'a mut [Value], kind: &str) -> &'a mut Value {
    docs.iter_mut().find(|d| d["kind"] == kind).unwrap()
}

/// Every file under `dir`, by relative path, with its bytes.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if path.is_file() {
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// The SANs of a PEM certificate: DNS names and IP addresses as text.
pub fn sans(pem: &str) -> (Vec<String>, Vec<String>) {
    use x509_parser::extensions::GeneralName;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    let san = cert.subject_alternative_name().unwrap().unwrap();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(d) => dns.push(d.to_string()),
            GeneralName::IPAddress(b) => {
                let ip: std::net::IpAddr = match b.len() {
                    4 => <[u8; 4]>::try_from(*b).unwrap().into(),
                    _ => <[u8; 16]>::try_from(*b).unwrap().into(),
                };
                ips.push(ip.to_string());
            }
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth, "{eku:?}");
    assert_eq!(cert.subject().to_string(), "CN=kube-apiserver");
    (dns, ips)
}
