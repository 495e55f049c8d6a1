//! kube-controller-manager's and kube-scheduler's command lines: their flag tables, parsed as
//! pflag parses them (the parser is the API server stand-in's), with Go's durations.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::Component;
use crate::apiserver::flags::{FlagError, FlagTable, Kind, collect, invalid, truthy};

use Kind::{Bool, Value};

/// The flags both components register: component-base's (logs, metrics, features, version),
/// client connection, leader election, and the generic serving, delegated authentication and
/// delegated authorization options of `k8s.io/apiserver`. Taken from the generated command-line
/// references of kube-controller-manager (v1.31) and kube-scheduler, which list every flag the
/// binaries register; kubeadm v1.33's manifests use a handful of them.
const COMMON: &FlagTable = &[
    ("allow-metric-labels", Value),
    ("allow-metric-labels-manifest", Value),
    ("authentication-kubeconfig", Value),
    ("authentication-skip-lookup", Bool),
    ("authentication-token-webhook-cache-ttl", Value),
    ("authentication-tolerate-lookup-failure", Bool),
    ("authorization-always-allow-paths", Value),
    ("authorization-kubeconfig", Value),
    ("authorization-webhook-cache-authorized-ttl", Value),
    ("authorization-webhook-cache-unauthorized-ttl", Value),
    ("bind-address", Value),
    ("cert-dir", Value),
    ("client-ca-file", Value),
    ("contention-profiling", Bool),
    ("disable-http2-serving", Bool),
    ("disabled-metrics", Value),
    ("emulated-version", Value),
    ("feature-gates", Value),
    ("help", Bool),
    ("http2-max-streams-per-connection", Value),
    ("kube-api-burst", Value),
    ("kube-api-content-type", Value),
    ("kube-api-qps", Value),
    ("kubeconfig", Value),
    ("leader-elect", Bool),
    ("leader-elect-lease-duration", Value),
    ("leader-elect-renew-deadline", Value),
    ("leader-elect-resource-lock", Value),
    ("leader-elect-resource-name", Value),
    ("leader-elect-resource-namespace", Value),
    ("leader-elect-retry-period", Value),
    ("log-flush-frequency", Value),
    ("log-text-info-buffer-size", Value),
    ("log-text-split-stream", Bool),
    ("logging-format", Value),
    ("master", Value),
    ("permit-address-sharing", Bool),
    ("permit-port-sharing", Bool),
    ("profiling", Bool),
    ("requestheader-allowed-names", Value),
    ("requestheader-client-ca-file", Value),
    ("requestheader-extra-headers-prefix", Value),
    ("requestheader-group-headers", Value),
    ("requestheader-uid-headers", Value),
    ("requestheader-username-headers", Value),
    ("secure-port", Value),
    ("show-hidden-metrics-for-version", Value),
    ("tls-cert-file", Value),
    ("tls-cipher-suites", Value),
    ("tls-min-version", Value),
    ("tls-private-key-file", Value),
    ("tls-sni-cert-key", Value),
    ("v", Value),
    ("version", Value),
    ("vmodule", Value),
];

