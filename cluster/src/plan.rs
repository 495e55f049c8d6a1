//! A host's whole plan: every file it must write for its role, decided from the spec, the CA set
//! and what the host sent. Pure: keys are made here only for certificates the host sent no CSR
//! for, and the time is passed in.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::api::{self, EtcdInstructions, FileSource, InstallAction, PlanFile, Role, cert_names};
use crate::etcd::{self, ClusterState, Member, MemberConfig};
use crate::kubeadm;
use crate::pki::{
    CaKind, CaSet, CertProfile, ClientCredential, Convention, Kubeconfig, KubeconfigKind, PKI_DIR,
    PkiError, SubjectKey,
};
use crate::spec::{ClusterSpec, Hostname};
use crate::vip;

/// kubeadm's config file on masters.
pub const KUBEADM_CONFIG_PATH: &str = "/etc/kubernetes/kubeadm.yaml";
/// The kubelet's config file on every host.
pub const KUBELET_CONFIG_PATH: &str = kubeadm::KUBELET_CONFIG_PATH;
/// The port every API server binds on its own address (kubeadm's `bindPort`).
pub const API_BIND_PORT: u16 = kubeadm::API_SERVER_PORT;

const PUBLIC: u32 = 0o644;
const SECRET: u32 = 0o600;

/// Where a master's etcd member stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdPlacement {
    /// `initial-cluster`: every first member for a new cluster; the running members plus this
    /// one when joining. This host's member is among them, under its host name.
    pub members: Vec<Member>,
    pub state: ClusterState,
    /// Added through the API as a learner (promoted by the seed once caught up).
    pub learner: bool,
}

/// Everything [`plan_host`] decides from.
#[derive(Debug, Clone)]
pub struct HostInput<'a> {
    pub spec: &'a ClusterSpec,
    pub cas: &'a CaSet,
    pub host_id: &'a str,
    pub hostname: &'a Hostname,
    pub role: Role,
    /// The host's address on the cluster network; required for masters.
    pub ip: Option<IpAddr>,
    /// The master that runs `kubeadm init`.
    pub first_master: bool,
    /// Required for masters, ignored for workers.
    pub etcd: Option<EtcdPlacement>,
    /// PEM CSRs by [`cert_names`] name. CSRs for certificates the role does not use are ignored.
    pub csrs: &'a BTreeMap<String, String>,
    pub now: time::OffsetDateTime,
}

/// Why a plan cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("master {hostname} has no IP address; etcd and the API server need one")]
    MasterWithoutIp { hostname: String },
    #[error("master {hostname} has no etcd placement")]
    MasterWithoutEtcd { hostname: String },
    #[error("master {hostname} is not among the etcd members it is given")]
    NotAnEtcdMember { hostname: String },
    #[error(
        "a CSR was sent for {name:?}, which is not a certificate name (expected one of {expected})"
    )]
    UnknownCsr { name: String, expected: String },
    #[error("a worker cannot be the first master")]
    WorkerAsFirstMaster,
    #[error(transparent)]
    Pki(#[from] PkiError),
}

/// Decides a host's sealed plan.
pub fn plan_host(input: &HostInput<'_>) -> Result<api::Plan, PlanError> {
    check_input(input)?;
    let mut files = Vec::new();
    let etcd = match input.role {
        Role::Master => Some(master_files(input, &mut files)?),
        Role::Worker => {
            worker_files(input, &mut files)?;
            None
        }
    };
    files.push(text_file(
        KUBELET_CONFIG_PATH,
        PUBLIC,
        kubeadm::render_kubelet_config(input.spec),
    ));
    Ok(api::Plan {
        host_id: input.host_id.to_owned(),
        cluster: input.spec.name.to_string(),
        hostname: input.hostname.to_string(),
        role: input.role,
        ip: input.ip.map(|ip| ip.to_string()),
        kubernetes_version: input.spec.kubernetes_version.to_string(),
        files,
        etcd,
        install: install_action(input),
        vip: match input.role {
            Role::Master => vip::instructions(input.spec, input.ip),
            Role::Worker => None,
        },
        images: kubeadm::node_images(
            &input.spec.kubernetes_version,
            &input.spec.seed.registry,
            kubeadm::KubeadmAddons::from_skip_phases(&input.spec.skip_phases),
        ),
        digest: String::new(),
    }
    .seal())
}

