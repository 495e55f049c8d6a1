//! etcd on the masters: member names and URLs, `initial-cluster` strings, and the YAML config
//! file (`etcd --config-file`, etcd 3.4's field names) for a new cluster or a joining learner.

use std::net::IpAddr;

use crate::spec::EtcdTiming;
use serde::Serialize;

/// Port etcd serves clients on.
pub const CLIENT_PORT: u16 = 2379;
/// Port etcd members talk to each other on.
pub const PEER_PORT: u16 = 2380;
/// Where every master keeps etcd's data.
pub const DATA_DIR: &str = "/var/lib/etcd";
/// Where the config file goes on a master.
pub const CONFIG_PATH: &str = "/etc/etcd/etcd.yaml";
/// The etcd CA certificate every member and client trusts.
pub const CA_FILE: &str = "/etc/kubernetes/pki/etcd/ca.crt";
pub const SERVER_CERT: &str = "/etc/kubernetes/pki/etcd/server.crt";
pub const SERVER_KEY: &str = "/etc/kubernetes/pki/etcd/server.key";
pub const PEER_CERT: &str = "/etc/kubernetes/pki/etcd/peer.crt";
pub const PEER_KEY: &str = "/etc/kubernetes/pki/etcd/peer.key";

/// One etcd member: named after its host, reached at the host's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    pub name: String,
    pub ip: IpAddr,
}

fn https_url(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("https://{v4}:{port}"),
        IpAddr::V6(v6) => format!("https://[{v6}]:{port}"),
    }
}

impl Member {
    pub fn new(name: impl Into<String>, ip: IpAddr) -> Member {
        Member {
            name: name.into(),
            ip,
        }
    }

    /// `https://IP:2380`.
    pub fn peer_url(&self) -> String {
        https_url(self.ip, PEER_PORT)
    }

    /// `https://IP:2379`.
    pub fn client_url(&self) -> String {
        https_url(self.ip, CLIENT_PORT)
    }
}

/// `name=peer-url,...` for every member, in the order given.
pub fn initial_cluster(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Client URLs of every member, in the order given (kubeadm's `etcd.external.endpoints`).
pub fn client_urls(members: &[Member]) -> Vec<String> {
    members.iter().map(Member::client_url).collect()
}

/// Whether a member bootstraps a cluster with its peers or joins one that runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterState {
    /// Every member in `initial-cluster` starts together.
    New,
    /// The cluster runs; this member was added (as a learner) through the API first.
    Existing,
}

impl ClusterState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterState::New => "new",
            ClusterState::Existing => "existing",
        }
    }
}

/// What one member's config file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberConfig {
    pub member: Member,
    /// The members of `initial-cluster`: for a new cluster all of them; for a joining member,
    /// the members already running plus itself.
    pub initial_members: Vec<Member>,
    pub state: ClusterState,
    /// `initial-cluster-token`, unique per cluster so two clusters never merge.
    pub token: String,
    pub timing: EtcdTiming,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ConfigFile<'a> {
    name: &'a str,
    data_dir: &'a str,
    listen_peer_urls: String,
    listen_client_urls: String,
    initial_advertise_peer_urls: String,
    advertise_client_urls: String,
    initial_cluster: String,
    initial_cluster_token: &'a str,
    initial_cluster_state: &'static str,
    client_transport_security: Transport,
    peer_transport_security: Transport,
    snapshot_count: u32,
    heartbeat_interval: u32,
    election_timeout: u32,
    /// The JSON gateway the seed changes membership through; etcd turns it off when started
    /// with a config file unless asked.
    enable_grpc_gateway: bool,
    logger: &'static str,
    log_outputs: [&'static str; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Transport {
    cert_file: &'static str,
    key_file: &'static str,
    client_cert_auth: bool,
    trusted_ca_file: &'static str,
}

