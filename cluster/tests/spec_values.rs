//! The spec's newtypes: what each accepts, how it normalizes, what it refuses and why.

use cluster::spec::{
    ApiServerFlag, Cidr, ClusterName, Endpoint, FlagValue, Host, Hostname, KubeVersion, KubeadmApi,
    MacAddr, ProductUuid, RegistryHost, SeedUrl, Serial,
};

fn err<T: std::str::FromStr>(s: &str) -> String
where
    T::Err: std::fmt::Display,
{
    match s.parse::<T>() {
        Ok(_) => panic!("{s:?} was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn mac_addresses_are_lowercase_colon_form() {
    let mac: MacAddr = "52-54-00-AB-cd-EF".parse().unwrap();
    assert_eq!(mac.to_string(), "52:54:00:ab:cd:ef");
    assert_eq!(mac, "52:54:00:ab:cd:ef".parse().unwrap());
    assert_eq!(mac.octets(), [0x52, 0x54, 0, 0xab, 0xcd, 0xef]);
    assert_eq!(
        err::<MacAddr>("00:00:00:00:00:00"),
        "\"00:00:00:00:00:00\" is the all-zero address, not a network card's"
    );
    assert!("52:54:00:00:00:0g".parse::<MacAddr>().is_err());
    assert!("525400000001".parse::<MacAddr>().is_err());
    assert!("52:54:00:00:00:01:02".parse::<MacAddr>().is_err());
}

#[test]
fn hostnames_are_lowercase_rfc1123() {
    assert_eq!("node-1.lab".parse::<Hostname>().unwrap().short(), "node-1");
    assert_eq!(
        err::<Hostname>("-node"),
        "label \"-node\" starts or ends with '-'"
    );
    assert_eq!(err::<Hostname>(""), "the name is empty");
    let long = "a".repeat(64);
    assert_eq!(
        err::<Hostname>(&long),
        format!("label {long:?} is 64 characters; at most 63")
    );
    assert!("a".repeat(63).parse::<Hostname>().is_ok());
    assert!("node_1".parse::<Hostname>().is_err());
}

#[test]
fn cluster_names_leave_room_for_generated_host_names() {
    assert!("a".repeat(50).parse::<ClusterName>().is_ok());
    assert_eq!(
        err::<ClusterName>(&"a".repeat(51)),
        format!(
            "{:?} is 51 characters; at most 50, so host names made from it fit in 63",
            "a".repeat(51)
        )
    );
}

#[test]
fn endpoints_need_a_port_and_take_names_and_ipv6() {
    let e: Endpoint = "[fd00::10]:6443".parse().unwrap();
    assert_eq!(e.port(), 6443);
    assert_eq!(e.host().ip(), Some("fd00::10".parse().unwrap()));
    assert_eq!(e.to_string(), "[fd00::10]:6443");
    let n: Endpoint = "cp.lab:443".parse().unwrap();
    assert!(matches!(n.host(), Host::Name(h) if h.as_str() == "cp.lab"));
    assert_eq!(
        err::<Endpoint>("fd00::10"),
        "\"fd00::10\" has no port; expected host:port like 10.77.0.10:6443"
    );
    assert_eq!(
        err::<Endpoint>("10.0.0.1:0"),
        "\"10.0.0.1:0\" has port \"0\"; expected a number from 1 to 65535"
    );
    assert_eq!(
        err::<Endpoint>("10.0.0.300:6443"),
        "\"10.0.0.300\" is not a valid IPv4 address"
    );
}

#[test]
fn seed_urls_are_https_with_a_port() {
    let u: SeedUrl = "https://10.77.0.1:8443/".parse().unwrap();
    assert_eq!(u.to_string(), "https://10.77.0.1:8443");
    assert_eq!(u.join("/v1/enroll"), "https://10.77.0.1:8443/v1/enroll");
    assert_eq!(u.endpoint().port(), 8443);
    assert_eq!(
        err::<SeedUrl>("https://"),
        "\"https://\" has no host; expected https://HOST:PORT like https://10.77.0.1:8443"
    );
    assert!("https://user@seed:8443".parse::<SeedUrl>().is_err());
}

#[test]
fn registries_are_host_and_optional_port() {
    assert_eq!("seed.lab".parse::<RegistryHost>().unwrap().port(), None);
    assert_eq!(
        "10.77.0.1:8443".parse::<RegistryHost>().unwrap().port(),
        Some(8443)
    );
    assert!("10.77.0.1:8443/library".parse::<RegistryHost>().is_err());
}

#[test]
fn versions_pick_the_kubeadm_api() {
    let v: KubeVersion = "v1.30.14".parse().unwrap();
    assert_eq!((v.major(), v.minor(), v.patch()), (1, 30, 14));
    assert_eq!(v.kubeadm_api(), KubeadmApi::V1Beta3);
    assert_eq!(
        "v1.31.0".parse::<KubeVersion>().unwrap().kubeadm_api(),
        KubeadmApi::V1Beta4
    );
    assert_eq!(KubeadmApi::V1Beta4.api_version(), "kubeadm.k8s.io/v1beta4");
    assert!("v1.22.0".parse::<KubeVersion>().is_ok());
    for bad in [
        "v1.33",
        "v1.33.4-rc.1",
        "v2.1.0",
        "v1.033.0",
        "v1.33.x",
        "V1.33.4",
    ] {
        assert!(bad.parse::<KubeVersion>().is_err(), "{bad} was accepted");
    }
}

#[test]
fn cidrs_serialize_as_text() {
    let c: Cidr = "10.96.0.0/12".parse().unwrap();
    assert_eq!(serde_json::to_string(&c).unwrap(), "\"10.96.0.0/12\"");
    let back: Cidr = serde_json::from_str("\"10.96.0.0/12\"").unwrap();
    assert_eq!(back, c);
    assert!(serde_json::from_str::<Cidr>("\"10.96.0.1/12\"").is_err());
}

#[test]
fn uuids_are_lowercased_and_serials_are_printable() {
    let u: ProductUuid = "4C4C4544-0042-3510-8050-B4C04F4B4D32".parse().unwrap();
    assert_eq!(u.as_str(), "4c4c4544-0042-3510-8050-b4c04f4b4d32");
    assert!("4c4c4544-0042-3510-8050".parse::<ProductUuid>().is_err());
    assert!("SN 1".parse::<Serial>().is_err());
    assert!("SN-1".parse::<Serial>().is_ok());
}

#[test]
fn api_server_flags_are_any_but_those_launcher_sets() {
    // kubeadm's defaults and flags the seed has never heard of are the operator's to set.
    for name in [
        "oidc-issuer-url",
        "profiling",
        "enable-admission-plugins",
        "allow-privileged",
        "0-flag-of-a-future-version",
    ] {
        assert!(name.parse::<ApiServerFlag>().is_ok(), "{name} was refused");
    }
    for name in [
        "advertise-address",
        "secure-port",
        "authorization-mode",
        "etcd-servers",
        "etcd-cafile",
        "etcd-certfile",
        "etcd-keyfile",
        "tls-cert-file",
        "tls-private-key-file",
        "client-ca-file",
        "service-cluster-ip-range",
        "service-account-issuer",
        "service-account-key-file",
        "service-account-signing-key-file",
        "kubelet-client-certificate",
        "kubelet-client-key",
        "proxy-client-cert-file",
        "proxy-client-key-file",
        "requestheader-client-ca-file",
        "requestheader-allowed-names",
    ] {
        assert!(
            err::<ApiServerFlag>(name).starts_with(&format!("--{name} cannot be overridden: ")),
            "{name} was accepted"
        );
    }
    assert!("".parse::<FlagValue>().is_ok());
    assert!("x".repeat(1024).parse::<FlagValue>().is_ok());
    assert_eq!(
        err::<FlagValue>("a\tb"),
        "the value contains '\\t'; a flag's value has no control characters"
    );
}