/// kube-controller-manager's own flags: `cmd/kube-controller-manager/app/options/*.go` (one
/// file per controller), the cloud-provider shared options and leader migration.
const CONTROLLER_MANAGER: &FlagTable = &[
    ("allocate-node-cidrs", Bool),
    ("attach-detach-reconcile-sync-period", Value),
    ("cidr-allocator-type", Value),
    ("cloud-config", Value),
    ("cloud-provider", Value),
    ("cluster-cidr", Value),
    ("cluster-name", Value),
    ("cluster-signing-cert-file", Value),
    ("cluster-signing-duration", Value),
    ("cluster-signing-key-file", Value),
    ("cluster-signing-kube-apiserver-client-cert-file", Value),
    ("cluster-signing-kube-apiserver-client-key-file", Value),
    ("cluster-signing-kubelet-client-cert-file", Value),
    ("cluster-signing-kubelet-client-key-file", Value),
    ("cluster-signing-kubelet-serving-cert-file", Value),
    ("cluster-signing-kubelet-serving-key-file", Value),
    ("cluster-signing-legacy-unknown-cert-file", Value),
    ("cluster-signing-legacy-unknown-key-file", Value),
    ("concurrent-cron-job-syncs", Value),
    ("concurrent-deployment-syncs", Value),
    ("concurrent-endpoint-syncs", Value),
    ("concurrent-ephemeralvolume-syncs", Value),
    ("concurrent-gc-syncs", Value),
    ("concurrent-horizontal-pod-autoscaler-syncs", Value),
    ("concurrent-job-syncs", Value),
    ("concurrent-namespace-syncs", Value),
    ("concurrent-rc-syncs", Value),
    ("concurrent-replicaset-syncs", Value),
    ("concurrent-resource-quota-syncs", Value),
    ("concurrent-service-endpoint-syncs", Value),
    ("concurrent-service-syncs", Value),
    ("concurrent-serviceaccount-token-syncs", Value),
    ("concurrent-statefulset-syncs", Value),
    ("concurrent-ttl-after-finished-syncs", Value),
    ("concurrent-validating-admission-policy-status-syncs", Value),
    ("configure-cloud-routes", Bool),
    ("controller-start-interval", Value),
    ("controllers", Value),
    ("disable-attach-detach-reconcile-sync", Bool),
    ("disable-force-detach-on-timeout", Bool),
    ("enable-dynamic-provisioning", Bool),
    ("enable-garbage-collector", Bool),
    ("enable-hostpath-provisioner", Bool),
    ("enable-leader-migration", Bool),
    ("endpoint-updates-batch-period", Value),
    ("endpointslice-updates-batch-period", Value),
    ("external-cloud-volume-plugin", Value),
    ("flex-volume-plugin-dir", Value),
    ("horizontal-pod-autoscaler-cpu-initialization-period", Value),
    ("horizontal-pod-autoscaler-downscale-stabilization", Value),
    ("horizontal-pod-autoscaler-initial-readiness-delay", Value),
    ("horizontal-pod-autoscaler-sync-period", Value),
    ("horizontal-pod-autoscaler-tolerance", Value),
    ("large-cluster-size-threshold", Value),
    ("leader-migration-config", Value),
    ("legacy-service-account-token-clean-up-period", Value),
    ("max-endpoints-per-slice", Value),
    ("min-resync-period", Value),
    ("mirroring-concurrent-service-endpoint-syncs", Value),
    ("mirroring-endpointslice-updates-batch-period", Value),
    ("mirroring-max-endpoints-per-subset", Value),
    ("namespace-sync-period", Value),
    ("node-cidr-mask-size", Value),
    ("node-cidr-mask-size-ipv4", Value),
    ("node-cidr-mask-size-ipv6", Value),
    ("node-eviction-rate", Value),
    ("node-monitor-grace-period", Value),
    ("node-monitor-period", Value),
    ("node-startup-grace-period", Value),
    ("pv-recycler-increment-timeout-nfs", Value),
    ("pv-recycler-minimum-timeout-hostpath", Value),
    ("pv-recycler-minimum-timeout-nfs", Value),
    ("pv-recycler-pod-template-filepath-hostpath", Value),
    ("pv-recycler-pod-template-filepath-nfs", Value),
    ("pv-recycler-timeout-increment-hostpath", Value),
    ("pvclaimbinder-sync-period", Value),
    ("resource-quota-sync-period", Value),
    ("root-ca-file", Value),
    ("route-reconciliation-period", Value),
    ("secondary-node-eviction-rate", Value),
    ("service-account-private-key-file", Value),
    ("service-cluster-ip-range", Value),
    ("terminated-pod-gc-threshold", Value),
    ("unhealthy-zone-threshold", Value),
    ("use-service-account-credentials", Bool),
];

/// kube-scheduler's own flags (`cmd/kube-scheduler/app/options/*.go`).
const SCHEDULER: &FlagTable = &[
    ("config", Value),
    ("pod-max-in-unschedulable-pods-duration", Value),
    ("write-config-to", Value),
];

/// Why a command line was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error(transparent)]
    Flag(#[from] FlagError),
    /// client-go's `NewLeaderElector` refusals, in its words.
    #[error("{0}")]
    Election(&'static str),
}

/// Leader election as `--leader-elect*` configure it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    pub enabled: bool,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    pub namespace: String,
    pub name: String,
}

/// The node lifecycle controller's health settings (kube-controller-manager only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeMonitor {
    pub period: Duration,
    pub grace: Duration,
    pub startup_grace: Duration,
}