fn check_input(input: &HostInput<'_>) -> Result<(), PlanError> {
    for name in input.csrs.keys() {
        if !cert_names::ALL.contains(&name.as_str()) {
            return Err(PlanError::UnknownCsr {
                name: name.clone(),
                expected: cert_names::ALL.join(", "),
            });
        }
    }
    let hostname = input.hostname.to_string();
    match input.role {
        Role::Worker if input.first_master => Err(PlanError::WorkerAsFirstMaster),
        Role::Worker => Ok(()),
        Role::Master => {
            let ip = input.ip.ok_or(PlanError::MasterWithoutIp {
                hostname: hostname.clone(),
            })?;
            let placement = input.etcd.as_ref().ok_or(PlanError::MasterWithoutEtcd {
                hostname: hostname.clone(),
            })?;
            let me = Member::new(hostname.clone(), ip);
            if !placement.members.contains(&me) {
                return Err(PlanError::NotAnEtcdMember { hostname });
            }
            Ok(())
        }
    }
}

fn convention(input: &HostInput<'_>) -> Convention {
    Convention::for_minor(input.spec.kubernetes_version.minor())
}

fn text_file(path: &str, mode: u32, text: String) -> PlanFile {
    PlanFile {
        path: path.to_owned(),
        mode,
        source: FileSource::Text { text },
    }
}

/// `https://<control_plane_endpoint>`.
pub fn api_server_url(spec: &ClusterSpec) -> String {
    format!("https://{}", spec.control_plane_endpoint)
}

/// The files of the CA set every master gets, under `/etc/kubernetes/pki` (ARCHITECTURE.md,
/// "What each role receives", says which kubeadm code or component needs each):
/// - `ca.crt`, `ca.key`: kubeadm makes `apiserver.crt` with them (`CreatePKIAssets`), and the
///   controller-manager signs CSRs with them (`--cluster-signing-key-file`, which kubeadm
///   leaves empty without `ca.key`: `UsingExternalCA`).
/// - `sa.key`, `sa.pub`: `SharedCertificateExists` requires them on a joining master; the API
///   server and the controller-manager sign service-account tokens with `sa.key`.
/// - `front-proxy-ca.crt`: `SharedCertificateExists`; `--requestheader-client-ca-file`.
/// - `etcd/ca.crt`: etcd's trusted CA and kubeadm's `etcd.external.caFile`.
///
/// Not `front-proxy-ca.key`: the seed signs `front-proxy-client`, and kubeadm, finding the CA
/// without its key, uses that certificate as given (`UsingExternalFrontProxyCA`). Not
/// `etcd/ca.key`: etcd is external to kubeadm and the seed signs every etcd certificate.
pub const MASTER_CA_FILES: [&str; 6] = [
    "ca.crt",
    "ca.key",
    "etcd/ca.crt",
    "front-proxy-ca.crt",
    "sa.key",
    "sa.pub",
];

fn ca_files(cas: &CaSet, files: &mut Vec<PlanFile>) {
    let mut all = cas.to_files();
    for name in MASTER_CA_FILES {
        let text = all
            .remove(name)
            .expect("the CA set has every file it lists");
        let mode = if name.ends_with(".key") {
            SECRET
        } else {
            PUBLIC
        };
        files.push(text_file(&format!("{PKI_DIR}/{name}"), mode, text));
    }
}

/// Issues `profile` for the host's CSR of that name, or for a fresh key; adds the certificate
/// and its key (a [`FileSource::HostKey`] when the host holds it) to `files`.
fn cert_files(
    input: &HostInput<'_>,
    profile: &CertProfile,
    files: &mut Vec<PlanFile>,
) -> Result<(), PlanError> {
    let ca = input.cas.get(profile.issuer);
    let subject = match input.csrs.get(&profile.name) {
        Some(csr) => SubjectKey::Csr(csr),
        None => SubjectKey::Fresh(input.cas.key_algorithm()),
    };
    let issued = ca.issue(profile, subject, input.now)?;
    files.push(text_file(&profile.cert_path(), PUBLIC, issued.cert_pem));
    let source = match issued.key {
        Some(key) => FileSource::Text {
            text: key.pem().to_owned(),
        },
        None => FileSource::HostKey {
            name: profile.name.clone(),
        },
    };
    files.push(PlanFile {
        path: profile.key_path(),
        mode: SECRET,
        source,
    });
    Ok(())
}

