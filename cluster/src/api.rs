//! The wire types between the seed and firstboot, served under `/v1/`.
//!
//! Unknown fields, decided once:
//! - **Requests to the seed are strict** (`deny_unknown_fields`): the seed is the single point
//!   every host talks to, and a host speaking something the seed does not understand must be told
//!   so (`bad_request`) rather than be half-understood.
//! - **Responses to hosts are lenient** (unknown fields ignored): images are baked once and live
//!   for months, so a newer seed may add fields without breaking older firstboot agents. A change
//!   that an old agent must not ignore gets a new path version (`/v2/`).
//!
//! Every error from the seed is an [`ApiError`] with one of the stable codes in [`codes`].

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The path prefix of this version of the API.
pub const PREFIX: &str = "/v1";

/// Largest request body the seed accepts on any `/v1/` route.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// What identifies a physical machine, read by firstboot from sysfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HostIdentity {
    /// Every MAC address of the host, lowercase `aa:bb:cc:dd:ee:ff`.
    pub macs: Vec<String>,
    /// The MAC the host booted from, when known (PXE boot interface).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_mac: Option<String>,
    /// DMI product UUID (`/sys/class/dmi/id/product_uuid`), lowercase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_uuid: Option<String>,
    /// DMI product serial (`/sys/class/dmi/id/product_serial`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

/// `POST /v1/enroll`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub identity: HostIdentity,
    /// A one-time join token, from the kernel command line or the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// PEM certificate signing requests for keys the host made, by certificate name (see
    /// [`cert_names`]). The seed ignores the subject of a CSR: names come from its own decision.
    /// A certificate the host's role needs but sent no CSR for gets a key made by the seed.
    #[serde(default)]
    pub csrs: BTreeMap<String, String>,
    /// The Kubernetes release the host's image carries (its `firstboot.toml`); the seed refuses
    /// one that does not fit the host's role in the cluster (`version_mismatch`). Absent from
    /// images that do not say, which are not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<crate::version::KubeVersion>,
}

/// The certificate names a host may send CSRs for; each is also the file stem under
/// `/etc/kubernetes/pki` (or, for the kubelet, under `/var/lib/kubelet/pki`).
pub mod cert_names {
    pub const KUBELET_CLIENT: &str = "kubelet-client";
    pub const ETCD_SERVER: &str = "etcd/server";
    pub const ETCD_PEER: &str = "etcd/peer";
    pub const ETCD_HEALTHCHECK_CLIENT: &str = "etcd/healthcheck-client";
    pub const APISERVER_ETCD_CLIENT: &str = "apiserver-etcd-client";
    pub const APISERVER_KUBELET_CLIENT: &str = "apiserver-kubelet-client";
    pub const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

    /// Every name, in the order a host makes its keys.
    pub const ALL: [&str; 7] = [
        KUBELET_CLIENT,
        ETCD_SERVER,
        ETCD_PEER,
        ETCD_HEALTHCHECK_CLIENT,
        APISERVER_ETCD_CLIENT,
        APISERVER_KUBELET_CLIENT,
        FRONT_PROXY_CLIENT,
    ];
}

/// The answer to an enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum EnrollResponse {
    /// Not let in yet: the host is recorded and waits for an operator's approval.
    Pending {
        host_id: String,
        retry_after_secs: u32,
        message: String,
    },
    /// Not answered yet, and nothing recorded: the seed cannot let any host install now (its
    /// registry lacks images the cluster pulls). The host asks again after `retry_after_secs`.
    Waiting {
        retry_after_secs: u32,
        message: String,
        /// The image references the seed's registry lacks.
        missing_images: Vec<String>,
    },
    /// Let in: everything the host needs to become a node.
    Enrolled(Box<Plan>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Master,
    Worker,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Master => "master",
            Role::Worker => "worker",
        })
    }
}