/// What the stand-in acts on, from a valid command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub kubeconfig: String,
    pub bind_address: IpAddr,
    /// 0: no HTTPS at all, as the real components.
    pub secure_port: u16,
    /// `--tls-cert-file` and `--tls-private-key-file`; without them a self-signed certificate.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub election: Election,
    pub node_monitor: Option<NodeMonitor>,
}

/// What a command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Version,
    Run(Box<Options>),
}

/// The whole flag table of `component`.
pub fn table(component: Component) -> Vec<(&'static str, Kind)> {
    let own = match component {
        Component::ControllerManager => CONTROLLER_MANAGER,
        Component::Scheduler => SCHEDULER,
    };
    COMMON.iter().chain(own).copied().collect()
}

/// Parses Go's `time.ParseDuration` syntax (`40s`, `1m0s`, `500ms`, `1.5h`), refusing it in
/// Go's words; a negative duration is refused, as none of these settings may be one.
pub fn go_duration(text: &str) -> Result<Duration, String> {
    let quoted = format!("{text:?}");
    let bad = || format!("time: invalid duration {quoted}");
    let body = text.strip_prefix('+').unwrap_or(text);
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.is_empty() || body.starts_with('-') {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = body;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let nanos_per = match unit {
            "" => return Err(format!("time: missing unit in duration {quoted}")),
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            other => return Err(format!("time: unknown unit {other:?} in duration {quoted}")),
        };
        total += number * nanos_per;
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

fn duration(
    given: &BTreeMap<String, String>,
    name: &str,
    default: Duration,
) -> Result<Duration, FlagError> {
    match given.get(name) {
        None => Ok(default),
        Some(v) => go_duration(v).map_err(|reason| invalid(name, v, &reason)),
    }
}

fn election(
    given: &BTreeMap<String, String>,
    component: Component,
) -> Result<Election, ParseError> {
    let text = |name: &str, default: &str| {
        given
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    };
    let election = Election {
        enabled: !given.contains_key("leader-elect") || truthy(given, "leader-elect"),
        lease_duration: duration(
            given,
            "leader-elect-lease-duration",
            Duration::from_secs(15),
        )?,
        renew_deadline: duration(
            given,
            "leader-elect-renew-deadline",
            Duration::from_secs(10),
        )?,
        retry_period: duration(given, "leader-elect-retry-period", Duration::from_secs(2))?,
        namespace: text("leader-elect-resource-namespace", "kube-system"),
        name: text("leader-elect-resource-name", component.name()),
    };
    if !election.enabled {
        return Ok(election);
    }
    // client-go's checks, with its JitterFactor of 1.2.
    if election.lease_duration <= election.renew_deadline {
        return Err(ParseError::Election(
            "leaseDuration must be greater than renewDeadline",
        ));
    }
    if election.renew_deadline.as_secs_f64() <= 1.2 * election.retry_period.as_secs_f64() {
        return Err(ParseError::Election(
            "renewDeadline must be greater than retryPeriod*JitterFactor",
        ));
    }
    if election.retry_period.is_zero() {
        return Err(ParseError::Election(
            "retryPeriod must be greater than zero",
        ));
    }
    Ok(election)
}

/// The node lifecycle controller's settings. Defaults are kube-controller-manager v1.33's:
/// `--node-monitor-period` 5s, `--node-startup-grace-period` 1m0s and
/// `--node-monitor-grace-period` 50s (raised from 40s in v1.32, kubernetes/kubernetes#126287).
fn node_monitor(given: &BTreeMap<String, String>) -> Result<NodeMonitor, FlagError> {
    let monitor = NodeMonitor {
        period: duration(given, "node-monitor-period", Duration::from_secs(5))?,
        grace: duration(given, "node-monitor-grace-period", Duration::from_secs(50))?,
        startup_grace: duration(given, "node-startup-grace-period", Duration::from_secs(60))?,
    };
    if monitor.period.is_zero() {
        let v = &given["node-monitor-period"];
        return Err(invalid(
            "node-monitor-period",
            v,
            "must be greater than zero",
        ));
    }
    Ok(monitor)
}

/// Parses a command line (without the program name) for `component`.
pub fn parse(component: Component, args: &[String]) -> Result<Command, ParseError> {
    let given = collect(args, &table(component))?;
    if truthy(&given, "help") {
        return Ok(Command::Help);
    }
    if truthy(&given, "version") {
        return Ok(Command::Version);
    }
    let path = |name: &str| given.get(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let bind = given.get("bind-address").map_or("0.0.0.0", String::as_str);
    let bind_address = bind
        .parse()
        .map_err(|_| invalid("bind-address", bind, "failed to parse IP"))?;
    let default_port = component.secure_port().to_string();
    let port = given.get("secure-port").unwrap_or(&default_port);
    let secure_port = port
        .parse()
        .map_err(|_| invalid("secure-port", port, "not a port number"))?;
    let tls = match (path("tls-cert-file"), path("tls-private-key-file")) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => return Err(FlagError::Missing("tls-private-key-file").into()),
        (None, Some(_)) => return Err(FlagError::Missing("tls-cert-file").into()),
    };
    let kubeconfig = given
        .get("kubeconfig")
        .filter(|v| !v.is_empty())
        .cloned()
        .ok_or(FlagError::Missing("kubeconfig"))?;
    let node_monitor = match component {
        Component::ControllerManager => Some(node_monitor(&given)?),
        Component::Scheduler => None,
    };
    Ok(Command::Run(Box::new(Options {
        kubeconfig,
        bind_address,
        secure_port,
        tls,
        election: election(&given, component)?,
        node_monitor,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    /// kubeadm v1.33's kube-controller-manager command (`getControllerManagerCommand`).
    const KUBEADM_CONTROLLER_MANAGER: &[&str] = &[
        "--allocate-node-cidrs=true",
        "--authentication-kubeconfig=/etc/kubernetes/controller-manager.conf",
        "--authorization-kubeconfig=/etc/kubernetes/controller-manager.conf",
        "--bind-address=127.0.0.1",
        "--client-ca-file=/etc/kubernetes/pki/ca.crt",
        "--cluster-cidr=10.244.0.0/16",
        "--cluster-name=kubernetes",
        "--cluster-signing-cert-file=/etc/kubernetes/pki/ca.crt",
        "--cluster-signing-key-file=/etc/kubernetes/pki/ca.key",
        "--controllers=*,bootstrapsigner,tokencleaner",
        "--kubeconfig=/etc/kubernetes/controller-manager.conf",
        "--leader-elect=true",
        "--requestheader-client-ca-file=/etc/kubernetes/pki/front-proxy-ca.crt",
        "--root-ca-file=/etc/kubernetes/pki/ca.crt",
        "--service-account-private-key-file=/etc/kubernetes/pki/sa.key",
        "--service-cluster-ip-range=10.96.0.0/12",
        "--use-service-account-credentials=true",
    ];

    const KUBEADM_SCHEDULER: &[&str] = &[
        "--authentication-kubeconfig=/etc/kubernetes/scheduler.conf",
        "--authorization-kubeconfig=/etc/kubernetes/scheduler.conf",
        "--bind-address=127.0.0.1",
        "--kubeconfig=/etc/kubernetes/scheduler.conf",
        "--leader-elect=true",
    ];

    fn run(component: Component, line: &[&str]) -> Options {
        match parse(component, &args(line)).unwrap() {
            Command::Run(options) => *options,
            other => panic!("not a run: {other:?}"),
        }
    }

    #[test]
    fn kubeadm_command_lines_parse_with_the_real_defaults() {
        let cm = run(Component::ControllerManager, KUBEADM_CONTROLLER_MANAGER);
        assert_eq!(cm.kubeconfig, "/etc/kubernetes/controller-manager.conf");
        assert_eq!(
            (cm.bind_address.to_string(), cm.secure_port),
            ("127.0.0.1".into(), 10257)
        );
        assert_eq!(cm.tls, None);
        assert_eq!(
            cm.election,
            Election {
                enabled: true,
                lease_duration: Duration::from_secs(15),
                renew_deadline: Duration::from_secs(10),
                retry_period: Duration::from_secs(2),
                namespace: "kube-system".into(),
                name: "kube-controller-manager".into(),
            }
        );
        assert_eq!(
            cm.node_monitor,
            Some(NodeMonitor {
                period: Duration::from_secs(5),
                grace: Duration::from_secs(50),
                startup_grace: Duration::from_secs(60),
            })
        );
        let sched = run(Component::Scheduler, KUBEADM_SCHEDULER);
        assert_eq!((sched.secure_port, sched.node_monitor), (10259, None));
        assert_eq!(sched.election.name, "kube-scheduler");
        let mut line = KUBEADM_CONTROLLER_MANAGER.to_vec();
        line.extend([
            "--node-monitor-grace-period=6s",
            "--leader-elect-lease-duration",
            "1m0s",
        ]);
        let cm = run(Component::ControllerManager, &line);
        assert_eq!(cm.node_monitor.unwrap().grace, Duration::from_secs(6));
        assert_eq!(cm.election.lease_duration, Duration::from_secs(60));
        for (component, line) in [
            (Component::ControllerManager, ["--help"]),
            (Component::Scheduler, ["--help"]),
        ] {
            assert_eq!(parse(component, &args(&line)).unwrap(), Command::Help);
        }
        assert_eq!(
            parse(Component::Scheduler, &args(&["--version"])).unwrap(),
            Command::Version
        );
    }

    #[test]
    fn go_durations_parse_as_go_parses_them() {
        for (text, want) in [
            ("40s", Duration::from_secs(40)),
            ("1m0s", Duration::from_secs(60)),
            ("500ms", Duration::from_millis(500)),
            ("1.5h", Duration::from_secs(5400)),
            ("1h2m3s", Duration::from_secs(3723)),
            ("0", Duration::ZERO),
            ("+2s", Duration::from_secs(2)),
            ("10us", Duration::from_micros(10)),
        ] {
            assert_eq!(go_duration(text), Ok(want), "{text}");
        }
        for (text, want) in [
            ("", "time: invalid duration \"\""),
            ("x", "time: invalid duration \"x\""),
            ("5", "time: missing unit in duration \"5\""),
            ("5d", "time: unknown unit \"d\" in duration \"5d\""),
            ("-1s", "time: invalid duration \"-1s\""),
            ("1.2.3s", "time: invalid duration \"1.2.3s\""),
        ] {
            assert_eq!(go_duration(text).unwrap_err(), want, "{text:?}");
        }
    }

    #[test]
    fn bad_command_lines_are_refused_with_the_exact_error() {
        use Component::{ControllerManager as Cm, Scheduler as Sched};
        let cases: &[(Component, &[&str], &str)] = &[
            (Cm, &["--no-such-flag=1"], "unknown flag: --no-such-flag"),
            (
                Sched,
                &["--node-monitor-period=5s"],
                "unknown flag: --node-monitor-period",
            ),
            (Cm, &["--config=/x"], "unknown flag: --config"),
            (
                Cm,
                &["--leader-elect=maybe"],
                "invalid argument \"maybe\" for \"--leader-elect\" \
                flag: strconv.ParseBool: parsing failed",
            ),
            (
                Cm,
                &["--node-monitor-grace-period=6"],
                "invalid argument \"6\" for \
                \"--node-monitor-grace-period\" flag: time: missing unit in duration \"6\"",
            ),
            (
                Sched,
                &["--leader-elect-retry-period=2x"],
                "invalid argument \"2x\" for \
                \"--leader-elect-retry-period\" flag: time: unknown unit \"x\" in duration \"2x\"",
            ),
            (
                Cm,
                &["--secure-port=http"],
                "invalid argument \"http\" for \"--secure-port\" \
                flag: not a port number",
            ),
            (
                Cm,
                &["--bind-address=localhost"],
                "invalid argument \"localhost\" for \
                \"--bind-address\" flag: failed to parse IP",
            ),
            (
                Cm,
                &["--leader-elect-lease-duration=10s"],
                "leaseDuration must be greater than renewDeadline",
            ),
            (
                Sched,
                &["--leader-elect-retry-period=9s"],
                "renewDeadline must be greater than retryPeriod*JitterFactor",
            ),
            (
                Cm,
                &["--tls-cert-file=/c.crt"],
                "--tls-private-key-file must be specified",
            ),
            (Cm, &["--kubeconfig="], "--kubeconfig must be specified"),
            (
                Cm,
                &["--secure-port"],
                "flag needs an argument: --secure-port",
            ),
            (Cm, &["-v=2"], "bad flag syntax: -v=2"),
        ];
        for (component, extra, want) in cases {
            let mut line = args(&["--kubeconfig=/etc/kubernetes/x.conf"]);
            line.extend(args(extra));
            let got = parse(*component, &line).unwrap_err().to_string();
            assert_eq!(got, *want, "{component:?} {extra:?}");
        }
        assert_eq!(
            parse(Cm, &args(&["--leader-elect=false"]))
                .unwrap_err()
                .to_string(),
            "--kubeconfig must be specified"
        );
    }
}
