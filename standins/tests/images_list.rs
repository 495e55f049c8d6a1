//! `kubeadm-standin config images list --config` on the configs Launcher renders gives the
//! list `launcher-seed images required` checks the registry for: the stand-in reads the config
//! as kubeadm does, with kubeadm's pinned tags of its own, so the two lists come from separate
//! code.

use std::net::IpAddr;
use std::process::Command;

use cluster::kubeadm::{NodeConfig, render_init, required_images};
use cluster::spec::{ClusterSpec, Hostname};
use testkit::fixtures::ClusterFile;

fn listed(spec: &ClusterSpec) -> Result<Vec<String>, String> {
    let name: Hostname = "t-m1".parse().unwrap();
    let node = NodeConfig {
        spec,
        node_name: &name,
        advertise_address: "10.77.0.11".parse::<IpAddr>().unwrap(),
        etcd_endpoints: vec!["https://10.77.0.11:2379".into()],
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kubeadm.yaml");
    std::fs::write(&config, render_init(&node)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kubeadm-standin"))
        .args(["config", "images", "list", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect())
}

fn spec(version: &str, skip: &[&str]) -> ClusterSpec {
    let mut extra = Vec::new();
    if !skip.is_empty() {
        let quoted: Vec<String> = skip.iter().map(|p| format!("{p:?}")).collect();
        extra.push(format!("skip_phases = [{}]", quoted.join(", ")));
    }
    let text = ClusterFile {
        kubernetes_version: version.into(),
        extra_cluster: extra,
        ..ClusterFile::demo()
    }
    .render();
    ClusterSpec::parse("t.toml", &text).unwrap().spec
}

#[test]
fn the_stand_in_lists_what_the_seed_requires() {
    let cases: [(&str, &[&str]); 7] = [
        ("v1.33.4", &[]),
        ("v1.33.4", &["addon"]),
        ("v1.33.4", &["addon/coredns"]),
        ("v1.33.4", &["addon/kube-proxy", "show-join-command"]),
        ("v1.31.2", &[]),
        ("v1.30.14", &[]),
        ("v1.22.17", &[]),
    ];
    for (version, skip) in cases {
        let spec = spec(version, skip);
        assert_eq!(
            listed(&spec).unwrap(),
            required_images(&spec),
            "{version} skipping {skip:?}"
        );
    }
}

/// v1beta3 has no `dns.disabled`/`proxy.disabled`: `kubeadm config images list` still lists
/// what `kubeadm init` will not pull once skipPhases disabled it, as the real one does.
#[test]
fn before_v1beta4_a_skipped_addon_is_still_listed_by_kubeadm() {
    let spec = spec("v1.30.14", &["addon"]);
    let listed = listed(&spec).unwrap();
    assert_eq!(listed.len(), 6, "{listed:?}");
    assert_eq!(required_images(&spec).len(), 4);
}