/// A host's whole plan: who it is and every file it must write. Firstboot journals it on disk
/// and checks [`Plan::digest`] before using it, so a tampered or truncated copy is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub host_id: String,
    pub cluster: String,
    pub hostname: String,
    pub role: Role,
    /// The host's address on the cluster network, when the inventory names one.
    #[serde(default)]
    pub ip: Option<String>,
    pub kubernetes_version: String,
    pub files: Vec<PlanFile>,
    /// Present for masters only.
    #[serde(default)]
    pub etcd: Option<EtcdInstructions>,
    pub install: InstallAction,
    /// Masters of a cluster whose endpoint is a virtual IP (`cluster::vip`); absent otherwise,
    /// and then left out of the JSON, so plans without one keep their digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<VipInstructions>,
    /// The container images the host runs, decided by `kubeadm::node_images`.
    pub images: NodeImages,
    /// `sha256:<hex>` of [`Plan::canonical_bytes`].
    pub digest: String,
}

/// Every image reference a host needs, named at the seed's registry with the tags kubeadm pins
/// for the plan's Kubernetes version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeImages {
    /// containerd's `sandbox_image`: kubeadm's pause image, which its `imageRepository` does not
    /// reach (kubeadm#2801), so the host's container runtime must be told.
    pub sandbox: String,
    /// Every image the host's kubelet runs, in `kubeadm config images list` order (external
    /// etcd: no etcd image).
    pub all: Vec<String>,
}

/// One file of a plan, written atomically under the host's root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanFile {
    /// Absolute path on the host.
    pub path: String,
    /// Unix permission bits (`0o600` for every private key).
    pub mode: u32,
    pub source: FileSource,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FileSource {
    /// The file's whole text.
    Text { text: String },
    /// The PEM private key the host made for the certificate of this name (see [`cert_names`]).
    HostKey { name: String },
}

/// How a master runs etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdInstructions {
    pub member_name: String,
    /// `new` when bootstrapping with the first masters, `existing` when joining as a learner.
    pub initial_cluster_state: String,
    pub learner: bool,
    /// Path of the etcd config file among the plan's files.
    pub config_path: String,
    /// Client URLs of every member, to wait on health.
    pub client_urls: Vec<String>,
}

impl EtcdInstructions {
    /// This member's client URL: the one whose host is the host's address `ip`, else the
    /// first.
    pub fn own_client_url(&self, ip: Option<&str>) -> String {
        let host_of = |url: &str| {
            let rest = url.split_once("://").map_or(url, |(_, r)| r);
            let authority = rest.split('/').next().unwrap_or(rest);
            let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string()
        };
        let ours = ip.and_then(|ip| self.client_urls.iter().find(|u| host_of(u) == ip));
        ours.or(self.client_urls.first())
            .cloned()
            .unwrap_or_else(|| "https://127.0.0.1:2379".to_string())
    }
}

/// How a master takes part in holding the control-plane VIP (keepalived's VRRP instance). The
/// interface and its prefix are the host's to find: the ones that carry [`Plan::ip`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipInstructions {
    /// The control-plane endpoint's address.
    pub address: std::net::Ipv4Addr,
    /// VRRP's virtual router id, the same on every master of the cluster.
    pub router_id: u8,
    pub priority: u8,
    /// VRRPv3's advertisement interval, in centiseconds.
    pub advert_interval_cs: u16,
}

/// What the install phase runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum InstallAction {
    /// `kubeadm init --config PATH` (the first master).
    Init { config_path: String },
    /// `kubeadm join --config PATH` with `controlPlane` set (the other masters).
    JoinControlPlane { config_path: String },
    /// Start the kubelet with its seed-signed client certificate (workers).
    Worker {
        kubelet_config_path: String,
        kubeconfig_path: String,
    },
}

