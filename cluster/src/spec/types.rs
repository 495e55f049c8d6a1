//! Newtypes for the values of a cluster spec that end up in OS files and command lines.
//!
//! Each one is checked when it is made: a value of these types is always valid, so the code
//! that writes it into a hostname file, a kubeadm config or an iPXE query never checks again.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

pub use crate::text::ValueError;

fn err<T>(msg: impl Into<String>) -> Result<T, ValueError> {
    Err(ValueError(msg.into()))
}

/// Serde, `Display` and `AsRef<str>` for a newtype that holds its canonical text.
macro_rules! string_newtype {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        serde_via_str!($name);
    };
}

/// Checks one RFC 1123 label: 1-63 of `a-z0-9-`, not starting or ending with `-`.
fn check_label(label: &str, whole: &str) -> Result<(), ValueError> {
    if label.is_empty() {
        return err(format!(
            "{whole:?} has an empty label (two dots, or a dot at an end)"
        ));
    }
    if label.len() > 63 {
        return err(format!(
            "label {label:?} is {} characters; at most 63",
            label.len()
        ));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return err(format!(
            "{whole:?} contains {c:?}; only lowercase letters, digits, '-' and '.' are allowed"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return err(format!("label {label:?} starts or ends with '-'"));
    }
    Ok(())
}

/// Checks a DNS name of one or more RFC 1123 labels, at most 253 characters.
fn check_dns_name(s: &str) -> Result<(), ValueError> {
    if s.is_empty() {
        return err("the name is empty");
    }
    if s.len() > 253 {
        return err(format!("{s:?} is {} characters; at most 253", s.len()));
    }
    s.split('.').try_for_each(|l| check_label(l, s))
}

/// A host's name: lowercase RFC 1123 labels (`a-z0-9-`, 1-63 each), at most 253 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hostname(String);
string_newtype!(Hostname);

impl FromStr for Hostname {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        check_dns_name(s)?;
        Ok(Hostname(s.to_owned()))
    }
}

impl Hostname {
    /// The first label, what `hostname -s` prints.
    pub fn short(&self) -> &str {
        self.0.split('.').next().unwrap_or(&self.0)
    }
}

/// The cluster's name: one RFC 1123 label of at most 50 characters, so that generated host
/// names (`<name>-m<index>`) stay within the 63 of a label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterName(String);
string_newtype!(ClusterName);

impl FromStr for ClusterName {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        if s.is_empty() {
            return err("the name is empty");
        }
        if s.contains('.') {
            return err(format!(
                "{s:?} contains '.'; a cluster name is a single DNS label"
            ));
        }
        if s.len() > 50 {
            return err(format!(
                "{s:?} is {} characters; at most 50, so host names made from it fit in 63",
                s.len()
            ));
        }
        check_label(s, s)?;
        Ok(ClusterName(s.to_owned()))
    }
}

/// The cluster's DNS domain (`cluster.local`): lowercase RFC 1123 labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DnsDomain(String);
string_newtype!(DnsDomain);

impl FromStr for DnsDomain {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        check_dns_name(s)?;
        Ok(DnsDomain(s.to_owned()))
    }
}

/// A MAC address, kept in lowercase colon form (`52:54:00:00:00:01`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr([u8; 6]);
serde_via_str!(MacAddr);

impl MacAddr {
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// The form iPXE's `${mac:hexhyp}` gives: `52-54-00-00-00-01`.
    pub fn hyphenated(&self) -> String {
        self.to_string().replace(':', "-")
    }
}

impl FromStr for MacAddr {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let expected = "expected six hex pairs like 52:54:00:00:00:01 (or 52-54-00-00-00-01)";
        let sep = if s.contains('-') { '-' } else { ':' };
        let parts: Vec<&str> = s.split(sep).collect();
        let mut octets = [0u8; 6];
        if parts.len() != 6 {
            return err(format!("{s:?} is not a MAC address: {expected}"));
        }
        for (octet, part) in octets.iter_mut().zip(&parts) {
            if part.len() != 2 || !part.chars().all(|c| c.is_ascii_hexdigit()) {
                return err(format!("{s:?} is not a MAC address: {expected}"));
            }
            *octet = u8::from_str_radix(part, 16).map_err(|e| ValueError(e.to_string()))?;
        }
        if octets[0] & 1 == 1 {
            return err(format!(
                "{s:?} is a multicast address, not a network card's"
            ));
        }
        if octets == [0; 6] {
            return err(format!(
                "{s:?} is the all-zero address, not a network card's"
            ));
        }
        Ok(MacAddr(octets))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

/// A host's SMBIOS product UUID, kept lowercase (`8-4-4-4-12` hex digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProductUuid(String);
string_newtype!(ProductUuid);

impl FromStr for ProductUuid {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let groups: Vec<&str> = s.split('-').collect();
        let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        let hex = groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()));
        if lens != [8, 4, 4, 4, 12] || !hex {
            return err(format!(
                "{s:?} is not a UUID: expected 8-4-4-4-12 hex digits like 4c4c4544-0042-3510-8050-b4c04f4b4d32"
            ));
        }
        Ok(ProductUuid(s.to_ascii_lowercase()))
    }
}

