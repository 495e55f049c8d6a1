//! kube-apiserver's command line: the flags it knows, parsed as it parses them (pflag).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

/// Whether a flag takes a value or is a switch (`--flag`, `--flag=true|false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Value,
    Bool,
}

use Kind::{Bool, Value};

/// A component's flags: each name (without `--`) and whether it takes a value.
pub type FlagTable = [(&'static str, Kind)];

/// kube-apiserver's flags (1.30–1.33), the one table of them. Taken from the option sets
/// kube-apiserver registers: `cmd/kube-apiserver/app/options/options.go` (`Flags`),
/// `pkg/controlplane/apiserver/options/options.go`, `pkg/kubeapiserver/options/*.go`
/// (authentication, authorization, admission) and
/// `staging/src/k8s.io/apiserver/pkg/server/options/*.go` (serving, etcd, audit, features,
/// server run options), plus component-base's logs, metrics and tracing flags. Every flag
/// kubeadm's `getAPIServerCommand` (`cmd/kubeadm/app/phases/controlplane/manifests.go`)
/// passes is here. The stand-in acts on the serving, client CA and etcd flags (connection and
/// `etcd-prefix`); the rest are accepted and ignored. A real flag missing here is refused: the
/// table errs on the strict side.
const FLAGS: &FlagTable = &[
    // server run options
    ("advertise-address", Value),
    ("cors-allowed-origins", Value),
    ("default-not-ready-toleration-seconds", Value),
    ("default-unreachable-toleration-seconds", Value),
    ("emulated-version", Value),
    ("enable-priority-and-fairness", Bool),
    ("external-hostname", Value),
    ("feature-gates", Value),
    ("goaway-chance", Value),
    ("livez-grace-period", Value),
    ("max-mutating-requests-inflight", Value),
    ("max-requests-inflight", Value),
    ("min-request-timeout", Value),
    ("request-timeout", Value),
    ("shutdown-delay-duration", Value),
    ("shutdown-send-retry-after", Bool),
    ("shutdown-watch-termination-grace-period", Value),
    ("storage-initialization-timeout", Value),
    ("strict-transport-security-directives", Value),
    // etcd
    ("default-watch-cache-size", Value),
    ("delete-collection-workers", Value),
    ("enable-garbage-collector", Bool),
    ("encryption-provider-config", Value),
    ("encryption-provider-config-automatic-reload", Bool),
    ("etcd-cafile", Value),
    ("etcd-certfile", Value),
    ("etcd-compaction-interval", Value),
    ("etcd-count-metric-poll-period", Value),
    ("etcd-db-metric-poll-interval", Value),
    ("etcd-healthcheck-timeout", Value),
    ("etcd-keyfile", Value),
    ("etcd-prefix", Value),
    ("etcd-readycheck-timeout", Value),
    ("etcd-servers", Value),
    ("etcd-servers-overrides", Value),
    ("lease-reuse-duration-seconds", Value),
    ("storage-backend", Value),
    ("storage-media-type", Value),
    ("watch-cache", Bool),
    ("watch-cache-sizes", Value),
    // secure serving
    ("bind-address", Value),
    ("cert-dir", Value),
    ("http2-max-streams-per-connection", Value),
    ("permit-address-sharing", Bool),
    ("permit-port-sharing", Bool),
    ("secure-port", Value),
    ("tls-cert-file", Value),
    ("tls-cipher-suites", Value),
    ("tls-min-version", Value),
    ("tls-private-key-file", Value),
    ("tls-sni-cert-key", Value),
    // auditing
    ("audit-log-batch-buffer-size", Value),
    ("audit-log-batch-max-size", Value),
    ("audit-log-batch-max-wait", Value),
    ("audit-log-batch-throttle-burst", Value),
    ("audit-log-batch-throttle-enable", Bool),
    ("audit-log-batch-throttle-qps", Value),
    ("audit-log-compress", Bool),
    ("audit-log-format", Value),
    ("audit-log-maxage", Value),
    ("audit-log-maxbackup", Value),
    ("audit-log-maxsize", Value),
    ("audit-log-mode", Value),
    ("audit-log-path", Value),
    ("audit-log-truncate-enabled", Bool),
    ("audit-log-truncate-max-batch-size", Value),
    ("audit-log-truncate-max-event-size", Value),
    ("audit-log-version", Value),
    ("audit-policy-file", Value),
    ("audit-webhook-batch-buffer-size", Value),
    ("audit-webhook-batch-max-size", Value),
    ("audit-webhook-batch-max-wait", Value),
    ("audit-webhook-batch-throttle-burst", Value),
    ("audit-webhook-batch-throttle-enable", Bool),
    ("audit-webhook-batch-throttle-qps", Value),
    ("audit-webhook-config-file", Value),
    ("audit-webhook-initial-backoff", Value),
    ("audit-webhook-mode", Value),
    ("audit-webhook-truncate-enabled", Bool),
    ("audit-webhook-truncate-max-batch-size", Value),
    ("audit-webhook-truncate-max-event-size", Value),
    ("audit-webhook-version", Value),
    // features
    ("contention-profiling", Bool),
    ("debug-socket-path", Value),
    ("profiling", Bool),
    // authentication
    ("anonymous-auth", Bool),
    ("api-audiences", Value),
    ("authentication-config", Value),
    ("authentication-token-webhook-cache-ttl", Value),
    ("authentication-token-webhook-config-file", Value),
    ("authentication-token-webhook-version", Value),
    ("client-ca-file", Value),
    ("enable-bootstrap-token-auth", Bool),
    ("oidc-ca-file", Value),
    ("oidc-client-id", Value),
    ("oidc-groups-claim", Value),
    ("oidc-groups-prefix", Value),
    ("oidc-issuer-url", Value),
    ("oidc-required-claim", Value),
    ("oidc-signing-algs", Value),
    ("oidc-username-claim", Value),
    ("oidc-username-prefix", Value),
    ("requestheader-allowed-names", Value),
    ("requestheader-client-ca-file", Value),
    ("requestheader-extra-headers-prefix", Value),
    ("requestheader-group-headers", Value),
    ("requestheader-uid-headers", Value),
    ("requestheader-username-headers", Value),
    ("service-account-extend-token-expiration", Bool),
    ("service-account-issuer", Value),
    ("service-account-jwks-uri", Value),
    ("service-account-key-file", Value),
    ("service-account-lookup", Bool),
    ("service-account-max-token-expiration", Value),
    ("token-auth-file", Value),
    // authorization
    ("authorization-config", Value),
    ("authorization-mode", Value),
    ("authorization-policy-file", Value),
    ("authorization-webhook-cache-authorized-ttl", Value),
    ("authorization-webhook-cache-unauthorized-ttl", Value),
    ("authorization-webhook-config-file", Value),
    ("authorization-webhook-version", Value),
    // API enablement, egress, admission
    ("runtime-config", Value),
    ("egress-selector-config-file", Value),
    ("admission-control-config-file", Value),
    ("disable-admission-plugins", Value),
    ("enable-admission-plugins", Value),
    // metrics, logs, traces
    ("allow-metric-labels", Value),
    ("allow-metric-labels-manifest", Value),
    ("disabled-metrics", Value),
    ("show-hidden-metrics-for-version", Value),
    ("log-flush-frequency", Value),
    ("log-json-info-buffer-size", Value),
    ("log-json-split-stream", Bool),
    ("log-text-info-buffer-size", Value),
    ("log-text-split-stream", Bool),
    ("logging-format", Value),
    ("v", Value),
    ("vmodule", Value),
    ("tracing-config-file", Value),
    // kube-apiserver's own
    ("aggregator-reject-forwarding-redirect", Bool),
    ("allow-privileged", Bool),
    ("enable-aggregator-routing", Bool),
    ("endpoint-reconciler-type", Value),
    ("event-ttl", Value),
    ("kubelet-certificate-authority", Value),
    ("kubelet-client-certificate", Value),
    ("kubelet-client-key", Value),
    ("kubelet-preferred-address-types", Value),
    ("kubelet-timeout", Value),
    ("kubernetes-service-node-port", Value),
    ("max-connection-bytes-per-sec", Value),
    ("peer-advertise-ip", Value),
    ("peer-advertise-port", Value),
    ("peer-ca-file", Value),
    ("proxy-client-cert-file", Value),
    ("proxy-client-key-file", Value),
    ("service-account-signing-key-file", Value),
    ("service-cluster-ip-range", Value),
    ("service-node-port-range", Value),
    // global
    ("help", Bool),
    ("version", Value),
];

/// Why a command line was refused; the message is pflag's or kube-apiserver's where they have one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlagError {
    #[error("unknown flag: --{0}")]
    Unknown(String),
    #[error("bad flag syntax: {0}")]
    Syntax(String),
    #[error("flag needs an argument: --{0}")]
    NeedsArgument(String),
    #[error("invalid argument {value:?} for \"--{flag}\" flag: {reason}")]
    Invalid {
        flag: String,
        value: String,
        reason: String,
    },
    #[error("--{0} must be specified")]
    Missing(&'static str),
}

/// What the stand-in acts on, from a valid command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub bind_address: IpAddr,
    pub secure_port: u16,
    pub tls_cert_file: PathBuf,
    pub tls_private_key_file: PathBuf,
    pub client_ca_file: PathBuf,
    pub etcd_servers: Vec<String>,
    pub etcd_prefix: String,
    pub etcd_cafile: Option<PathBuf>,
    pub etcd_certfile: Option<PathBuf>,
    pub etcd_keyfile: Option<PathBuf>,
}

/// What a command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Version,
    Serve(Box<Options>),
}

