//! Host plans: masters get the CA material kubeadm needs, workers only what a worker needs.

use std::collections::BTreeMap;

use cluster::api::{FileSource, InstallAction, Plan, Role, cert_names};
use cluster::etcd::{ClusterState, Member};
use cluster::pki::{CaSet, KeyAlgorithm};
use cluster::plan::{EtcdPlacement, HostInput, PlanError, plan_host};
use cluster::spec::{ClusterSpec, Hostname};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use testkit::fixtures::{ClusterFile, host};

/// The demo cluster with four inventory hosts (…:01-…:04) of no fixed role.
fn spec(version: &str) -> ClusterSpec {
    let text = ClusterFile {
        kubernetes_version: version.into(),
        hosts: (1..=4).map(|n| host(n, None)).collect(),
        ..ClusterFile::demo()
    }
    .render();
    ClusterSpec::parse("test.toml", &text).unwrap().spec
}

fn now() -> time::OffsetDateTime {
    time::macros::datetime!(2026-03-01 12:00 UTC)
}

fn members() -> Vec<Member> {
    testkit::fixtures::demo_masters()
        .into_iter()
        .map(|(name, ip)| Member::new(name, ip))
        .collect()
}

struct Fixture {
    spec: ClusterSpec,
    cas: CaSet,
}

impl Fixture {
    /// The plan of a host that sent no CSRs.
    fn plan_without_csrs(&self, name: &str, role: Role, ip: &str, first: bool) -> Plan {
        self.plan(name, role, ip, first, &BTreeMap::new()).unwrap()
    }

    fn new(version: &str) -> Fixture {
        Fixture {
            spec: spec(version),
            cas: CaSet::generate(KeyAlgorithm::EcdsaP256, now()).unwrap(),
        }
    }

    fn plan(
        &self,
        name: &str,
        role: Role,
        ip: &str,
        first: bool,
        csrs: &BTreeMap<String, String>,
    ) -> Result<Plan, PlanError> {
        let hostname: Hostname = name.parse().unwrap();
        let input = HostInput {
            spec: &self.spec,
            cas: &self.cas,
            host_id: "h-1",
            hostname: &hostname,
            role,
            ip: Some(ip.parse().unwrap()),
            first_master: first,
            etcd: (role == Role::Master).then(|| EtcdPlacement {
                members: members(),
                state: ClusterState::New,
                learner: false,
            }),
            csrs,
            now: now(),
        };
        plan_host(&input)
    }
}

fn paths(plan: &Plan) -> Vec<&str> {
    let mut all: Vec<&str> = plan.files.iter().map(|f| f.path.as_str()).collect();
    all.sort();
    all
}

fn text_of<'a>(plan: &'a Plan, path: &str) -> &'a str {
    let file = plan
        .files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("no {path}"));
    match &file.source {
        FileSource::Text { text } => text,
        FileSource::HostKey { name } => panic!("{path} is the host's key {name}"),
    }
}

/// The CA set's files a master gets; never `etcd/ca.key` nor `front-proxy-ca.key`.
const MASTER_CA_MATERIAL: [&str; 6] = [
    "/etc/kubernetes/pki/ca.crt",
    "/etc/kubernetes/pki/ca.key",
    "/etc/kubernetes/pki/etcd/ca.crt",
    "/etc/kubernetes/pki/front-proxy-ca.crt",
    "/etc/kubernetes/pki/sa.key",
    "/etc/kubernetes/pki/sa.pub",
];

/// Every private key a master gets when it sent no CSR: the cluster CA's and the
/// service-account key, then the seed-made keys of its leaf certificates. Sorted.
const MASTER_KEYS: [&str; 8] = [
    "/etc/kubernetes/pki/apiserver-etcd-client.key",
    "/etc/kubernetes/pki/apiserver-kubelet-client.key",
    "/etc/kubernetes/pki/ca.key",
    "/etc/kubernetes/pki/etcd/healthcheck-client.key",
    "/etc/kubernetes/pki/etcd/peer.key",
    "/etc/kubernetes/pki/etcd/server.key",
    "/etc/kubernetes/pki/front-proxy-client.key",
    "/etc/kubernetes/pki/sa.key",
];

/// One row of the role table: a host, and exactly the `*.key` and `*.conf` files it gets.
struct Row {
    version: &'static str,
    host: &'static str,
    ip: &'static str,
    role: Role,
    first: bool,
    keys: &'static [&'static str],
    confs: &'static [&'static str],
}

/// The plan's paths ending in `suffix`, sorted.
fn paths_ending<'a>(plan: &'a Plan, suffix: &str) -> Vec<&'a str> {
    let mut found: Vec<&str> = plan
        .files
        .iter()
        .map(|f| f.path.as_str())
        .filter(|p| p.ends_with(suffix))
        .collect();
    found.sort();
    found
}