fn master_files(
    input: &HostInput<'_>,
    files: &mut Vec<PlanFile>,
) -> Result<EtcdInstructions, PlanError> {
    let convention = convention(input);
    let node = input.hostname.as_str();
    let ip = input.ip.expect("checked: a master has an IP");
    ca_files(input.cas, files);
    for name in cert_names::ALL {
        if name == cert_names::KUBELET_CLIENT {
            continue;
        }
        let profile = CertProfile::by_name(name, convention, node, Some(ip))
            .expect("every certificate name has a profile");
        cert_files(input, &profile, files)?;
    }
    let mut kinds = vec![
        KubeconfigKind::Admin,
        KubeconfigKind::ControllerManager,
        KubeconfigKind::Scheduler,
    ];
    // kubeadm makes super-admin.conf in `kubeadm init` only; a joining master's kubeconfig
    // phase (`CreateJoinControlPlaneKubeConfigFiles`) makes admin, controller-manager and
    // scheduler.
    if input.first_master && convention.has_super_admin() {
        kinds.push(KubeconfigKind::SuperAdmin);
    }
    for kind in kinds {
        let server = match kind {
            // kubeadm points these two at the API server on the same host.
            KubeconfigKind::ControllerManager | KubeconfigKind::Scheduler => local_api_url(ip),
            _ => api_server_url(input.spec),
        };
        files.push(embedded_kubeconfig(
            input.spec, input.cas, &kind, server, input.now,
        )?);
    }
    kubelet_files(input, files)?;
    files.push(text_file(
        KUBEADM_CONFIG_PATH,
        PUBLIC,
        kubeadm_config(input),
    ));
    etcd_files(input, ip, files)
}

fn local_api_url(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("https://{v4}:{API_BIND_PORT}"),
        IpAddr::V6(v6) => format!("https://[{v6}]:{API_BIND_PORT}"),
    }
}

fn worker_files(input: &HostInput<'_>, files: &mut Vec<PlanFile>) -> Result<(), PlanError> {
    files.push(text_file(
        &format!("{PKI_DIR}/ca.crt"),
        PUBLIC,
        input.cas.ca.cert_pem().to_owned(),
    ));
    kubelet_files(input, files)
}

/// The node's kubeconfig, `system:node:<name>`: the kubelet's certificate embedded when the seed
/// made its key, or in `/var/lib/kubelet/pki` when the host holds the key. A joining master gets
/// it as kubeadm's discovery file (`kubeadm join` refuses an existing `kubelet.conf` and
/// bootstraps the kubelet from the discovery file's credentials); other hosts as `kubelet.conf`.
fn kubelet_files(input: &HostInput<'_>, files: &mut Vec<PlanFile>) -> Result<(), PlanError> {
    let kind = KubeconfigKind::Kubelet {
        node: input.hostname.to_string(),
    };
    let path = if input.role == Role::Master && !input.first_master {
        kubeadm::DISCOVERY_KUBECONFIG.to_owned()
    } else {
        kind.path()
    };
    let profile = kind.profile(convention(input));
    let server = api_server_url(input.spec);
    if !input.csrs.contains_key(cert_names::KUBELET_CLIENT) {
        let config = embedded_config(input.spec, input.cas, &kind, server, input.now)?;
        files.push(text_file(&path, SECRET, config.render()));
        return Ok(());
    }
    cert_files(input, &profile, files)?;
    let config = Kubeconfig {
        cluster_name: input.spec.name.to_string(),
        server,
        ca_pem: input.cas.ca.cert_pem().to_owned(),
        user: profile.common_name.clone(),
        credential: ClientCredential::Files {
            cert_path: profile.cert_path(),
            key_path: profile.key_path(),
        },
    };
    files.push(text_file(&path, SECRET, config.render()));
    Ok(())
}

