//! The shipped examples parse, and what an operator relies on from a good spec holds.

use cluster::api::Role;
use cluster::spec::{ClusterSpec, KeyAlgorithm, KubeadmApi, MacAddr, RoleSpec};

fn example(name: &str) -> ClusterSpec {
    let path = format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let parsed = ClusterSpec::parse(&path, &text).unwrap();
    assert_eq!(
        parsed.warnings,
        Vec::<String>::new(),
        "{name} parses without warnings"
    );
    parsed.spec
}

#[test]
fn the_v1_33_example_has_three_masters_and_two_workers() {
    let spec = example("cluster.toml");
    assert_eq!(spec.kubernetes_version.to_string(), "v1.33.4");
    assert_eq!(spec.kubernetes_version.kubeadm_api(), KubeadmApi::V1Beta4);
    assert_eq!(spec.key_algorithm, KeyAlgorithm::EcdsaP256);
    assert!(spec.schedulable_masters);
    assert_eq!(spec.seed.url.to_string(), "https://10.77.0.1:8443");
    assert_eq!(spec.seed.registry.to_string(), "10.77.0.1:8443");
    assert_eq!(spec.first_service_ip().to_string(), "10.96.0.1");
    assert_eq!(spec.cluster_dns_ip().to_string(), "10.96.0.10");
    let plan: Vec<(String, Role, String)> = spec
        .plan_inventory()
        .iter()
        .map(|p| (p.host.mac.to_string(), p.role, p.hostname.to_string()))
        .collect();
    let expected = [
        ("52:54:00:00:00:01", Role::Master, "demo-m1"),
        ("52:54:00:00:00:02", Role::Master, "demo-m2"),
        ("52:54:00:00:00:03", Role::Master, "demo-m3"),
        ("52:54:00:00:00:04", Role::Worker, "demo-w1"),
        ("52:54:00:00:00:05", Role::Worker, "demo-w2"),
    ];
    let expected: Vec<(String, Role, String)> = expected
        .iter()
        .map(|(m, r, h)| (m.to_string(), *r, h.to_string()))
        .collect();
    assert_eq!(plan, expected);
}

#[test]
fn the_v1_30_example_fills_master_seats_in_order_and_keeps_given_names() {
    let spec = example("cluster-v1.30.toml");
    assert_eq!(spec.kubernetes_version.kubeadm_api(), KubeadmApi::V1Beta3);
    assert_eq!(spec.key_algorithm, KeyAlgorithm::Rsa2048);
    assert!(!spec.schedulable_masters);
    assert_eq!(spec.hosts[0].role, RoleSpec::Auto);
    let names: Vec<(Role, String)> = spec
        .plan_inventory()
        .iter()
        .map(|p| (p.role, p.hostname.to_string()))
        .collect();
    let expected = [
        (Role::Master, "legacy-m1"),
        (Role::Master, "legacy-m2"),
        (Role::Master, "legacy-m3"),
        (Role::Worker, "gpu-1"),
        (Role::Worker, "legacy-w2"),
    ];
    let expected: Vec<(Role, String)> = expected.iter().map(|(r, h)| (*r, h.to_string())).collect();
    assert_eq!(names, expected);
    let last = &spec.hosts[4];
    assert_eq!(
        last.uuid.as_ref().unwrap().as_str(),
        "4c4c4544-0042-3510-8050-b4c04f4b4d32"
    );
    assert_eq!(last.serial.as_ref().unwrap().as_str(), "SN-0005");
}

const MINIMAL: &str = r#"
[cluster]
name = "two"
kubernetes_version = "v1.22.0"
control_plane_endpoint = "cp.example.internal:6443"
pod_subnet = "10.244.0.0/16"
masters = 2

[seed]
url = "https://seed.example.internal:8443"
registry = "seed.example.internal:8443"

[[hosts]]
mac = "52-54-00-AB-CD-EF"
"#;

#[test]
fn defaults_apply_and_macs_are_normalized() {
    let parsed = ClusterSpec::parse("min.toml", MINIMAL).unwrap();
    let spec = parsed.spec;
    assert_eq!(spec.service_subnet.to_string(), "10.96.0.0/12");
    assert_eq!(spec.dns_domain.to_string(), "cluster.local");
    assert_eq!(spec.key_algorithm, KeyAlgorithm::EcdsaP256);
    assert!(!spec.schedulable_masters);
    assert_eq!(spec.hosts[0].mac.to_string(), "52:54:00:ab:cd:ef");
    assert_eq!(spec.hosts[0].mac.hyphenated(), "52-54-00-ab-cd-ef");
    let mac: MacAddr = "52:54:00:ab:cd:ef".parse().unwrap();
    assert!(spec.host_by_mac(&mac).is_some());
    assert_eq!(
        spec.default_hostname(Role::Worker, 12).to_string(),
        "two-w12"
    );
}