#[test]
fn each_role_gets_exactly_its_keys_and_kubeconfigs() {
    let table = [
        Row {
            version: "v1.33.4",
            host: "demo-m1",
            ip: "10.77.0.11",
            role: Role::Master,
            first: true,
            keys: &MASTER_KEYS,
            confs: &[
                "/etc/kubernetes/admin.conf",
                "/etc/kubernetes/controller-manager.conf",
                "/etc/kubernetes/kubelet.conf",
                "/etc/kubernetes/scheduler.conf",
                "/etc/kubernetes/super-admin.conf",
            ],
        },
        Row {
            version: "v1.33.4",
            host: "demo-m2",
            ip: "10.77.0.12",
            role: Role::Master,
            first: false,
            keys: &MASTER_KEYS,
            confs: &[
                "/etc/kubernetes/admin.conf",
                "/etc/kubernetes/controller-manager.conf",
                "/etc/kubernetes/discovery.conf",
                "/etc/kubernetes/scheduler.conf",
            ],
        },
        Row {
            version: "v1.28.15",
            host: "demo-m1",
            ip: "10.77.0.11",
            role: Role::Master,
            first: true,
            keys: &MASTER_KEYS,
            confs: &[
                "/etc/kubernetes/admin.conf",
                "/etc/kubernetes/controller-manager.conf",
                "/etc/kubernetes/kubelet.conf",
                "/etc/kubernetes/scheduler.conf",
            ],
        },
        Row {
            version: "v1.28.15",
            host: "demo-m2",
            ip: "10.77.0.12",
            role: Role::Master,
            first: false,
            keys: &MASTER_KEYS,
            confs: &[
                "/etc/kubernetes/admin.conf",
                "/etc/kubernetes/controller-manager.conf",
                "/etc/kubernetes/discovery.conf",
                "/etc/kubernetes/scheduler.conf",
            ],
        },
        Row {
            version: "v1.33.4",
            host: "demo-w1",
            ip: "10.77.0.14",
            role: Role::Worker,
            first: false,
            keys: &[],
            confs: &["/etc/kubernetes/kubelet.conf"],
        },
    ];
    for row in table {
        let fx = Fixture::new(row.version);
        let plan = fx.plan_without_csrs(row.host, row.role, row.ip, row.first);
        let name = format!("{} {} first={}", row.version, row.host, row.first);
        assert_eq!(paths_ending(&plan, ".key"), row.keys, "{name}");
        assert_eq!(paths_ending(&plan, ".conf"), row.confs, "{name}");
    }
}

#[test]
fn the_first_master_gets_everything_kubeadm_init_needs() {
    let fx = Fixture::new("v1.33.4");
    let plan = fx.plan_without_csrs("demo-m1", Role::Master, "10.77.0.11", true);
    assert!(plan.verify());
    let all = paths(&plan);
    for path in MASTER_CA_MATERIAL {
        assert!(all.contains(&path), "missing {path}");
    }
    for stem in [
        "apiserver-kubelet-client",
        "front-proxy-client",
        "etcd/server",
        "etcd/peer",
        "etcd/healthcheck-client",
        "apiserver-etcd-client",
    ] {
        assert!(
            all.contains(&format!("/etc/kubernetes/pki/{stem}.crt").as_str()),
            "{stem}"
        );
        assert!(
            all.contains(&format!("/etc/kubernetes/pki/{stem}.key").as_str()),
            "{stem}"
        );
    }
    for conf in [
        "admin",
        "super-admin",
        "controller-manager",
        "scheduler",
        "kubelet",
    ] {
        assert!(
            all.contains(&format!("/etc/kubernetes/{conf}.conf").as_str()),
            "{conf}"
        );
    }
    for path in [
        "/etc/kubernetes/kubeadm.yaml",
        "/var/lib/kubelet/config.yaml",
        "/etc/etcd/etcd.yaml",
    ] {
        assert!(all.contains(&path), "missing {path}");
    }
    assert!(
        !all.contains(&"/etc/kubernetes/pki/apiserver.crt"),
        "kubeadm makes apiserver.crt"
    );
    for file in &plan.files {
        let secret = file.path.ends_with(".key") || file.path.ends_with(".conf");
        assert_eq!(
            file.mode,
            if secret { 0o600 } else { 0o644 },
            "{}",
            file.path
        );
    }
    assert_eq!(
        text_of(&plan, "/etc/kubernetes/pki/ca.key"),
        fx.cas.ca.key().pem()
    );
    assert!(matches!(plan.install, InstallAction::Init { .. }));
    let kubeadm = text_of(&plan, "/etc/kubernetes/kubeadm.yaml");
    assert!(kubeadm.contains("kind: InitConfiguration"), "{kubeadm}");
    for url in [
        "https://10.77.0.11:2379",
        "https://10.77.0.12:2379",
        "https://10.77.0.13:2379",
    ] {
        assert!(
            kubeadm.contains(url),
            "etcd endpoint {url} missing: {kubeadm}"
        );
    }
    let etcd = plan.etcd.as_ref().unwrap();
    assert_eq!(etcd.member_name, "demo-m1");
    assert_eq!(etcd.initial_cluster_state, "new");
    assert_eq!(etcd.client_urls.len(), 3);
}

