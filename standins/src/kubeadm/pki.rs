//! kubeadm's certs phase on a host whose CAs are given: the API server's SANs
//! (`pkiutil.GetAPIServerAltNames`), and the leaves and service-account key it makes when they
//! are missing (`certlist.go` `GetCertsWithoutEtcd`, `runCertsSa`), signed by the CA whose key
//! is here. Facts from kubeadm v1.33. Existing files are never rewritten.

use super::config::InitConfig;
use crate::Root;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use time::{Duration, OffsetDateTime};

/// kubeadm's `certificateValidityPeriod` default, 8760h.
const LEAF_VALIDITY: Duration = Duration::days(365);
/// kubeadm backdates what it signs, for clocks a little behind.
const BACKDATE: Duration = Duration::minutes(5);

/// Why a certificate or key could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}: {reason}")]
    Parse {
        path: String,
        what: &'static str,
        reason: String,
    },
    #[error("{present} exists but {missing} does not: kubeadm cannot load the pair")]
    HalfPair { present: String, missing: String },
    #[error(
        "{path} is missing: kubeadm would make a new CA, which the stand-in does not (the seed gives every CA)"
    )]
    NoCa { path: String },
    #[error("signing {what}: {reason}")]
    Sign { what: String, reason: String },
    #[error(transparent)]
    Write(#[from] durable::Error),
}

/// The API server certificate's names: DNS names de-duplicated and sorted, IPs de-duplicated
/// in kubeadm's order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AltNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl AltNames {
    fn add(&mut self, name: &str) {
        match name.parse::<IpAddr>() {
            Ok(ip) if !self.ips.contains(&ip) => self.ips.push(ip),
            Ok(_) => {}
            Err(_) if !self.dns.iter().any(|d| d == name) => self.dns.push(name.to_owned()),
            Err(_) => {}
        }
    }
}

/// The first address of a CIDR (`10.96.0.0/12` → `10.96.0.1`): the `kubernetes` Service's.
pub fn first_service_ip(cidr: &str) -> Option<IpAddr> {
    let (net, bits) = cidr.split_once('/')?;
    let bits: u32 = bits.parse().ok()?;
    match net.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) if bits < 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            Some(IpAddr::V4(((u32::from(v4) & mask) + 1).into()))
        }
        IpAddr::V6(v6) if bits < 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            Some(IpAddr::V6(((u128::from(v6) & mask) + 1).into()))
        }
        _ => None,
    }
}

/// The host of `host:port`, `[v6]:port` or a bare host.
fn endpoint_host(endpoint: &str) -> &str {
    if let Some(rest) = endpoint.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match endpoint.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => host,
        _ => endpoint,
    }
}

/// A DNS name as kubeadm's `validation.IsDNS1123Subdomain` (a leading `*.` allowed).
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `GetAPIServerAltNames`; the certSANs kubeadm skips (neither an IP nor a DNS name) are
/// returned as warnings.
pub fn api_server_alt_names(cfg: &InitConfig) -> (AltNames, Vec<String>) {
    let mut names = AltNames::default();
    names.add(&cfg.node_name);
    for dns in ["kubernetes", "kubernetes.default", "kubernetes.default.svc"] {
        names.add(dns);
    }
    names.add(&format!("kubernetes.default.svc.{}", cfg.dns_domain));
    let first_subnet = cfg.service_subnet.split(',').next().unwrap_or_default();
    if let Some(ip) = first_service_ip(first_subnet) {
        names.add(&ip.to_string());
    }
    names.add(&cfg.advertise_address.to_string());
    if let Some(endpoint) = &cfg.control_plane_endpoint {
        names.add(endpoint_host(endpoint));
    }
    let mut warnings = Vec::new();
    for san in &cfg.cert_sans {
        if san.parse::<IpAddr>().is_ok() || is_dns_name(san) {
            names.add(san);
        } else {
            warnings.push(format!(
                "'{san}' was not added to the 'apiserver' SAN, because it is not a valid IP address or a RFC-1123 compliant DNS entry"
            ));
        }
    }
    names.dns.sort();
    (names, warnings)
}

/// A certificate kubeadm makes when it is missing.
struct Leaf {
    base: &'static str,
    ca: &'static str,
    common_name: &'static str,
    organization: Option<&'static str>,
    usage: ExtendedKeyUsagePurpose,
}

