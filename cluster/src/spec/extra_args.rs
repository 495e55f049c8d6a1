//! kube-apiserver flags the operator adds (`[cluster.api_server_extra_args]`): a name and a
//! value fit for a command line, and never a flag Launcher sets from its own settings.
//!
//! Flag names are not checked against kube-apiserver's: the seed does not know every flag of
//! every version, and kube-apiserver refuses an unknown one when it starts.

use std::fmt;
use std::str::FromStr;

use super::types::ValueError;

/// How many flags the table may hold.
pub const MAX_EXTRA_ARGS: usize = 64;
const MAX_NAME_CHARS: usize = 64;
const MAX_VALUE_BYTES: usize = 1024;

fn err<T>(msg: String) -> Result<T, ValueError> {
    Err(ValueError(msg))
}

/// The API server flags kubeadm writes whose value Launcher decides, and who decides it: a
/// different value would leave the cluster disagreeing with its own certificates, etcd wiring,
/// addresses or node authorization. kubeadm's other flags are plain defaults and may be set.
const LAUNCHER_FLAGS: [(&[&str], &str); 7] = [
    (
        &["advertise-address"],
        "Launcher sets it to each master's own address",
    ),
    (
        &["secure-port"],
        "Launcher sets it to 6443, kubeadm's bindPort",
    ),
    (
        &["authorization-mode"],
        "Launcher sets it to Node,RBAC (kubelets need the Node authorizer)",
    ),
    (
        &["service-cluster-ip-range"],
        "cluster.service_subnet decides it",
    ),
    (&["service-account-issuer"], "cluster.dns_domain decides it"),
    (
        &[
            "etcd-servers",
            "etcd-cafile",
            "etcd-certfile",
            "etcd-keyfile",
        ],
        "Launcher sets it for the etcd it runs on the masters",
    ),
    (
        &[
            "client-ca-file",
            "tls-cert-file",
            "tls-private-key-file",
            "kubelet-client-certificate",
            "kubelet-client-key",
            "proxy-client-cert-file",
            "proxy-client-key-file",
            "requestheader-client-ca-file",
            "requestheader-allowed-names",
            "service-account-key-file",
            "service-account-signing-key-file",
        ],
        "Launcher sets it to match the certificates and keys the seed issues",
    ),
];

/// A kube-apiserver flag's name without its dashes (`oidc-issuer-url`): 1-64 of `a-z0-9-`,
/// starting with a letter or digit, and not one of [`LAUNCHER_FLAGS`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiServerFlag(String);

impl FromStr for ApiServerFlag {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        if s.is_empty() {
            return err("the flag name is empty".into());
        }
        if s.starts_with('-') {
            return err(format!(
                "{s:?} starts with '-'; write the flag's name without its dashes: {:?}",
                s.trim_start_matches('-')
            ));
        }
        if let Some((name, value)) = s.split_once('=') {
            return err(format!(
                "{s:?} contains '='; write the value separately: {name:?} = {value:?}"
            ));
        }
        if s.chars().count() > MAX_NAME_CHARS {
            return err(format!(
                "{s:?} is {} characters; a flag name has at most {MAX_NAME_CHARS}",
                s.chars().count()
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return err(format!(
                "{s:?} contains {c:?}; a flag name has only lowercase letters, digits and '-'"
            ));
        }
        if let Some((_, why)) = LAUNCHER_FLAGS.iter().find(|(names, _)| names.contains(&s)) {
            return err(format!("--{s} cannot be overridden: {why}"));
        }
        Ok(ApiServerFlag(s.to_owned()))
    }
}

/// A flag's value: at most 1024 bytes, no control characters (one line of a command).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlagValue(String);

impl FromStr for FlagValue {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        if s.len() > MAX_VALUE_BYTES {
            return err(format!(
                "the value is {} bytes; at most {MAX_VALUE_BYTES}",
                s.len()
            ));
        }
        if let Some(c) = s.chars().find(|c| c.is_control()) {
            return err(format!(
                "the value contains {c:?}; a flag's value has no control characters"
            ));
        }
        Ok(FlagValue(s.to_owned()))
    }
}

impl fmt::Display for ApiServerFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for FlagValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl ApiServerFlag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FlagValue {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

serde_via_str!(ApiServerFlag);
serde_via_str!(FlagValue);