impl Plan {
    /// The bytes the digest covers: the plan as JSON with the digest field empty.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut copy = self.clone();
        copy.digest = String::new();
        serde_json::to_vec(&copy).expect("a plan always serializes")
    }

    pub fn compute_digest(&self) -> String {
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(self.canonical_bytes()))
        )
    }

    /// Fills in [`Plan::digest`]; the seed calls this last.
    pub fn seal(mut self) -> Self {
        self.digest = self.compute_digest();
        self
    }

    /// Whether the digest matches the content.
    pub fn verify(&self) -> bool {
        self.digest == self.compute_digest()
    }
}

/// The phases of firstboot, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Identify,
    Time,
    Enroll,
    Materialize,
    Storage,
    Preload,
    Etcd,
    Install,
    Done,
}

impl Phase {
    pub const ALL: [Phase; 9] = [
        Phase::Identify,
        Phase::Time,
        Phase::Enroll,
        Phase::Materialize,
        Phase::Storage,
        Phase::Preload,
        Phase::Etcd,
        Phase::Install,
        Phase::Done,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Identify => "identify",
            Phase::Time => "time",
            Phase::Enroll => "enroll",
            Phase::Materialize => "materialize",
            Phase::Storage => "storage",
            Phase::Preload => "preload",
            Phase::Etcd => "etcd",
            Phase::Install => "install",
            Phase::Done => "done",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseState {
    Started,
    Succeeded,
    Failed,
}

/// `POST /v1/hosts/{id}/progress`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressReport {
    pub phase: Phase,
    pub state: PhaseState,
    #[serde(default)]
    pub message: String,
    /// The host's clock when it sent the report, Unix milliseconds.
    pub at_unix_ms: i64,
}

/// What the seed can ask of a host's resident agent (`launcher-firstboot agent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    /// Say how the host is: uptime, load, and whether its cluster services are active.
    Health,
    /// Reboot, once the seed has heard that the host is about to.
    Reboot,
    /// Come back as a new machine: the seed unbinds the host from its identity key when it
    /// hears the host will reset; the host then clears its `LAUNCHER-DATA` disk at the next
    /// boot (identity key, journal, etcd's, containerd's and the kubelet's state) and reboots,
    /// to enroll again, keeping its id, role and name, with a new key.
    Reset,
}

impl CommandKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Health => "health",
            CommandKind::Reboot => "reboot",
            CommandKind::Reset => "reset",
        }
    }
}

/// One command, as a host's agent receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCommand {
    pub id: String,
    pub kind: CommandKind,
}

/// `GET /v1/hosts/{id}/commands`: the commands this host has not answered yet, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CommandBatch {
    pub commands: Vec<HostCommand>,
}

/// `POST /v1/hosts/{id}/commands/{command}`: what a command came to on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandOutcome {
    pub ok: bool,
    #[serde(default)]
    pub message: String,
}

/// The one error shape of every seed route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