impl MemberConfig {
    /// The YAML of `etcd --config-file`: mutual TLS on both ports, every certificate from the
    /// etcd CA, data in [`DATA_DIR`].
    pub fn render(&self) -> String {
        let file = ConfigFile {
            name: &self.member.name,
            data_dir: DATA_DIR,
            listen_peer_urls: self.member.peer_url(),
            listen_client_urls: self.member.client_url(),
            initial_advertise_peer_urls: self.member.peer_url(),
            advertise_client_urls: self.member.client_url(),
            initial_cluster: initial_cluster(&self.initial_members),
            initial_cluster_token: &self.token,
            initial_cluster_state: self.state.as_str(),
            client_transport_security: Transport {
                cert_file: SERVER_CERT,
                key_file: SERVER_KEY,
                client_cert_auth: true,
                trusted_ca_file: CA_FILE,
            },
            peer_transport_security: Transport {
                cert_file: PEER_CERT,
                key_file: PEER_KEY,
                client_cert_auth: true,
                trusted_ca_file: CA_FILE,
            },
            snapshot_count: 10000,
            heartbeat_interval: self.timing.heartbeat_interval_ms,
            election_timeout: self.timing.election_timeout_ms,
            enable_grpc_gateway: true,
            logger: "zap",
            log_outputs: ["stderr"],
        };
        serde_yaml::to_string(&file).expect("an etcd config always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> Vec<Member> {
        testkit::fixtures::demo_masters()
            .into_iter()
            .map(|(name, ip)| Member::new(name, ip))
            .collect()
    }

    #[test]
    fn urls_and_initial_cluster() {
        let all = members();
        assert_eq!(all[0].peer_url(), "https://10.77.0.11:2380");
        assert_eq!(all[2].client_url(), "https://10.77.0.13:2379");
        assert_eq!(
            initial_cluster(&all),
            "demo-m1=https://10.77.0.11:2380,demo-m2=https://10.77.0.12:2380,\
             demo-m3=https://10.77.0.13:2380"
        );
        let v6 = Member::new("m", "fd00::1".parse().unwrap());
        assert_eq!(v6.client_url(), "https://[fd00::1]:2379");
    }

    #[test]
    fn a_new_member_config() {
        let all = members();
        let config = MemberConfig {
            member: all[1].clone(),
            initial_members: all.clone(),
            state: ClusterState::New,
            token: "launcher-demo".into(),
            timing: EtcdTiming {
                heartbeat_interval_ms: 500,
                election_timeout_ms: 5000,
            },
        };
        let yaml: serde_yaml::Value = serde_yaml::from_str(&config.render()).unwrap();
        assert_eq!(yaml["name"], "demo-m2");
        assert_eq!(yaml["data-dir"], "/var/lib/etcd");
        assert_eq!(yaml["listen-client-urls"], "https://10.77.0.12:2379");
        assert_eq!(
            yaml["initial-advertise-peer-urls"],
            "https://10.77.0.12:2380"
        );
        assert_eq!(yaml["initial-cluster-state"], "new");
        assert_eq!(yaml["initial-cluster"], initial_cluster(&all).as_str());
        assert_eq!(yaml["heartbeat-interval"], 500);
        assert_eq!(yaml["election-timeout"], 5000);
        let peer = &yaml["peer-transport-security"];
        assert_eq!(peer["cert-file"], "/etc/kubernetes/pki/etcd/peer.crt");
        assert_eq!(peer["client-cert-auth"], true);
        assert_eq!(
            yaml["client-transport-security"]["trusted-ca-file"],
            CA_FILE
        );
    }

    #[test]
    fn a_joining_member_config() {
        let all = members();
        let config = MemberConfig {
            member: all[2].clone(),
            initial_members: all.clone(),
            state: ClusterState::Existing,
            token: "launcher-demo".into(),
            timing: EtcdTiming::default(),
        };
        let yaml: serde_yaml::Value = serde_yaml::from_str(&config.render()).unwrap();
        assert_eq!(yaml["initial-cluster-state"], "existing");
        assert_eq!(yaml["name"], "demo-m3");
        assert_eq!(yaml["heartbeat-interval"], 100);
        assert_eq!(yaml["election-timeout"], 1000);
    }
}