/// Flags as given, checked against `table`, the last one winning (as pflag does for a plain
/// string flag). Shared by every stand-in that takes a Kubernetes component's flags.
pub fn collect(args: &[String], table: &FlagTable) -> Result<BTreeMap<String, String>, FlagError> {
    let mut given = BTreeMap::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let Some(body) = arg.strip_prefix("--") else {
            return Err(FlagError::Syntax(arg.clone()));
        };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (body, None),
        };
        if name.is_empty() || name.starts_with('-') {
            return Err(FlagError::Syntax(arg.clone()));
        }
        let kind = table
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, k)| *k)
            .ok_or_else(|| FlagError::Unknown(name.to_owned()))?;
        let value = match (kind, value) {
            (_, Some(v)) => v,
            (Bool, None) => "true".to_owned(),
            // `--version` alone prints the version, as kube-apiserver's verflag does.
            (Value, None) if name == "version" => "true".to_owned(),
            (Value, None) => rest
                .next()
                .cloned()
                .ok_or_else(|| FlagError::NeedsArgument(name.to_owned()))?,
        };
        if kind == Bool && !matches!(value.as_str(), "true" | "false" | "1" | "0") {
            return Err(invalid(name, &value, "strconv.ParseBool: parsing failed"));
        }
        given.insert(name.to_owned(), value);
    }
    Ok(given)
}