#[test]
fn an_even_master_count_is_accepted_with_a_warning_that_says_why() {
    let parsed = ClusterSpec::parse("min.toml", MINIMAL).unwrap();
    assert_eq!(parsed.spec.masters, 2);
    assert_eq!(
        parsed.warnings,
        [
            "min.toml:7:11: field `cluster.masters`: 2 masters run 2 etcd members, which tolerate no failure, no more than 1 would; 3 tolerate 1 (n members tolerate (n-1)/2 failures), so an odd count is better",
            "min.toml:7:11: field `cluster.masters`: 2 masters wanted but only 1 inventory host(s) can be one (role \"master\" or \"auto\"); the others must enroll by token or approval",
        ]
    );
    let four =
        ClusterSpec::parse("m.toml", &MINIMAL.replace("masters = 2", "masters = 4")).unwrap();
    assert!(four.warnings[0].contains(
        "4 masters run 4 etcd members, which tolerate 1 failure(s), no more than 3 would; 5 tolerate 2"
    ));
}

#[test]
fn an_endpoint_on_one_of_several_masters_is_warned_about() {
    let text = MINIMAL
        .replace("cp.example.internal:6443", "10.77.0.11:6443")
        .replace("masters = 2", "masters = 1")
        .replace(
            "mac = \"52-54-00-AB-CD-EF\"",
            "mac = \"52-54-00-AB-CD-EF\"\nip = \"10.77.0.11\"",
        );
    let single = ClusterSpec::parse("m.toml", &text).unwrap();
    assert_eq!(
        single.warnings,
        Vec::<String>::new(),
        "one master: the endpoint is that master"
    );
    let three = ClusterSpec::parse("m.toml", &text.replace("masters = 1", "masters = 3")).unwrap();
    assert_eq!(
        three.warnings.last().unwrap(),
        "m.toml:5:26: field `cluster.control_plane_endpoint`: 10.77.0.11 is the address of hosts[0]: with 3 masters the API is reachable only while that host is up; point it at a load balancer or virtual IP"
    );
}

#[test]
fn api_server_extra_args_are_kept_by_name_and_written_back_in_the_file_s_shape() {
    let long_name = "a".repeat(64);
    let args = format!(
        "\n[cluster.api_server_extra_args]\n\"oidc-issuer-url\" = \"https://login.example.com\"\n\
         audit-log-maxage = \"30\"\nprofiling = \"true\"\n{long_name} = \"{}\"\n",
        "x".repeat(1024)
    );
    let text = MINIMAL.replace("\n[seed]", &format!("{args}\n[seed]"));
    let spec = ClusterSpec::parse("args.toml", &text).unwrap().spec;
    let names: Vec<&str> = spec
        .api_server_extra_args
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        names,
        [
            long_name.as_str(),
            "audit-log-maxage",
            "oidc-issuer-url",
            "profiling"
        ]
    );
    assert_eq!(
        spec.api_server_extra_args
            .get(&"oidc-issuer-url".parse().unwrap())
            .unwrap()
            .as_str(),
        "https://login.example.com"
    );
    // As the cluster_spec fuzz target writes a spec back: [cluster] with its tables.
    let toml::Value::Table(mut cluster) = toml::Value::try_from(&spec).unwrap() else {
        unreachable!("a spec serializes to a table");
    };
    let mut file = toml::Table::new();
    for key in ["seed", "hosts"] {
        file.insert(key.into(), cluster.remove(key).unwrap());
    }
    file.insert("cluster".into(), toml::Value::Table(cluster));
    let again = toml::to_string(&file).unwrap();
    assert_eq!(ClusterSpec::parse("again.toml", &again).unwrap().spec, spec);
    let without = ClusterSpec::parse("min.toml", MINIMAL).unwrap().spec;
    assert!(without.api_server_extra_args.is_empty());
    assert!(
        !toml::to_string(&without)
            .unwrap()
            .contains("api_server_extra_args")
    );
}