fn leaves(minor: u32) -> [Leaf; 3] {
    [
        Leaf {
            base: "apiserver",
            ca: "ca",
            common_name: "kube-apiserver",
            organization: None,
            usage: ExtendedKeyUsagePurpose::ServerAuth,
        },
        Leaf {
            base: "apiserver-kubelet-client",
            ca: "ca",
            common_name: "kube-apiserver-kubelet-client",
            // kubeadm 1.29 moved the API server's kubelet client out of system:masters.
            organization: Some(if minor >= 29 {
                "kubeadm:cluster-admins"
            } else {
                "system:masters"
            }),
            usage: ExtendedKeyUsagePurpose::ClientAuth,
        },
        Leaf {
            base: "front-proxy-client",
            ca: "front-proxy-ca",
            common_name: "front-proxy-client",
            organization: None,
            usage: ExtendedKeyUsagePurpose::ClientAuth,
        },
    ]
}

fn read(root: &Root, path: &str) -> Result<String, PkiError> {
    std::fs::read_to_string(root.path(path)).map_err(|source| PkiError::Read {
        path: path.to_owned(),
        source,
    })
}

fn write(root: &Root, path: &str, text: &str, mode: u32) -> Result<(), PkiError> {
    Ok(durable::write_atomic(
        &root.path(path),
        text.as_bytes(),
        mode,
    )?)
}

/// The CA at `<pki>/<base>.crt|key` as an issuer.
fn issuer(root: &Root, pki: &str, base: &str) -> Result<(rcgen::Certificate, KeyPair), PkiError> {
    let (crt, key) = (format!("{pki}/{base}.crt"), format!("{pki}/{base}.key"));
    let parse = |path: &str, what, e: rcgen::Error| PkiError::Parse {
        path: path.to_owned(),
        what,
        reason: e.to_string(),
    };
    let key_pair = KeyPair::from_pem(&read(root, &key)?).map_err(|e| {
        parse(
            &key,
            "not a PKCS#8 private key the stand-in can sign with",
            e,
        )
    })?;
    let params = CertificateParams::from_ca_cert_pem(&read(root, &crt)?)
        .map_err(|e| parse(&crt, "not a CA certificate", e))?;
    // Only the name, key and key identifier of the result are used: they make the issuer.
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| parse(&crt, "not usable as an issuer", e))?;
    Ok((cert, key_pair))
}

