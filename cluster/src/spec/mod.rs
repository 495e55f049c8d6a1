//! The cluster definition: a TOML file, validated into domain types at parse time.
//!
//! Parsing is two stages: [`raw`] mirrors the file with `deny_unknown_fields` and spans, then
//! [`validate`] turns it into a [`ClusterSpec`] whose every value is already checked, or into a
//! [`SpecError`] naming the file, line, column and field.

mod cidr;
pub(crate) mod error;
mod extra_args;
mod raw;
mod types;
mod validate;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

pub use self::cidr::Cidr;
pub use self::error::SpecError;
pub use self::extra_args::{ApiServerFlag, FlagValue, MAX_EXTRA_ARGS};
pub use self::types::{
    ClusterName, DnsDomain, Endpoint, Host, Hostname, INIT_PHASES, InitPhase, JoinToken, MacAddr,
    NtpServer, PreflightCheck, ProductUuid, RegistryHost, SeedUrl, Serial, ValueError,
};
use crate::api::Role;
pub use crate::pki::KeyAlgorithm;
pub use crate::version::{KubeVersion, KubeadmApi, MAX_MINOR, MIN_MINOR};

/// A validated cluster definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterSpec {
    pub name: ClusterName,
    pub kubernetes_version: KubeVersion,
    pub control_plane_endpoint: Endpoint,
    pub pod_subnet: Cidr,
    pub service_subnet: Cidr,
    pub dns_domain: DnsDomain,
    /// How many control-plane nodes the cluster has (also the etcd member count).
    pub masters: u32,
    /// Masters also run workloads: no `NoSchedule` taint.
    pub schedulable_masters: bool,
    pub key_algorithm: KeyAlgorithm,
    /// kubeadm preflight checks every node tolerates (`nodeRegistration.ignorePreflightErrors`).
    pub ignore_preflight_errors: Vec<PreflightCheck>,
    /// Phases the first master's `kubeadm init` skips (`skipPhases`).
    pub skip_phases: Vec<InitPhase>,
    /// Written in the file as `etcd_heartbeat_interval_ms` and `etcd_election_timeout_ms`.
    #[serde(flatten)]
    pub etcd_timing: EtcdTiming,
    /// The operator's kube-apiserver flags (`apiServer.extraArgs`), each replacing Launcher's
    /// hardening flag of the same name (`profiling`); never one Launcher sets itself.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub api_server_extra_args: BTreeMap<ApiServerFlag, FlagValue>,
    pub seed: SeedSpec,
    /// The inventory: hosts known by MAC (others may enroll by token or approval).
    pub hosts: Vec<HostSpec>,
}

/// etcd's Raft timing (`heartbeat-interval`, `election-timeout`), the same on every member.
/// etcd's defaults suit a LAN of idle servers; hosts that stall for longer than the election
/// timeout (overloaded, virtualised without acceleration, slow disks) make members call
/// elections over and over, and every election is a moment without a leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EtcdTiming {
    #[serde(rename = "etcd_heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u32,
    #[serde(rename = "etcd_election_timeout_ms")]
    pub election_timeout_ms: u32,
}

impl Default for EtcdTiming {
    /// etcd's own defaults.
    fn default() -> Self {
        EtcdTiming {
            heartbeat_interval_ms: 100,
            election_timeout_ms: 1000,
        }
    }
}

/// Where hosts reach the seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeedSpec {
    /// The seed's API, `https://host:port`.
    pub url: SeedUrl,
    /// The seed's registry as image references name it (`10.77.0.1:8443`).
    pub registry: RegistryHost,
}

/// The role an inventory entry asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleSpec {
    Master,
    Worker,
    /// A master while the cluster has fewer than `masters`, else a worker.
    #[default]
    Auto,
}