#[test]
fn other_masters_join_without_a_super_admin() {
    let fx = Fixture::new("v1.33.4");
    let plan = fx.plan_without_csrs("demo-m2", Role::Master, "10.77.0.12", false);
    let all = paths(&plan);
    assert!(!all.contains(&"/etc/kubernetes/super-admin.conf"));
    assert!(all.contains(&"/etc/kubernetes/admin.conf"));
    // kubeadm join refuses an existing kubelet.conf: the node's credential is the discovery file.
    assert!(!all.contains(&"/etc/kubernetes/kubelet.conf"));
    let discovery = text_of(&plan, "/etc/kubernetes/discovery.conf");
    assert!(
        discovery.contains("name: system:node:demo-m2"),
        "{discovery}"
    );
    let kubeadm = text_of(&plan, "/etc/kubernetes/kubeadm.yaml");
    assert!(kubeadm.contains("kind: JoinConfiguration"), "{kubeadm}");
    for path in MASTER_CA_MATERIAL {
        assert!(all.contains(&path), "missing {path}");
    }
    for (name, kind) in [
        ("etcd/ca.key", "etcd"),
        ("front-proxy-ca.key", "front-proxy"),
    ] {
        assert!(
            !all.contains(&format!("/etc/kubernetes/pki/{name}").as_str()),
            "a master got the {kind} CA key"
        );
    }
    assert!(matches!(
        plan.install,
        InstallAction::JoinControlPlane { .. }
    ));
    let etcd_yaml = text_of(&plan, "/etc/etcd/etcd.yaml");
    assert!(etcd_yaml.contains("name: demo-m2"), "{etcd_yaml}");
}

#[test]
fn before_1_29_there_is_no_super_admin() {
    let fx = Fixture::new("v1.28.15");
    let plan = fx.plan_without_csrs("demo-m1", Role::Master, "10.77.0.11", true);
    assert!(!paths(&plan).contains(&"/etc/kubernetes/super-admin.conf"));
}

#[test]
fn a_worker_gets_no_ca_key_and_no_admin_credential() {
    let fx = Fixture::new("v1.33.4");
    let plan = fx.plan_without_csrs("demo-w1", Role::Worker, "10.77.0.14", false);
    assert_eq!(
        paths(&plan),
        [
            "/etc/kubernetes/kubelet.conf",
            "/etc/kubernetes/pki/ca.crt",
            "/var/lib/kubelet/config.yaml"
        ]
    );
    assert!(plan.etcd.is_none());
    assert!(matches!(plan.install, InstallAction::Worker { .. }));
    let secrets: Vec<String> = fx
        .cas
        .to_files()
        .into_iter()
        .filter(|(n, _)| n.ends_with(".key"))
        .map(|(_, t)| t)
        .collect();
    let kubelet_conf = text_of(&plan, "/etc/kubernetes/kubelet.conf");
    assert!(
        kubelet_conf.contains("name: system:node:demo-w1"),
        "{kubelet_conf}"
    );
    for file in &plan.files {
        let FileSource::Text { text } = &file.source else {
            continue;
        };
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{} holds a CA or SA key",
                file.path
            );
            let encoded = base64_of(secret);
            assert!(
                !text.contains(&encoded),
                "{} holds an encoded CA or SA key",
                file.path
            );
        }
    }
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn csr(key: &KeyPair) -> String {
    CertificateParams::new(vec!["ignored.example".to_owned()])
        .unwrap()
        .serialize_request(key)
        .unwrap()
        .pem()
        .unwrap()
}