/// pflag's refusal of a value.
pub fn invalid(flag: &str, value: &str, reason: &str) -> FlagError {
    FlagError::Invalid {
        flag: flag.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Whether a switch was given on (`--flag`, `--flag=true`, `--flag=1`).
pub fn truthy(given: &BTreeMap<String, String>, name: &str) -> bool {
    matches!(given.get(name).map(String::as_str), Some("true" | "1"))
}

/// Parses a command line (without the program name).
pub fn parse(args: &[String]) -> Result<Command, FlagError> {
    let given = collect(args, FLAGS)?;
    if truthy(&given, "help") {
        return Ok(Command::Help);
    }
    if truthy(&given, "version") {
        return Ok(Command::Version);
    }
    let path = |name: &str| given.get(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let required = |name: &'static str| path(name).ok_or(FlagError::Missing(name));
    let bind = given.get("bind-address").map_or("0.0.0.0", String::as_str);
    let bind_address = bind
        .parse()
        .map_err(|_| invalid("bind-address", bind, "failed to parse IP"))?;
    let port = given.get("secure-port").map_or("6443", String::as_str);
    let secure_port = port
        .parse()
        .map_err(|_| invalid("secure-port", port, "not a port number"))?;
    let etcd_servers: Vec<String> = given
        .get("etcd-servers")
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if etcd_servers.is_empty() {
        return Err(FlagError::Missing("etcd-servers"));
    }
    Ok(Command::Serve(Box::new(Options {
        bind_address,
        secure_port,
        tls_cert_file: required("tls-cert-file")?,
        tls_private_key_file: required("tls-private-key-file")?,
        client_ca_file: required("client-ca-file")?,
        etcd_servers,
        etcd_prefix: given
            .get("etcd-prefix")
            .cloned()
            .unwrap_or_else(|| "/registry".to_owned()),
        etcd_cafile: path("etcd-cafile"),
        etcd_certfile: path("etcd-certfile"),
        etcd_keyfile: path("etcd-keyfile"),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    const GOOD: &[&str] = &[
        "--etcd-servers=https://127.0.0.1:2379",
        "--tls-cert-file=/pki/apiserver.crt",
        "--tls-private-key-file=/pki/apiserver.key",
        "--client-ca-file=/pki/ca.crt",
    ];

    #[test]
    fn a_good_command_line_parses() {
        let mut line = args(GOOD);
        line.extend(args(&[
            "--secure-port",
            "7443",
            "--allow-privileged",
            "--bind-address=127.0.0.1",
        ]));
        let Command::Serve(options) = parse(&line).unwrap() else {
            panic!("not a serve command");
        };
        assert_eq!(options.secure_port, 7443);
        assert_eq!(options.bind_address.to_string(), "127.0.0.1");
        assert_eq!(options.etcd_servers, ["https://127.0.0.1:2379"]);
        assert_eq!(parse(&args(&["--help"])).unwrap(), Command::Help);
        assert_eq!(parse(&args(&["--version"])).unwrap(), Command::Version);
    }

    #[test]
    fn bad_command_lines_are_refused_with_the_exact_error() {
        let cases: &[(&[&str], &str)] = &[
            (&["--no-such-flag=1"], "unknown flag: --no-such-flag"),
            (&["-v=2"], "bad flag syntax: -v=2"),
            (&["--secure-port"], "flag needs an argument: --secure-port"),
            (
                &["--allow-privileged=yes"],
                "invalid argument \"yes\" for \"--allow-privileged\" flag: \
                 strconv.ParseBool: parsing failed",
            ),
            (
                &["--secure-port=x"],
                "invalid argument \"x\" for \"--secure-port\" flag: not a port number",
            ),
        ];
        for (extra, want) in cases {
            let mut line = args(GOOD);
            line.extend(args(extra));
            assert_eq!(parse(&line).unwrap_err().to_string(), *want, "{extra:?}");
        }
        for (drop, want) in [
            (0, "--etcd-servers must be specified"),
            (1, "--tls-cert-file must be specified"),
            (3, "--client-ca-file must be specified"),
        ] {
            let mut line = args(GOOD);
            line.remove(drop);
            assert_eq!(parse(&line).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn every_flag_kubeadm_passes_is_known() {
        for flag in [
            "advertise-address",
            "allow-privileged",
            "authorization-mode",
            "client-ca-file",
            "enable-admission-plugins",
            "enable-bootstrap-token-auth",
            "etcd-cafile",
            "etcd-certfile",
            "etcd-keyfile",
            "etcd-servers",
            "kubelet-client-certificate",
            "kubelet-client-key",
            "kubelet-preferred-address-types",
            "proxy-client-cert-file",
            "proxy-client-key-file",
            "requestheader-allowed-names",
            "requestheader-client-ca-file",
            "requestheader-extra-headers-prefix",
            "requestheader-group-headers",
            "requestheader-username-headers",
            "secure-port",
            "service-account-issuer",
            "service-account-key-file",
            "service-account-signing-key-file",
            "service-cluster-ip-range",
            "tls-cert-file",
            "tls-private-key-file",
        ] {
            assert!(FLAGS.iter().any(|(n, _)| *n == flag), "{flag}");
        }
    }
}
