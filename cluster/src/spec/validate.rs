//! From the raw TOML to a [`ClusterSpec`]: every check, each with its own message.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;
use std::str::FromStr;

use toml::Spanned;

use super::error::Locator;
use super::raw::{RawCluster, RawFile, RawHost, RawSeed};
use super::types::ValueError;
use super::{
    ApiServerFlag, Cidr, ClusterSpec, EtcdTiming, FlagValue, HostSpec, KeyAlgorithm,
    MAX_EXTRA_ARGS, Parsed, RoleSpec, SeedSpec, SpecError,
};

const DEFAULT_SERVICE_SUBNET: &str = "10.96.0.0/12";
const DEFAULT_DNS_DOMAIN: &str = "cluster.local";
/// etcd refuses an election timeout of 50 s or more.
const MAX_ELECTION_TIMEOUT_MS: u32 = 50_000;

pub(crate) fn parse(file: &str, text: &str) -> Result<Parsed, SpecError> {
    let loc = Locator { file, text };
    let raw: RawFile = toml::from_str(text).map_err(|e| loc.toml_error(&e))?;
    let mut v = Validator {
        loc,
        warnings: Vec::new(),
    };
    let spec = v.spec(raw)?;
    Ok(Parsed {
        spec,
        warnings: v.warnings,
    })
}

struct Validator<'a> {
    loc: Locator<'a>,
    warnings: Vec<String>,
}

/// A cluster subnet and where it was written (`None`: the default).
struct Subnet {
    cidr: Cidr,
    field: &'static str,
    span: Option<Range<usize>>,
}