#[test]
fn keys_the_host_holds_stay_on_the_host() {
    let fx = Fixture::new("v1.33.4");
    let host_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let csrs: BTreeMap<String, String> = cert_names::ALL
        .iter()
        .map(|n| (n.to_string(), csr(&host_key)))
        .collect();
    let worker = fx
        .plan("demo-w1", Role::Worker, "10.77.0.14", false, &csrs)
        .unwrap();
    let key_file = worker
        .files
        .iter()
        .find(|f| f.path == "/var/lib/kubelet/pki/kubelet-client.key")
        .unwrap();
    assert_eq!(
        key_file.source,
        FileSource::HostKey {
            name: "kubelet-client".into()
        }
    );
    assert_eq!(key_file.mode, 0o600);
    let conf = text_of(&worker, "/etc/kubernetes/kubelet.conf");
    assert!(
        conf.contains("client-certificate: /var/lib/kubelet/pki/kubelet-client.crt"),
        "{conf}"
    );
    assert!(!conf.contains("client-key-data"), "{conf}");
    // A worker ignores the etcd CSRs it sent: it gets no etcd certificate.
    assert!(!paths(&worker).iter().any(|p| p.contains("etcd")));

    let master = fx
        .plan("demo-m1", Role::Master, "10.77.0.11", true, &csrs)
        .unwrap();
    for name in cert_names::ALL {
        let held = master
            .files
            .iter()
            .any(|f| f.source == FileSource::HostKey { name: name.into() });
        assert!(held, "{name} is not the host's key");
    }
}

#[test]
fn plans_that_cannot_be_made_say_why() {
    let fx = Fixture::new("v1.33.4");
    let none = BTreeMap::new();
    let err = fx
        .plan("demo-m9", Role::Master, "10.77.0.19", false, &none)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "master demo-m9 is not among the etcd members it is given"
    );

    let unknown: BTreeMap<String, String> = [("apiserver".to_owned(), "x".to_owned())].into();
    let err = fx
        .plan("demo-w1", Role::Worker, "10.77.0.14", false, &unknown)
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("a CSR was sent for \"apiserver\", which is not a certificate name"),
        "{err}"
    );

    let bad: BTreeMap<String, String> = [("kubelet-client".to_owned(), "junk".to_owned())].into();
    let err = fx
        .plan("demo-w1", Role::Worker, "10.77.0.14", false, &bad)
        .unwrap_err();
    assert!(
        matches!(err, PlanError::Pki(cluster::pki::PkiError::BadCsr { .. })),
        "{err}"
    );

    let hostname: Hostname = "demo-m1".parse().unwrap();
    let input = HostInput {
        spec: &fx.spec,
        cas: &fx.cas,
        host_id: "h",
        hostname: &hostname,
        role: Role::Master,
        ip: None,
        first_master: true,
        etcd: None,
        csrs: &none,
        now: now(),
    };
    assert_eq!(
        plan_host(&input).unwrap_err().to_string(),
        "master demo-m1 has no IP address; etcd and the API server need one"
    );
}

#[test]
fn a_master_joining_a_running_etcd_is_a_learner_of_an_existing_cluster() {
    let fx = Fixture::new("v1.33.4");
    let hostname: Hostname = "demo-m4".parse().unwrap();
    let mut members = members();
    members.push(Member::new("demo-m4", "10.77.0.16".parse().unwrap()));
    let none = BTreeMap::new();
    let input = HostInput {
        spec: &fx.spec,
        cas: &fx.cas,
        host_id: "h-4",
        hostname: &hostname,
        role: Role::Master,
        ip: Some("10.77.0.16".parse().unwrap()),
        first_master: false,
        etcd: Some(EtcdPlacement {
            members: members.clone(),
            state: ClusterState::Existing,
            learner: true,
        }),
        csrs: &none,
        now: now(),
    };
    let plan = plan_host(&input).unwrap();
    let etcd = plan.etcd.as_ref().unwrap();
    assert!(etcd.learner);
    assert_eq!(etcd.initial_cluster_state, "existing");
    assert_eq!(etcd.config_path, "/etc/etcd/etcd.yaml");
    assert_eq!(etcd.client_urls.last().unwrap(), "https://10.77.0.16:2379");
    let yaml = text_of(&plan, "/etc/etcd/etcd.yaml");
    assert!(yaml.contains("initial-cluster-state: existing"), "{yaml}");
    assert!(yaml.contains("demo-m4=https://10.77.0.16:2380"), "{yaml}");
    assert!(matches!(
        plan.install,
        InstallAction::JoinControlPlane { .. }
    ));
}

#[test]
fn masters_of_a_cluster_whose_endpoint_no_host_has_hold_the_vip_and_workers_do_not() {
    let f = Fixture::new("v1.33.4");
    let master = f.plan_without_csrs("demo-m2", Role::Master, "10.77.0.12", false);
    let vip = master
        .vip
        .expect("the demo's endpoint 10.77.0.10 is no host's");
    assert_eq!(vip.address.to_string(), "10.77.0.10");
    assert_eq!(vip.router_id, cluster::vip::router_id("demo"));
    assert_eq!(
        vip.priority,
        cluster::vip::priority("10.77.0.12".parse().unwrap())
    );
    let worker = f.plan_without_csrs("demo-w1", Role::Worker, "10.77.0.14", false);
    assert_eq!(worker.vip, None);
}