fn sign(root: &Root, cfg: &InitConfig, leaf: &Leaf, now: OffsetDateTime) -> Result<(), PkiError> {
    let pki = &cfg.certificates_dir;
    let (ca_cert, ca_key) = issuer(root, pki, leaf.ca)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(o) = leaf.organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn.push(DnType::CommonName, leaf.common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![leaf.usage.clone()];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - BACKDATE;
    params.not_after = now + LEAF_VALIDITY;
    if leaf.base == "apiserver" {
        let (names, _) = api_server_alt_names(cfg);
        let sign_err = |reason: String| PkiError::Sign {
            what: leaf.base.to_owned(),
            reason,
        };
        for dns in names.dns {
            let name = dns
                .try_into()
                .map_err(|e: rcgen::Error| sign_err(e.to_string()))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        params
            .subject_alt_names
            .extend(names.ips.into_iter().map(SanType::IpAddress));
    }
    let sign_err = |e: rcgen::Error| PkiError::Sign {
        what: format!("{pki}/{}.crt", leaf.base),
        reason: e.to_string(),
    };
    let key = KeyPair::generate().map_err(sign_err)?;
    let cert = params
        .signed_by(&key, &ca_cert, &ca_key)
        .map_err(sign_err)?;
    write(
        root,
        &format!("{pki}/{}.key", leaf.base),
        &key.serialize_pem(),
        0o600,
    )?;
    write(
        root,
        &format!("{pki}/{}.crt", leaf.base),
        &cert.pem(),
        0o644,
    )
}

/// The leaves `missing` (the paths kubeadm finds absent, from [`crate::certs`]) asks for; a
/// CA kubeadm would make, or half of a pair, is refused.
fn leaves_to_make(cfg: &InitConfig, missing: &[String]) -> Result<Vec<Leaf>, PkiError> {
    let pki = &cfg.certificates_dir;
    let is_missing = |p: &String| missing.contains(p);
    for ca in ["ca", "front-proxy-ca"] {
        let crt = format!("{pki}/{ca}.crt");
        if is_missing(&crt) {
            return Err(PkiError::NoCa { path: crt });
        }
    }
    let mut todo = Vec::new();
    for leaf in leaves(cfg.minor) {
        let (crt, key) = (
            format!("{pki}/{}.crt", leaf.base),
            format!("{pki}/{}.key", leaf.base),
        );
        match (is_missing(&crt), is_missing(&key)) {
            (true, true) => todo.push(leaf),
            (false, false) => {}
            (crt_missing, _) => {
                let (present, missing) = if crt_missing { (key, crt) } else { (crt, key) };
                return Err(PkiError::HalfPair { present, missing });
            }
        }
    }
    Ok(todo)
}

/// Everything [`make_missing`] would refuse, found before anything is written: the pairs, and
/// each CA it would sign with.
pub fn check(root: &Root, cfg: &InitConfig, missing: &[String]) -> Result<(), PkiError> {
    for leaf in leaves_to_make(cfg, missing)? {
        issuer(root, &cfg.certificates_dir, leaf.ca)?;
    }
    Ok(())
}

/// Makes the leaves and the service-account key `missing` asks for, and returns the paths
/// written.
pub fn make_missing(
    root: &Root,
    cfg: &InitConfig,
    missing: &[String],
    now: OffsetDateTime,
) -> Result<Vec<String>, PkiError> {
    let pki = &cfg.certificates_dir;
    let mut made = Vec::new();
    for leaf in &leaves_to_make(cfg, missing)? {
        sign(root, cfg, leaf, now)?;
        made.push(format!("{pki}/{}.crt", leaf.base));
        made.push(format!("{pki}/{}.key", leaf.base));
    }
    let sa_key = format!("{pki}/sa.key");
    if missing.contains(&sa_key) {
        let key = KeyPair::generate().map_err(|e| PkiError::Sign {
            what: sa_key.clone(),
            reason: e.to_string(),
        })?;
        write(root, &sa_key, &key.serialize_pem(), 0o600)?;
        write(root, &format!("{pki}/sa.pub"), &key.public_key_pem(), 0o644)?;
        made.extend([sa_key, format!("{pki}/sa.pub")]);
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra_sans: &[&str], endpoint: Option<&str>) -> InitConfig {
        let text = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n\
                    localAPIEndpoint: {advertiseAddress: 10.77.0.11}\nnodeRegistration: {name: demo-m1}\n\
                    ---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n\
                    kubernetesVersion: v1.33.4\nnetworking: {dnsDomain: corp.example}\n";
        let mut c = InitConfig::from_docs(&crate::docs::parse("k", text).unwrap()).unwrap();
        c.cert_sans = extra_sans.iter().map(|s| s.to_string()).collect();
        c.control_plane_endpoint = endpoint.map(str::to_owned);
        c
    }

    #[test]
    fn the_api_server_names_are_kubeadms() {
        let (names, warnings) = api_server_alt_names(&cfg(
            &[
                "10.77.0.11",
                "api.example",
                "*.lb.example",
                "Bad_Name",
                "fd00::1",
            ],
            Some("cp.example:6443"),
        ));
        assert_eq!(
            names.dns,
            [
                "*.lb.example",
                "api.example",
                "cp.example",
                "demo-m1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.corp.example",
            ]
        );
        let ips: Vec<String> = names.ips.iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["10.96.0.1", "10.77.0.11", "fd00::1"]);
        assert_eq!(
            warnings,
            [
                "'Bad_Name' was not added to the 'apiserver' SAN, because it is not a valid IP address or a RFC-1123 compliant DNS entry"
            ]
        );
    }

    #[test]
    fn endpoints_and_subnets() {
        let cases = [
            ("10.0.0.1:6443", "10.0.0.1"),
            ("[fd00::5]:6443", "fd00::5"),
            ("api.example", "api.example"),
            ("fd00::5", "fd00::5"),
        ];
        for (endpoint, host) in cases {
            assert_eq!(endpoint_host(endpoint), host, "{endpoint}");
        }
        let first = |c| first_service_ip(c).map(|ip| ip.to_string());
        assert_eq!(first("10.96.0.0/12").as_deref(), Some("10.96.0.1"));
        assert_eq!(first("10.100.7.9/16").as_deref(), Some("10.100.0.1"));
        assert_eq!(first("fd00:10:96::/108").as_deref(), Some("fd00:10:96::1"));
        assert_eq!(first("10.96.0.0"), None);
    }

    #[test]
    fn half_a_pair_and_a_missing_ca_are_refused() {
        let root = Root(std::path::PathBuf::from("/nonexistent"));
        let c = cfg(&[], None);
        let now = OffsetDateTime::now_utc();
        let err = check(&root, &c, &["/etc/kubernetes/pki/apiserver.key".into()]);
        assert_eq!(
            err.unwrap_err().to_string(),
            "/etc/kubernetes/pki/apiserver.crt exists but /etc/kubernetes/pki/apiserver.key does not: kubeadm cannot load the pair"
        );
        let err = make_missing(
            &root,
            &c,
            &["/etc/kubernetes/pki/front-proxy-ca.crt".into()],
            now,
        );
        assert!(err.is_err());
        let err = check(
            &root,
            &c,
            &["/etc/kubernetes/pki/front-proxy-ca.crt".into()],
        );
        assert_eq!(
            err.unwrap_err().to_string(),
            "/etc/kubernetes/pki/front-proxy-ca.crt is missing: kubeadm would make a new CA, which the stand-in does not (the seed gives every CA)"
        );
    }
}