/// One inventory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostSpec {
    pub mac: MacAddr,
    pub ip: Option<Ipv4Addr>,
    pub role: RoleSpec,
    pub hostname: Option<Hostname>,
    pub uuid: Option<ProductUuid>,
    pub serial: Option<Serial>,
}

/// A parsed spec and the warnings an operator should read (same `FILE:LINE:COL` form as errors).
#[derive(Debug, Clone)]
pub struct Parsed {
    pub spec: ClusterSpec,
    pub warnings: Vec<String>,
}

/// An inventory host with the role and name it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedHost<'a> {
    pub host: &'a HostSpec,
    pub role: Role,
    pub hostname: Hostname,
    /// 1-based position among the hosts of the same role, in file order.
    pub index: u32,
}

impl ClusterSpec {
    /// Parses and validates a cluster TOML; `file_name` is only used in messages.
    pub fn parse(file_name: &str, text: &str) -> Result<Parsed, SpecError> {
        validate::parse(file_name, text)
    }

    /// The generated name of the `index`-th (1-based) master or worker: `demo-m1`, `demo-w2`.
    pub fn default_hostname(&self, role: Role, index: u32) -> Hostname {
        let letter = match role {
            Role::Master => 'm',
            Role::Worker => 'w',
        };
        // A cluster name is one label of at most 50 characters, so this always fits.
        format!("{}-{letter}{index}", self.name)
            .parse()
            .expect("generated hostname is valid")
    }

    /// True when `name` has the form of a generated name (`<cluster>-m<n>` or `<cluster>-w<n>`).
    pub fn is_generated_hostname(&self, name: &str) -> bool {
        let Some(rest) = name.strip_prefix(self.name.as_str()) else {
            return false;
        };
        let digits = rest.strip_prefix("-m").or_else(|| rest.strip_prefix("-w"));
        digits.is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
    }

    /// The inventory host with this MAC.
    pub fn host_by_mac(&self, mac: &MacAddr) -> Option<&HostSpec> {
        self.hosts.iter().find(|h| h.mac == *mac)
    }

    /// Roles and names for the inventory: explicit roles stand; `auto` hosts fill the master
    /// seats left, in file order, then become workers. Generated names are numbered per role.
    pub fn plan_inventory(&self) -> Vec<PlannedHost<'_>> {
        let explicit = self
            .hosts
            .iter()
            .filter(|h| h.role == RoleSpec::Master)
            .count();
        let mut free_seats = (self.masters as usize).saturating_sub(explicit);
        let (mut masters, mut workers) = (0u32, 0u32);
        let mut out = Vec::with_capacity(self.hosts.len());
        for host in &self.hosts {
            let role = match host.role {
                RoleSpec::Master => Role::Master,
                RoleSpec::Worker => Role::Worker,
                RoleSpec::Auto if free_seats > 0 => {
                    free_seats -= 1;
                    Role::Master
                }
                RoleSpec::Auto => Role::Worker,
            };
            let counter = if role == Role::Master {
                &mut masters
            } else {
                &mut workers
            };
            *counter += 1;
            let index = *counter;
            let hostname = host
                .hostname
                .clone()
                .unwrap_or_else(|| self.default_hostname(role, index));
            out.push(PlannedHost {
                host,
                role,
                hostname,
                index,
            });
        }
        out
    }

    /// The API server's in-cluster address (`kubernetes.default`): the service subnet's first.
    pub fn first_service_ip(&self) -> IpAddr {
        self.service_subnet
            .nth_host(1)
            .expect("service subnet holds at least 16 addresses")
    }

    /// The cluster DNS service address, the tenth of the service subnet as kubeadm picks it.
    pub fn cluster_dns_ip(&self) -> IpAddr {
        self.service_subnet
            .nth_host(10)
            .expect("service subnet holds at least 16 addresses")
    }
}

impl std::fmt::Display for RoleSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RoleSpec::Master => "master",
            RoleSpec::Worker => "worker",
            RoleSpec::Auto => "auto",
        })
    }
}