/// A host's SMBIOS serial number: 1-64 printable ASCII characters without spaces, so it can sit
/// in an iPXE query and a log line as is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(String);
string_newtype!(Serial);

impl FromStr for Serial {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        if s.is_empty() || s.len() > 64 {
            return err(format!(
                "{s:?} is not a serial number: expected 1 to 64 characters"
            ));
        }
        if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
            return err(format!(
                "{s:?} contains {c:?}; a serial number is printable ASCII without spaces"
            ));
        }
        Ok(Serial(s.to_owned()))
    }
}

/// A host part of an endpoint: an IP address or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    Name(Hostname),
}

impl Host {
    fn parse(s: &str) -> Result<Host, ValueError> {
        if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            return match inner.parse::<std::net::Ipv6Addr>() {
                Ok(ip) => Ok(Host::Ip(IpAddr::V6(ip))),
                Err(_) => err(format!("{s:?} is not an IPv6 address in brackets")),
            };
        }
        if let Ok(ip) = s.parse::<Ipv4Addr>() {
            return Ok(Host::Ip(IpAddr::V4(ip)));
        }
        if s.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return err(format!("{s:?} is not a valid IPv4 address"));
        }
        Ok(Host::Name(s.parse()?))
    }

    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Ip(ip) => Some(*ip),
            Host::Name(_) => None,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => write!(f, "{name}"),
        }
    }
}

/// Splits `host:port` (IPv6 in brackets); `None` when there is no port part.
fn split_host_port(s: &str) -> Option<(&str, &str)> {
    let colon = s.rfind(':')?;
    let (host, port) = (&s[..colon], &s[colon + 1..]);
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return None; // a bare IPv6 address, no port
    }
    Some((host, port))
}

fn parse_port(port: &str, whole: &str) -> Result<u16, ValueError> {
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.chars().all(|c| c.is_ascii_digit()) => Ok(p),
        _ => err(format!(
            "{whole:?} has port {port:?}; expected a number from 1 to 65535"
        )),
    }
}

/// `host:port` where a client reaches a service; the port is required.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    host: Host,
    port: u16,
}
serde_via_str!(Endpoint);

impl Endpoint {
    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl FromStr for Endpoint {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        if s.contains("://") {
            return err(format!(
                "{s:?} has a scheme; expected host:port like 10.77.0.10:6443"
            ));
        }
        let Some((host, port)) = split_host_port(s) else {
            return err(format!(
                "{s:?} has no port; expected host:port like 10.77.0.10:6443"
            ));
        };
        let port = parse_port(port, s)?;
        Ok(Endpoint {
            host: Host::parse(host)?,
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Where container images are pulled from: `host[:port]`, no scheme, no path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegistryHost {
    host: Host,
    port: Option<u16>,
}
serde_via_str!(RegistryHost);

impl RegistryHost {
    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

impl FromStr for RegistryHost {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        if s.contains("://") || s.contains('/') {
            return err(format!(
                "{s:?} is not a registry host; expected host[:port] without scheme or path, like 10.77.0.1:8443"
            ));
        }
        match split_host_port(s) {
            Some((host, port)) => Ok(RegistryHost {
                host: Host::parse(host)?,
                port: Some(parse_port(port, s)?),
            }),
            None => Ok(RegistryHost {
                host: Host::parse(s)?,
                port: None,
            }),
        }
    }
}

impl fmt::Display for RegistryHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => write!(f, "{}", self.host),
        }
    }
}

/// The seed's base URL: `https://host:port`, with the port spelled out and no path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeedUrl(Endpoint);
serde_via_str!(SeedUrl);

impl SeedUrl {
    pub fn endpoint(&self) -> &Endpoint {
        &self.0
    }