/// Stable error codes. Clients match on these, never on messages.
pub mod codes {
    pub const BAD_REQUEST: &str = "bad_request";
    pub const BODY_TOO_LARGE: &str = "body_too_large";
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const FORBIDDEN: &str = "forbidden";
    pub const NOT_FOUND: &str = "not_found";
    pub const TOKEN_INVALID: &str = "token_invalid";
    pub const TOKEN_EXPIRED: &str = "token_expired";
    pub const TOKEN_USED: &str = "token_used";
    pub const BAD_CSR: &str = "bad_csr";
    pub const IDENTITY_CONFLICT: &str = "identity_conflict";
    /// The request came without the host's identity key (a TLS client certificate).
    pub const IDENTITY_REQUIRED: &str = "identity_required";
    /// The identity the request claims is bound to another key: a re-imaged or replaced host
    /// is let in again only after `launcher-seed hosts reset ID`.
    pub const IDENTITY_TAKEN: &str = "identity_taken";
    /// Too many requests from this address; the answer's `Retry-After` says when to come back.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// The host's image carries a Kubernetes release its role in this cluster cannot run: the
    /// host asks again later (an operator may boot it from another image meanwhile).
    pub const VERSION_MISMATCH: &str = "version_mismatch";
    /// The identity key the request proved it holds belonged to a host an operator removed: that
    /// machine comes back only as a new one, with a new key (its data disk wiped).
    pub const HOST_REMOVED: &str = "host_removed";
    pub const NO_CAPACITY: &str = "no_capacity";
    /// A host has as many unanswered commands as it may have; or a command already answered
    /// is answered differently.
    pub const COMMAND_REFUSED: &str = "command_refused";
    pub const BUSY: &str = "busy";
    pub const INTERNAL: &str = "internal";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_members_own_client_url_is_the_one_on_its_address() {
        let etcd = EtcdInstructions {
            member_name: "m".into(),
            initial_cluster_state: "new".into(),
            learner: false,
            config_path: "/etc/etcd/etcd.yaml".into(),
            client_urls: vec![
                "https://10.0.0.11:2379".into(),
                "https://10.0.0.1:2379".into(),
                "https://[fd00::1]:2379".into(),
            ],
        };
        let cases = [
            (Some("10.0.0.1"), "https://10.0.0.1:2379"),
            (Some("10.0.0.11"), "https://10.0.0.11:2379"),
            (Some("fd00::1"), "https://[fd00::1]:2379"),
            (Some("10.0.0.9"), "https://10.0.0.11:2379"),
            (None, "https://10.0.0.11:2379"),
        ];
        for (ip, want) in cases {
            assert_eq!(etcd.own_client_url(ip), want, "{ip:?}");
        }
        let none = EtcdInstructions {
            client_urls: vec![],
            ..etcd
        };
        assert_eq!(
            none.own_client_url(Some("10.0.0.1")),
            "https://127.0.0.1:2379"
        );
    }

    fn plan() -> Plan {
        Plan {
            host_id: "h-1".into(),
            cluster: "demo".into(),
            hostname: "demo-m1".into(),
            role: Role::Master,
            ip: Some("10.77.0.11".into()),
            kubernetes_version: "v1.33.4".into(),
            files: vec![PlanFile {
                path: "/etc/kubernetes/pki/ca.crt".into(),
                mode: 0o644,
                source: FileSource::Text {
                    text: "-----BEGIN CERTIFICATE-----".into(),
                },
            }],
            etcd: None,
            install: InstallAction::Init {
                config_path: "/etc/kubernetes/kubeadm.yaml".into(),
            },
            vip: None,
            images: NodeImages {
                sandbox: "10.77.0.1:8443/pause:3.10".into(),
                all: vec!["10.77.0.1:8443/pause:3.10".into()],
            },
            digest: String::new(),
        }
        .seal()
    }

    #[test]
    fn a_sealed_plan_verifies_and_a_changed_one_does_not() {
        let sealed = plan();
        assert!(sealed.verify());
        let mut tampered = sealed.clone();
        tampered.files[0].mode = 0o666;
        assert!(!tampered.verify());
        let mut other_sandbox = sealed.clone();
        other_sandbox.images.sandbox = "elsewhere/pause:3.10".into();
        assert!(!other_sandbox.verify());
    }

    #[test]
    fn requests_refuse_unknown_fields_and_responses_ignore_them() {
        let req = r#"{"identity":{"macs":[]},"extra":1}"#;
        let err = serde_json::from_str::<EnrollRequest>(req).unwrap_err();
        assert!(err.to_string().contains("unknown field `extra`"), "{err}");

        let mut value = serde_json::to_value(EnrollResponse::Enrolled(Box::new(plan()))).unwrap();
        value["added_by_a_newer_seed"] = serde_json::json!(true);
        let back: EnrollResponse = serde_json::from_value(value).unwrap();
        assert!(matches!(back, EnrollResponse::Enrolled(p) if p.verify()));
    }
}
