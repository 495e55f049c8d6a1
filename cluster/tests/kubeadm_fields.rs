//! The fields of the rendered kubeadm configs that a working cluster depends on.

use std::net::IpAddr;

use cluster::kubeadm::{
    CRI_SOCKET, NodeConfig, pause_image, render_init, render_join_control_plane,
    render_kubelet_config,
};
use cluster::spec::{ClusterSpec, Hostname};
use serde_yaml::Value;
use testkit::fixtures::ClusterFile;

fn spec(version: &str, schedulable: bool) -> ClusterSpec {
    let text = ClusterFile {
        name: "t".into(),
        kubernetes_version: version.into(),
        control_plane_endpoint: "cp.lab.internal:6443".into(),
        service_subnet: "10.112.0.0/16".into(),
        dns_domain: "lab.local".into(),
        schedulable_masters: schedulable,
        ..ClusterFile::demo()
    }
    .render();
    ClusterSpec::parse("t.toml", &text).unwrap().spec
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

use serde::Deserialize;

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn render(version: &str, schedulable: bool, join: bool) -> Vec<Value> {
    let spec = spec(version, schedulable);
    let name: Hostname = "t-m2".parse().unwrap();
    let node = NodeConfig {
        spec: &spec,
        node_name: &name,
        advertise_address: "10.77.0.12".parse::<IpAddr>().unwrap(),
        etcd_endpoints: vec![
            "https://10.77.0.11:2379".into(),
            "https://10.77.0.12:2379".into(),
            "https://10.77.0.13:2379".into(),
        ],
    };
    docs(&if join {
        render_join_control_plane(&node)
    } else {
        render_init(&node)
    })
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

#[test]
fn init_has_external_etcd_pinned_version_and_the_seed_registry() {
    for version in ["v1.30.2", "v1.33.4"] {
        let d = render(version, true, false);
        let kinds: Vec<&str> = d.iter().map(|d| s(&d["kind"])).collect();
        assert_eq!(
            kinds,
            [
                "InitConfiguration",
                "ClusterConfiguration",
                "KubeletConfiguration",
                "KubeProxyConfiguration"
            ]
        );
        let c = kind(&d, "ClusterConfiguration");
        let ext = &c["etcd"]["external"];
        let endpoints: Vec<&str> = ext["endpoints"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(s)
            .collect();
        assert_eq!(
            endpoints,
            [
                "https://10.77.0.11:2379",
                "https://10.77.0.12:2379",
                "https://10.77.0.13:2379"
            ]
        );
        assert_eq!(s(&ext["caFile"]), "/etc/kubernetes/pki/etcd/ca.crt");
        assert_eq!(
            s(&ext["certFile"]),
            "/etc/kubernetes/pki/apiserver-etcd-client.crt"
        );
        assert_eq!(
            s(&ext["keyFile"]),
            "/etc/kubernetes/pki/apiserver-etcd-client.key"
        );
        assert!(c["etcd"].get("local").is_none());
        assert_eq!(s(&c["kubernetesVersion"]), version);
        assert_eq!(s(&c["imageRepository"]), "10.77.0.1:8443");
        assert_eq!(s(&c["dns"]["imageRepository"]), "10.77.0.1:8443/coredns");
        assert_eq!(s(&c["controlPlaneEndpoint"]), "cp.lab.internal:6443");
        assert_eq!(s(&c["networking"]["serviceSubnet"]), "10.112.0.0/16");
        assert_eq!(s(&c["networking"]["dnsDomain"]), "lab.local");
        let sans: Vec<&str> = c["apiServer"]["certSANs"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(s)
            .collect();
        assert_eq!(sans, ["cp.lab.internal", "10.77.0.12"]);
        let init = kind(&d, "InitConfiguration");
        assert_eq!(s(&init["nodeRegistration"]["criSocket"]), CRI_SOCKET);
        assert_eq!(
            s(&init["localAPIEndpoint"]["advertiseAddress"]),
            "10.77.0.12"
        );
    }
}

#[test]
fn taints_are_an_empty_list_only_when_masters_are_schedulable() {
    for join in [false, true] {
        let open = render("v1.33.4", true, join);
        let reg = &open[0]["nodeRegistration"];
        assert_eq!(reg["taints"], Value::Sequence(vec![]), "join={join}");
        let closed = render("v1.33.4", false, join);
        assert!(
            closed[0]["nodeRegistration"].get("taints").is_none(),
            "join={join}"
        );
    }
}

#[test]
fn extra_args_are_name_value_lists_in_v1beta4_and_maps_in_v1beta3() {
    let v4 = render("v1.31.0", true, false);
    assert_eq!(s(&v4[0]["apiVersion"]), "kubeadm.k8s.io/v1beta4");
    let args = &kind(&v4, "ClusterConfiguration")["apiServer"]["extraArgs"];
    assert_eq!(args[0]["name"], "profiling");
    assert_eq!(args[0]["value"], "false");
    let kubelet = &v4[0]["nodeRegistration"]["kubeletExtraArgs"];
    assert_eq!(kubelet[0]["name"], "node-ip");
    assert_eq!(kubelet[0]["value"], "10.77.0.12");
    assert_eq!(
        s(&kind(&v4, "ClusterConfiguration")["encryptionAlgorithm"]),
        "ECDSA-P256"
    );
    assert!(v4[0]["timeouts"]["controlPlaneComponentHealthCheck"].is_string());

    let v3 = render("v1.30.0", true, false);
    assert_eq!(s(&v3[0]["apiVersion"]), "kubeadm.k8s.io/v1beta3");
    let args = &kind(&v3, "ClusterConfiguration")["apiServer"]["extraArgs"];
    assert_eq!(args["profiling"], "false");
    assert_eq!(
        v3[0]["nodeRegistration"]["kubeletExtraArgs"]["node-ip"],
        "10.77.0.12"
    );
    assert!(
        kind(&v3, "ClusterConfiguration")
            .get("encryptionAlgorithm")
            .is_none()
    );
    assert!(v3[0].get("timeouts").is_none());
}

#[test]
fn join_holds_only_a_join_configuration_with_file_discovery() {
    for (version, api) in [("v1.29.1", "v1beta3"), ("v1.34.0", "v1beta4")] {
        let d = render(version, true, true);
        assert_eq!(d.len(), 1);
        let j = &d[0];
        assert_eq!(s(&j["apiVersion"]), format!("kubeadm.k8s.io/{api}"));
        assert_eq!(s(&j["kind"]), "JoinConfiguration");
        assert_eq!(
            s(&j["discovery"]["file"]["kubeConfigPath"]),
            "/etc/kubernetes/discovery.conf"
        );
        assert!(j["discovery"].get("bootstrapToken").is_none());
        assert_eq!(
            s(&j["controlPlane"]["localAPIEndpoint"]["advertiseAddress"]),
            "10.77.0.12"
        );
        assert_eq!(j["controlPlane"]["localAPIEndpoint"]["bindPort"], 6443);
        assert!(j["controlPlane"].get("certificateKey").is_none());
        assert_eq!(s(&j["nodeRegistration"]["name"]), "t-m2");
    }
}

#[test]
fn kubelet_config_points_at_cluster_dns_and_the_cluster_ca() {
    let k = &docs(&render_kubelet_config(&spec("v1.33.4", true)))[0];
    assert_eq!(s(&k["kind"]), "KubeletConfiguration");
    assert_eq!(s(&k["cgroupDriver"]), "systemd");
    assert_eq!(k["clusterDNS"][0], "10.112.0.10");
    assert_eq!(s(&k["clusterDomain"]), "lab.local");
    assert_eq!(
        s(&k["authentication"]["x509"]["clientCAFile"]),
        "/etc/kubernetes/pki/ca.crt"
    );
    assert_eq!(k["authentication"]["anonymous"]["enabled"], false);
    assert_eq!(k["rotateCertificates"], false);
    assert_eq!(s(&k["containerRuntimeEndpoint"]), CRI_SOCKET);
    // Before 1.27 the kubelet has no such field and takes the flag instead.
    let old = &docs(&render_kubelet_config(&spec("v1.26.3", true)))[0];
    assert!(old.get("containerRuntimeEndpoint").is_none());
}

#[test]
fn pause_image_changes_with_the_minor() {
    let reg = "10.77.0.1:8443".parse().unwrap();
    assert_eq!(
        pause_image(&"v1.30.1".parse().unwrap(), &reg),
        "10.77.0.1:8443/pause:3.9"
    );
    assert_eq!(
        pause_image(&"v1.33.4".parse().unwrap(), &reg),
        "10.77.0.1:8443/pause:3.10"
    );
}
