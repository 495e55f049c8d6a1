//! The cluster TOML as written, before validation: strings and numbers with their spans.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    pub cluster: Spanned<RawCluster>,
    pub seed: Spanned<RawSeed>,
    #[serde(default)]
    pub hosts: Vec<Spanned<RawHost>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub name: Spanned<String>,
    pub kubernetes_version: Spanned<String>,
    pub control_plane_endpoint: Spanned<String>,
    pub pod_subnet: Spanned<String>,
    #[serde(default)]
    pub service_subnet: Option<Spanned<String>>,
    #[serde(default)]
    pub dns_domain: Option<Spanned<String>>,
    pub masters: Spanned<i64>,
    #[serde(default)]
    pub schedulable_masters: bool,
    #[serde(default)]
    pub key_algorithm: Option<Spanned<String>>,
    #[serde(default)]
    pub ignore_preflight_errors: Vec<Spanned<String>>,
    #[serde(default)]
    pub skip_phases: Vec<Spanned<String>>,
    #[serde(default)]
    pub etcd_heartbeat_interval_ms: Option<Spanned<i64>>,
    #[serde(default)]
    pub etcd_election_timeout_ms: Option<Spanned<i64>>,
    #[serde(default)]
    pub api_server_extra_args: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSeed {
    pub url: Spanned<String>,
    pub registry: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHost {
    pub mac: Spanned<String>,
    #[serde(default)]
    pub ip: Option<Spanned<String>>,
    #[serde(default)]
    pub role: Option<Spanned<String>>,
    #[serde(default)]
    pub hostname: Option<Spanned<String>>,
    #[serde(default)]
    pub uuid: Option<Spanned<String>>,
    #[serde(default)]
    pub serial: Option<Spanned<String>>,
}