/// A kubeconfig with a fresh key embedded, as kubeadm writes them.
fn embedded_kubeconfig(
    spec: &ClusterSpec,
    cas: &CaSet,
    kind: &KubeconfigKind,
    server: String,
    now: time::OffsetDateTime,
) -> Result<PlanFile, PlanError> {
    let config = embedded_config(spec, cas, kind, server, now)?;
    Ok(text_file(&kind.path(), SECRET, config.render()))
}

fn embedded_config(
    spec: &ClusterSpec,
    cas: &CaSet,
    kind: &KubeconfigKind,
    server: String,
    now: time::OffsetDateTime,
) -> Result<Kubeconfig, PlanError> {
    let profile = kind.profile(Convention::for_minor(spec.kubernetes_version.minor()));
    let issued =
        cas.get(CaKind::Kubernetes)
            .issue(&profile, SubjectKey::Fresh(cas.key_algorithm()), now)?;
    let key = issued.key.expect("a fresh key is returned");
    Ok(Kubeconfig {
        cluster_name: spec.name.to_string(),
        server,
        ca_pem: cas.ca.cert_pem().to_owned(),
        user: profile.common_name,
        credential: ClientCredential::Embedded {
            cert_pem: issued.cert_pem,
            key_pem: key.pem().to_owned(),
        },
    })
}

/// The operator's `admin.conf` for the cluster (what `launcher-seed gen` puts in `cluster/`).
pub fn admin_kubeconfig(
    spec: &ClusterSpec,
    cas: &CaSet,
    now: time::OffsetDateTime,
) -> Result<String, PlanError> {
    let config = embedded_config(spec, cas, &KubeconfigKind::Admin, api_server_url(spec), now)?;
    Ok(config.render())
}

fn etcd_files(
    input: &HostInput<'_>,
    ip: IpAddr,
    files: &mut Vec<PlanFile>,
) -> Result<EtcdInstructions, PlanError> {
    let placement = input
        .etcd
        .as_ref()
        .expect("checked: a master has an etcd placement");
    let member = Member::new(input.hostname.to_string(), ip);
    let config = MemberConfig {
        member: member.clone(),
        initial_members: placement.members.clone(),
        state: placement.state,
        token: etcd_token(input.spec),
        timing: input.spec.etcd_timing,
    };
    files.push(text_file(etcd::CONFIG_PATH, PUBLIC, config.render()));
    Ok(EtcdInstructions {
        member_name: member.name,
        initial_cluster_state: placement.state.as_str().to_owned(),
        learner: placement.learner,
        config_path: etcd::CONFIG_PATH.to_owned(),
        client_urls: etcd::client_urls(&placement.members),
    })
}

/// `initial-cluster-token` of a cluster's etcd.
pub fn etcd_token(spec: &ClusterSpec) -> String {
    format!("launcher-{}", spec.name)
}

fn install_action(input: &HostInput<'_>) -> InstallAction {
    match input.role {
        Role::Master if input.first_master => InstallAction::Init {
            config_path: KUBEADM_CONFIG_PATH.to_owned(),
        },
        Role::Master => InstallAction::JoinControlPlane {
            config_path: KUBEADM_CONFIG_PATH.to_owned(),
        },
        Role::Worker => InstallAction::Worker {
            kubelet_config_path: KUBELET_CONFIG_PATH.to_owned(),
            kubeconfig_path: KubeconfigKind::Kubelet {
                node: String::new(),
            }
            .path(),
        },
    }
}

/// `kubeadm.yaml`: InitConfiguration for the first master, JoinConfiguration for the others.
fn kubeadm_config(input: &HostInput<'_>) -> String {
    let placement = input
        .etcd
        .as_ref()
        .expect("checked: a master has an etcd placement");
    let node = kubeadm::NodeConfig {
        spec: input.spec,
        node_name: input.hostname,
        advertise_address: input.ip.expect("checked: a master has an IP"),
        etcd_endpoints: etcd::client_urls(&placement.members),
    };
    if input.first_master {
        kubeadm::render_init(&node)
    } else {
        kubeadm::render_join_control_plane(&node)
    }
}