    /// The URL of a path on the seed; `path` starts with `/`.
    pub fn join(&self, path: &str) -> String {
        format!("{self}{path}")
    }
}

impl FromStr for SeedUrl {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let expected = "expected https://HOST:PORT like https://10.77.0.1:8443";
        let Some(rest) = s.strip_prefix("https://") else {
            return err(format!("{s:?} is not an https URL; {expected}"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return err(format!("{s:?} has a path, query or user part; {expected}"));
        }
        if rest.is_empty() {
            return err(format!("{s:?} has no host; {expected}"));
        }
        match rest.parse::<Endpoint>() {
            Ok(endpoint) => Ok(SeedUrl(endpoint)),
            Err(_) if split_host_port(rest).is_none() => {
                err(format!("{s:?} has no port; {expected}"))
            }
            Err(e) => err(format!("{e}; {expected}")),
        }
    }
}

impl fmt::Display for SeedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}", self.0)
    }
}

/// An NTP server: `host` or `host:port`, the port 123 when left out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NtpServer(Endpoint);
serde_via_str!(NtpServer);

impl NtpServer {
    /// NTP's own port, used when none is written.
    pub const PORT: u16 = 123;

    /// The server of the seed at `host`, on NTP's port.
    pub fn on(host: &Host) -> NtpServer {
        NtpServer(Endpoint {
            host: host.clone(),
            port: Self::PORT,
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.0
    }
}

impl FromStr for NtpServer {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        if s.is_empty() || s.contains(['/', ' ', '@']) {
            return err(format!(
                "{s:?} is not an NTP server; expected HOST or HOST:PORT like 10.77.0.1:123"
            ));
        }
        // A bare IPv6 address has colons but no port.
        if let Ok(ip) = s.parse::<std::net::Ipv6Addr>() {
            return Ok(NtpServer::on(&Host::Ip(IpAddr::V6(ip))));
        }
        match split_host_port(s) {
            Some((host, port)) => Ok(NtpServer(Endpoint {
                host: Host::parse(host)?,
                port: parse_port(port, s)?,
            })),
            None => Ok(NtpServer::on(&Host::parse(s)?)),
        }
    }
}

impl fmt::Display for NtpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A one-time join token: 1 to 256 printable ASCII characters without spaces. Messages never
/// repeat it: it is a secret until used.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct JoinToken(String);
string_newtype!(JoinToken);

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinToken(..)")
    }
}

impl FromStr for JoinToken {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        if s.is_empty() || s.len() > 256 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return err("a token is 1-256 printable characters without spaces");
        }
        Ok(JoinToken(s.to_owned()))
    }
}

/// A kubeadm preflight check to tolerate (`NumCPU`, `Mem`, `Port-6443`, or `all`), as
/// `nodeRegistration.ignorePreflightErrors` names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PreflightCheck(String);
string_newtype!(PreflightCheck);

impl FromStr for PreflightCheck {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if s.is_empty() || s.len() > 128 || !s.chars().all(allowed) {
            return Err(ValueError(format!(
                "{s:?} is not a preflight check name (letters, digits, '-', '_' and '.', like NumCPU or Port-6443)"
            )));
        }
        Ok(PreflightCheck(s.to_owned()))
    }
}

/// The phases of `kubeadm init` (kubeadm 1.33's `kubeadm init --help`), which `skipPhases` may
/// name, alone or as `phase/subphase`.
pub const INIT_PHASES: [&str; 14] = [
    "preflight",
    "certs",
    "kubeconfig",
    "etcd",
    "control-plane",
    "kubelet-start",
    "wait-control-plane",
    "upload-config",
    "upload-certs",
    "mark-control-plane",
    "bootstrap-token",
    "kubelet-finalize",
    "addon",
    "show-join-command",
];

/// A phase of `kubeadm init` to skip (`mark-control-plane`, `addon/kube-proxy`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InitPhase(String);
string_newtype!(InitPhase);

impl FromStr for InitPhase {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let (phase, sub) = match s.split_once('/') {
            Some((phase, sub)) => (phase, Some(sub)),
            None => (s, None),
        };
        let sub_ok = sub.is_none_or(|sub| {
            !sub.is_empty() && sub.chars().all(|c| c.is_ascii_lowercase() || c == '-')
        });
        if !INIT_PHASES.contains(&phase) || !sub_ok {
            return Err(ValueError(format!(
                "{s:?} is not a kubeadm init phase (one of {}, or phase/subphase)",
                INIT_PHASES.join(", ")
            )));
        }
        Ok(InitPhase(s.to_owned()))
    }
}
