//! Rendered kubeadm configs for both config API versions, compared byte for byte with the
//! checked-in goldens and validated against the kubeadm schemas in `reference/kubeadm-schema`.
//!
//! Refresh the goldens after an intended change with
//! `UPDATE_GOLDENS=1 cargo test -p cluster --test kubeadm_golden` and review the diff.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use cluster::api::Role;
use cluster::etcd::{Member, client_urls};
use cluster::kubeadm::{NodeConfig, render_init, render_join_control_plane, render_kubelet_config};
use cluster::spec::ClusterSpec;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example(name: &str) -> ClusterSpec {
    let path = repo().join("examples").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    ClusterSpec::parse(name, &text).unwrap().spec
}

/// `(file name, contents)` of what the first and second master and every node get.
fn render_example(spec: &ClusterSpec) -> Vec<(&'static str, String)> {
    let masters: Vec<_> = spec
        .plan_inventory()
        .into_iter()
        .filter(|p| p.role == Role::Master)
        .collect();
    let ip = |i: usize| IpAddr::V4(masters[i].host.ip.unwrap());
    let members: Vec<Member> = masters
        .iter()
        .map(|p| Member::new(p.hostname.to_string(), IpAddr::V4(p.host.ip.unwrap())))
        .collect();
    let endpoints = client_urls(&members);
    let node = |i: usize| NodeConfig {
        spec,
        node_name: &masters[i].hostname,
        advertise_address: ip(i),
        etcd_endpoints: endpoints.clone(),
    };
    vec![
        ("init.yaml", render_init(&node(0))),
        (
            "join-control-plane.yaml",
            render_join_control_plane(&node(1)),
        ),
        ("kubelet.yaml", render_kubelet_config(spec)),
    ]
}

fn check_goldens(example_name: &str, dir: &str) {
    let spec = example(example_name);
    let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/golden")
        .join(dir);
    let update = std::env::var_os("UPDATE_GOLDENS").is_some();
    let mut differ = Vec::new();
    for (name, rendered) in render_example(&spec) {
        let path = golden_dir.join(name);
        if update {
            std::fs::create_dir_all(&golden_dir).unwrap();
            std::fs::write(&path, &rendered).unwrap();
            continue;
        }
        let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "reading {}: {e} (UPDATE_GOLDENS=1 makes it)",
                path.display()
            )
        });
        if golden != rendered {
            differ.push(format!(
                "{}:\n--- golden\n{golden}\n--- rendered\n{rendered}",
                path.display()
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "rendered configs differ from the goldens (UPDATE_GOLDENS=1 to refresh after review):\n{}",
        differ.join("\n")
    );
}

#[test]
fn v1beta4_goldens_from_examples_cluster_toml() {
    check_goldens("cluster.toml", "v1beta4");
}

#[test]
fn v1beta3_goldens_from_examples_cluster_v1_30_toml() {
    check_goldens("cluster-v1.30.toml", "v1beta3");
}

/// Runs the schema validator on one file; it prints `OK <file> <kind>` per kubeadm document.
fn validate(path: &Path) -> String {
    let script = repo().join("reference/kubeadm-schema/validate.py");
    let out = Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} is not valid:\n{stdout}{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn every_rendered_kubeadm_document_passes_the_schema() {
    if !testkit::require(&["/usr/bin/python3"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (example_name, version) in [
        ("cluster.toml", "v1beta4"),
        ("cluster-v1.30.toml", "v1beta3"),
    ] {
        let spec = example(example_name);
        for (name, rendered) in render_example(&spec) {
            let path = dir.path().join(format!("{version}-{name}"));
            std::fs::write(&path, rendered).unwrap();
            let report = validate(&path);
            let expected_kinds: &[&str] = match name {
                "init.yaml" => &["InitConfiguration", "ClusterConfiguration"],
                "join-control-plane.yaml" => &["JoinConfiguration"],
                _ => &[],
            };
            for kind in expected_kinds {
                let line = format!("OK {} {kind}", path.display());
                assert!(
                    report.lines().any(|l| l == line),
                    "{version} {name}: no `{line}` in:\n{report}"
                );
            }
        }
    }
}

#[test]
fn the_schema_check_refuses_v1beta4_fields_under_v1beta3() {
    if !testkit::require(&["/usr/bin/python3"]) {
        return;
    }
    let spec = example("cluster.toml");
    let (_, init) = render_example(&spec).remove(0);
    let wrong = init.replace("kubeadm.k8s.io/v1beta4", "kubeadm.k8s.io/v1beta3");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrong.yaml");
    std::fs::write(&path, wrong).unwrap();
    let script = repo().join("reference/kubeadm-schema/validate.py");
    let out = Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "list-form extraArgs passed as v1beta3:\n{stdout}"
    );
    assert!(stdout.contains("FAIL"), "{stdout}");
}

/// The operator's API server flags over Launcher's (`profiling` replaced, not repeated), in
/// each config API's form, through the same schema check; the other components keep theirs.
#[test]
fn operator_api_server_flags_render_in_both_apis_and_pass_the_schema() {
    if !testkit::require(&["/usr/bin/python3"]) {
        return;
    }
    let args = "[cluster.api_server_extra_args]\n\"oidc-issuer-url\" = \"https://login.example.com\"\n\
                audit-log-maxage = \"30\"\nprofiling = \"true\"\n\n[seed]";
    let dir = tempfile::tempdir().unwrap();
    for (example_name, api_server, launcher) in [
        (
            "cluster.toml",
            "[{ name: audit-log-maxage, value: \"30\" },
              { name: oidc-issuer-url, value: \"https://login.example.com\" },
              { name: profiling, value: \"true\" }]",
            "[{ name: profiling, value: \"false\" }]",
        ),
        (
            "cluster-v1.30.toml",
            "{ audit-log-maxage: \"30\", oidc-issuer-url: \"https://login.example.com\",
               profiling: \"true\" }",
            "{ profiling: \"false\" }",
        ),
    ] {
        let text = std::fs::read_to_string(repo().join("examples").join(example_name)).unwrap();
        let spec = ClusterSpec::parse(example_name, &text.replace("[seed]", args))
            .unwrap()
            .spec;
        let (_, init) = render_example(&spec).remove(0);
        let path = dir.path().join(example_name);
        std::fs::write(&path, &init).unwrap();
        let line = format!("OK {} ClusterConfiguration", path.display());
        let report = validate(&path);
        assert!(report.lines().any(|l| l == line), "{report}");
        let cluster: serde_yaml::Value = serde_yaml::Deserializer::from_str(&init)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .find(|d: &serde_yaml::Value| d["kind"] == "ClusterConfiguration")
            .unwrap();
        let yaml = |text: &str| serde_yaml::from_str::<serde_yaml::Value>(text).unwrap();
        assert_eq!(
            cluster["apiServer"]["extraArgs"],
            yaml(api_server),
            "{example_name}"
        );
        for component in ["controllerManager", "scheduler"] {
            assert_eq!(
                cluster[component]["extraArgs"],
                yaml(launcher),
                "{example_name}"
            );
        }
    }
}