impl Validator<'_> {
    fn at(&self, span: Range<usize>, field: &str, message: impl Into<String>) -> SpecError {
        self.loc.error(span, Some(field.to_owned()), message.into())
    }

    fn warn(&mut self, span: Range<usize>, field: &str, message: String) {
        let warning = self.at(span, field, message).to_string();
        self.warnings.push(warning);
    }

    fn value<T: FromStr<Err = ValueError>>(
        &self,
        field: &str,
        s: &Spanned<String>,
    ) -> Result<T, SpecError> {
        s.get_ref()
            .parse()
            .map_err(|e: ValueError| self.at(s.span(), field, e.0))
    }

    fn opt<T: FromStr<Err = ValueError>>(
        &self,
        field: &str,
        s: &Option<Spanned<String>>,
    ) -> Result<Option<T>, SpecError> {
        s.as_ref().map(|s| self.value(field, s)).transpose()
    }

    fn spec(&mut self, raw: RawFile) -> Result<ClusterSpec, SpecError> {
        let c = raw.cluster.get_ref();
        let name = self.value("cluster.name", &c.name)?;
        let kubernetes_version = self.value("cluster.kubernetes_version", &c.kubernetes_version)?;
        let control_plane_endpoint =
            self.value("cluster.control_plane_endpoint", &c.control_plane_endpoint)?;
        let (pod, service) = self.subnets(c)?;
        let dns_domain = match &c.dns_domain {
            Some(d) => self.value("cluster.dns_domain", d)?,
            None => DEFAULT_DNS_DOMAIN.parse().expect("default domain is valid"),
        };
        let masters = self.masters(&c.masters)?;
        let key_algorithm = self.key_algorithm(&c.key_algorithm)?;
        let seed = self.seed(raw.seed.get_ref())?;
        let ignore_preflight_errors = c
            .ignore_preflight_errors
            .iter()
            .map(|s| self.value("cluster.ignore_preflight_errors", s))
            .collect::<Result<_, _>>()?;
        let skip_phases = c
            .skip_phases
            .iter()
            .map(|s| self.value("cluster.skip_phases", s))
            .collect::<Result<_, _>>()?;
        let etcd_timing = self.etcd_timing(c)?;
        let api_server_extra_args = self.api_server_extra_args(c)?;
        let mut spec = ClusterSpec {
            name,
            kubernetes_version,
            control_plane_endpoint,
            pod_subnet: pod.cidr,
            service_subnet: service.cidr,
            dns_domain,
            masters,
            schedulable_masters: c.schedulable_masters,
            key_algorithm,
            ignore_preflight_errors,
            skip_phases,
            etcd_timing,
            api_server_extra_args,
            seed,
            hosts: Vec::new(),
        };
        self.outside_subnets(
            &spec,
            spec.control_plane_endpoint.host().ip(),
            &c.control_plane_endpoint.span(),
            "cluster.control_plane_endpoint",
        )?;
        let seed_url = &raw.seed.get_ref().url;
        self.outside_subnets(
            &spec,
            spec.seed.url.endpoint().host().ip(),
            &seed_url.span(),
            "seed.url",
        )?;
        for (i, host) in raw.hosts.iter().enumerate() {
            let host = self.host(&spec, i, host.get_ref())?;
            spec.hosts.push(host);
        }
        self.duplicates(&spec, &raw.hosts)?;
        self.master_count(&spec, &c.masters, &raw.hosts)?;
        self.endpoint_on_a_host(&spec, &c.control_plane_endpoint.span());
        Ok(spec)
    }

    fn subnets(&self, c: &RawCluster) -> Result<(Subnet, Subnet), SpecError> {
        let pod = Subnet {
            cidr: self.value("cluster.pod_subnet", &c.pod_subnet)?,
            field: "cluster.pod_subnet",
            span: Some(c.pod_subnet.span()),
        };
        let service = match &c.service_subnet {
            Some(s) => Subnet {
                cidr: self.value("cluster.service_subnet", s)?,
                field: "cluster.service_subnet",
                span: Some(s.span()),
            },
            None => Subnet {
                cidr: DEFAULT_SERVICE_SUBNET
                    .parse()
                    .expect("default subnet is valid"),
                field: "cluster.service_subnet",
                span: None,
            },
        };
        self.subnet_sizes(&pod, &service)?;
        // Blame the subnet that was written; the default one is never the culprit.
        let culprit = if service.span.is_some() {
            &service
        } else {
            &pod
        };
        let other = if service.span.is_some() {
            &pod
        } else {
            &service
        };
        let span = culprit.span.clone().unwrap_or(0..0);
        if pod.cidr.is_ipv4() != service.cidr.is_ipv4() {
            return Err(self.at(span, culprit.field, format!(
                "{} and {} {} are of different IP families; use one family for both (dual-stack is not supported)",
                culprit.cidr, other.field.trim_start_matches("cluster."), other.cidr
            )));
        }
        if pod.cidr.overlaps(&service.cidr) {
            return Err(self.at(
                span,
                culprit.field,
                format!(
                    "{} overlaps {} {}; pod and service subnets must not share addresses",
                    culprit.cidr,
                    other.field.trim_start_matches("cluster."),
                    other.cidr
                ),
            ));
        }
        Ok((pod, service))
    }

    fn subnet_sizes(&self, pod: &Subnet, service: &Subnet) -> Result<(), SpecError> {
        let (p, s) = (&pod.cidr, &service.cidr);
        let (svc_min, svc_max, node) = if s.is_ipv4() {
            (12, 28, 24)
        } else {
            (108, 124, 64)
        };
        let span = service.span.clone().unwrap_or(0..0);
        if s.prefix() < svc_min {
            return Err(self.at(
                span,
                service.field,
                format!(
                    "{s} is too large: kubeadm takes a service subnet of /{svc_min} or smaller"
                ),
            ));
        }
        if s.prefix() > svc_max {
            return Err(self.at(span, service.field, format!(
                "{s} is too small: the cluster DNS address is its 10th, so use /{svc_max} or larger"
            )));
        }
        let node = if p.is_ipv4() { node.min(24) } else { 64 };
        if p.prefix() > node {
            return Err(self.at(
                pod.span.clone().unwrap_or(0..0),
                pod.field,
                format!(
                    "{p} is smaller than the /{node} each node is given; use /{node} or larger"
                ),
            ));
        }
        Ok(())
    }

    /// Refuses an address of the machines' network that falls inside the pod or service subnet.
    fn outside_subnets(
        &self,
        spec: &ClusterSpec,
        ip: Option<IpAddr>,
        span: &Range<usize>,
        field: &str,
    ) -> Result<(), SpecError> {
        let Some(ip) = ip else { return Ok(()) };
        for (which, net) in [
            ("pod_subnet", &spec.pod_subnet),
            ("service_subnet", &spec.service_subnet),
        ] {
            if net.contains(ip) {
                return Err(self.at(span.clone(), field, format!(
                    "{ip} is inside cluster.{which} {net}; machine addresses must be outside the pod and service subnets"
                )));
            }
        }
        Ok(())
    }

    /// etcd's own rules (`embed.Config.Validate`), checked here so that a bad value is refused
    /// at the seed rather than by etcd on every master.
    fn etcd_timing(&self, c: &RawCluster) -> Result<EtcdTiming, SpecError> {
        let default = EtcdTiming::default();
        let millis = |field: &str, v: &Option<Spanned<i64>>, default: u32| match v {
            None => Ok(default),
            Some(v) => u32::try_from(*v.get_ref())
                .ok()
                .filter(|ms| *ms > 0)
                .ok_or_else(|| {
                    self.at(
                        v.span(),
                        field,
                        format!(
                            "{} ms: must be a positive number of milliseconds",
                            v.get_ref()
                        ),
                    )
                }),
        };
        let heartbeat = millis(
            "cluster.etcd_heartbeat_interval_ms",
            &c.etcd_heartbeat_interval_ms,
            default.heartbeat_interval_ms,
        )?;
        let election = millis(
            "cluster.etcd_election_timeout_ms",
            &c.etcd_election_timeout_ms,
            default.election_timeout_ms,
        )?;
        // The election timeout's span when written, else the heartbeat's (one of them is).
        let span = || {
            c.etcd_election_timeout_ms
                .as_ref()
                .or(c.etcd_heartbeat_interval_ms.as_ref())
                .map(Spanned::span)
                .unwrap_or_default()
        };
        if u64::from(election) < 5 * u64::from(heartbeat) {
            return Err(self.at(
                span(),
                "cluster.etcd_election_timeout_ms",
                format!(
                    "an election timeout of {election} ms is under 5 heartbeat intervals ({heartbeat} ms): etcd refuses it"
                ),
            ));
        }
        if election >= MAX_ELECTION_TIMEOUT_MS {
            return Err(self.at(
                span(),
                "cluster.etcd_election_timeout_ms",
                format!(
                    "an election timeout of {election} ms is too long: etcd takes less than {MAX_ELECTION_TIMEOUT_MS} ms"
                ),
            ));
        }
        Ok(EtcdTiming {
            heartbeat_interval_ms: heartbeat,
            election_timeout_ms: election,
        })
    }

    /// Checked in file order, so that the first bad entry is the one reported.
    fn api_server_extra_args(
        &self,
        c: &RawCluster,
    ) -> Result<BTreeMap<ApiServerFlag, FlagValue>, SpecError> {
        const FIELD: &str = "cluster.api_server_extra_args";
        let Some(table) = &c.api_server_extra_args else {
            return Ok(BTreeMap::new());
        };
        if table.get_ref().len() > MAX_EXTRA_ARGS {
            return Err(self.at(
                table.span(),
                FIELD,
                format!("{} flags; at most {MAX_EXTRA_ARGS}", table.get_ref().len()),
            ));
        }
        let mut entries: Vec<_> = table.get_ref().iter().collect();
        entries.sort_by_key(|(name, _)| name.span().start);
        entries
            .into_iter()
            .map(|(name, value)| {
                let name: ApiServerFlag = self.value(FIELD, name)?;
                let value = self.value(&format!("{FIELD}.{name}"), value)?;
                Ok((name, value))
            })
            .collect()
    }

    fn masters(&mut self, m: &Spanned<i64>) -> Result<u32, SpecError> {
        let n = *m.get_ref();
        if n < 1 {
            return Err(self.at(
                m.span(),
                "cluster.masters",
                format!("{n} masters: a cluster needs at least 1 (3 to survive the loss of one)"),
            ));
        }
        let Ok(n) = u32::try_from(n) else {
            return Err(self.at(
                m.span(),
                "cluster.masters",
                format!("{n} masters is not a count"),
            ));
        };
        if n % 2 == 0 {
            let tolerated = (n - 1) / 2;
            let lost = if tolerated == 0 {
                "no failure".to_owned()
            } else {
                format!("{tolerated} failure(s)")
            };
            self.warn(m.span(), "cluster.masters", format!(
                "{n} masters run {n} etcd members, which tolerate {lost}, no more than {} would; \
                 {} tolerate {} (n members tolerate (n-1)/2 failures), so an odd count is better",
                n - 1, n + 1, tolerated + 1
            ));
        }
        Ok(n)
    }

    fn key_algorithm(&self, k: &Option<Spanned<String>>) -> Result<KeyAlgorithm, SpecError> {
        let Some(k) = k else {
            return Ok(KeyAlgorithm::default());
        };
        [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa2048]
            .into_iter()
            .find(|a| a.as_str() == k.get_ref())
            .ok_or_else(|| {
                self.at(
                    k.span(),
                    "cluster.key_algorithm",
                    format!(
                        "{:?} is not a key algorithm; expected \"ecdsa-p256\" or \"rsa-2048\"",
                        k.get_ref()
                    ),
                )
            })
    }

    fn seed(&self, s: &RawSeed) -> Result<SeedSpec, SpecError> {
        Ok(SeedSpec {
            url: self.value("seed.url", &s.url)?,
            registry: self.value("seed.registry", &s.registry)?,
        })
    }

    fn host(&self, spec: &ClusterSpec, i: usize, h: &RawHost) -> Result<HostSpec, SpecError> {
        let f = |name: &str| format!("hosts[{i}].{name}");
        let role =
            match &h.role {
                None => RoleSpec::Auto,
                Some(r) => match r.get_ref().as_str() {
                    "master" => RoleSpec::Master,
                    "worker" => RoleSpec::Worker,
                    "auto" => RoleSpec::Auto,
                    other => return Err(self.at(
                        r.span(),
                        &f("role"),
                        format!(
                            "{other:?} is not a role; expected \"master\", \"worker\" or \"auto\""
                        ),
                    )),
                },
            };
        let hostname: Option<super::Hostname> = self.opt(&f("hostname"), &h.hostname)?;
        if let (Some(name), Some(raw)) = (&hostname, &h.hostname)
            && spec.is_generated_hostname(name.as_str())
        {
            return Err(self.at(raw.span(), &f("hostname"), format!(
                "{name} has the form of a generated name ({0}-m<n>, {0}-w<n>) and could clash with one; choose another or leave it unset",
                spec.name
            )));
        }
        Ok(HostSpec {
            mac: self.value(&f("mac"), &h.mac)?,
            ip: self.host_ip(spec, &f("ip"), &h.ip)?,
            role,
            hostname,
            uuid: self.opt(&f("uuid"), &h.uuid)?,
            serial: self.opt(&f("serial"), &h.serial)?,
        })
    }

    fn host_ip(
        &self,
        spec: &ClusterSpec,
        field: &str,
        ip: &Option<Spanned<String>>,
    ) -> Result<Option<Ipv4Addr>, SpecError> {
        let Some(raw) = ip else { return Ok(None) };
        let Ok(addr) = raw.get_ref().parse::<Ipv4Addr>() else {
            return Err(self.at(
                raw.span(),
                field,
                format!(
                    "{:?} is not an IPv4 address; expected one like 10.77.0.11",
                    raw.get_ref()
                ),
            ));
        };
        if addr.is_unspecified() || addr.is_loopback() || addr.is_multicast() || addr.is_broadcast()
        {
            return Err(self.at(raw.span(), field, format!(
                "{addr} cannot be a host's address (unspecified, loopback, multicast or broadcast)"
            )));
        }
        if spec.seed.url.endpoint().host().ip() == Some(IpAddr::V4(addr)) {
            return Err(self.at(
                raw.span(),
                field,
                format!("{addr} is the seed's address (seed.url)"),
            ));
        }
        self.outside_subnets(spec, Some(IpAddr::V4(addr)), &raw.span(), field)?;
        Ok(Some(addr))
    }

    /// MACs, IPs, hostnames, UUIDs and serials each name one host only.
    fn duplicates(&self, spec: &ClusterSpec, raw: &[Spanned<RawHost>]) -> Result<(), SpecError> {
        let mut seen: HashMap<(&str, String), usize> = HashMap::new();
        for (i, (host, r)) in spec.hosts.iter().zip(raw).enumerate() {
            let r = r.get_ref();
            let keys = [
                ("mac", "MAC", Some(host.mac.to_string()), Some(r.mac.span())),
                (
                    "ip",
                    "IP",
                    host.ip.map(|ip| ip.to_string()),
                    r.ip.as_ref().map(|s| s.span()),
                ),
                (
                    "hostname",
                    "hostname",
                    host.hostname.as_ref().map(|h| h.to_string()),
                    r.hostname.as_ref().map(|s| s.span()),
                ),
                (
                    "uuid",
                    "UUID",
                    host.uuid.as_ref().map(|u| u.to_string()),
                    r.uuid.as_ref().map(|s| s.span()),
                ),
                (
                    "serial",
                    "serial",
                    host.serial.as_ref().map(|s| s.to_string()),
                    r.serial.as_ref().map(|s| s.span()),
                ),
            ];
            for (field, what, value, span) in keys {
                let (Some(value), Some(span)) = (value, span) else {
                    continue;
                };
                if let Some(first) = seen.insert((field, value.clone()), i) {
                    let line = crate::text::line_col(self.loc.text, raw[first].span().start).0;
                    return Err(self.at(
                        span,
                        &format!("hosts[{i}].{field}"),
                        format!(
                            "duplicate {what} {value}: hosts[{first}] (line {line}) has it already"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// No more explicit masters than seats; warn when the inventory cannot fill the seats.
    fn master_count(
        &mut self,
        spec: &ClusterSpec,
        masters: &Spanned<i64>,
        raw: &[Spanned<RawHost>],
    ) -> Result<(), SpecError> {
        let mut explicit = 0u32;
        for (i, (host, r)) in spec.hosts.iter().zip(raw).enumerate() {
            if host.role != RoleSpec::Master {
                continue;
            }
            explicit += 1;
            if explicit > spec.masters {
                let span = r.get_ref().role.as_ref().map_or(r.span(), |s| s.span());
                return Err(self.at(span, &format!("hosts[{i}].role"), format!(
                    "this is host number {explicit} with role \"master\" but cluster.masters = {}; raise cluster.masters or make it a worker",
                    spec.masters
                )));
            }
        }
        let eligible = spec
            .hosts
            .iter()
            .filter(|h| h.role != RoleSpec::Worker)
            .count();
        if !spec.hosts.is_empty() && (eligible as u64) < u64::from(spec.masters) {
            self.warn(masters.span(), "cluster.masters", format!(
                "{} masters wanted but only {eligible} inventory host(s) can be one (role \"master\" or \"auto\"); the others must enroll by token or approval",
                spec.masters
            ));
        }
        Ok(())
    }

    /// With several masters, an endpoint that is one host's own address is a single point of
    /// failure: the API is reachable only while that host is up.
    fn endpoint_on_a_host(&mut self, spec: &ClusterSpec, span: &Range<usize>) {
        let Some(IpAddr::V4(ip)) = spec.control_plane_endpoint.host().ip() else {
            return;
        };
        let Some(i) = spec.hosts.iter().position(|h| h.ip == Some(ip)) else {
            return;
        };
        if spec.masters > 1 {
            self.warn(span.clone(), "cluster.control_plane_endpoint", format!(
                "{ip} is the address of hosts[{i}]: with {} masters the API is reachable only while that host is up; point it at a load balancer or virtual IP",
                spec.masters
            ));
        }
    }
}
