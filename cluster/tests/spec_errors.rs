//! Bad cluster specs: each is refused with its exact `FILE:LINE:COL: field: message` error.

use cluster::spec::ClusterSpec;
use testkit::fixtures::{ClusterFile, host};

/// The demo file with schedulable masters, an inventory master and a host of no role; the
/// line and column of every error below are this text's.
fn base() -> String {
    ClusterFile {
        schedulable_masters: true,
        hosts: vec![host(1, Some("master")), host(2, None)],
        ..ClusterFile::demo()
    }
    .render()
}

/// The base spec with `from` replaced by `to` (which must occur exactly once).
fn edit(from: &str, to: &str) -> String {
    let base = base();
    assert_eq!(
        base.matches(from).count(),
        1,
        "{from:?} must occur once in the base spec"
    );
    base.replace(from, to)
}

/// The base spec with an `[cluster.api_server_extra_args]` table (line 11) of `entries`.
fn with_args(entries: &str) -> String {
    edit(
        "key_algorithm = \"ecdsa-p256\"",
        &format!("key_algorithm = \"ecdsa-p256\"\n[cluster.api_server_extra_args]\n{entries}"),
    )
}

fn error_of(text: &str) -> String {
    match ClusterSpec::parse("c.toml", text) {
        Ok(_) => "parsed without error".to_owned(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn base_spec_parses() {
    let parsed = ClusterSpec::parse("c.toml", &base()).unwrap();
    assert_eq!(parsed.spec.hosts.len(), 2);
    assert_eq!(
        parsed.warnings,
        [
            "c.toml:8:11: field `cluster.masters`: 3 masters wanted but only 2 inventory host(s) can be one (role \"master\" or \"auto\"); the others must enroll by token or approval"
        ]
    );
}

#[test]
fn every_bad_input_gets_its_exact_error() {
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown field",
            edit("masters = 3", "masters = 3\nmastres = 3"),
            "c.toml:9:1: field `cluster.mastres`: unknown field `mastres`, expected one of `name`, `kubernetes_version`, `control_plane_endpoint`, `pod_subnet`, `service_subnet`, `dns_domain`, `masters`, `schedulable_masters`, `key_algorithm`, `ignore_preflight_errors`, `skip_phases`, `etcd_heartbeat_interval_ms`, `etcd_election_timeout_ms`, `api_server_extra_args`",
        ),
        (
            "unknown table field",
            edit("registry = ", "registy = \"x\"\nregistry = "),
            "c.toml:14:1: field `seed.registy`: unknown field `registy`, expected `url` or `registry`",
        ),
        (
            "unknown host field",
            edit("role = \"master\"", "role = \"master\"\nname = \"a\""),
            "c.toml:20:1: field `hosts[0].name`: unknown field `name`, expected one of `mac`, `ip`, `role`, `hostname`, `uuid`, `serial`",
        ),
        (
            "missing field",
            edit("pod_subnet = \"10.244.0.0/16\"\n", ""),
            "c.toml:1:1: field `cluster.pod_subnet`: missing field `pod_subnet`",
        ),
        (
            "wrong type",
            edit("masters = 3", "masters = \"3\""),
            "c.toml:8:11: field `cluster.masters`: invalid type: string \"3\", expected an integer",
        ),
        (
            "toml syntax",
            edit("masters = 3", "masters = = 3"),
            "c.toml:8:11: field `cluster.masters`: invalid string; expected `\"`, `'`",
        ),
        (
            "bad cidr",
            edit("10.244.0.0/16", "10.244.0.0/33"),
            "c.toml:5:14: field `cluster.pod_subnet`: \"10.244.0.0/33\" has prefix length \"33\"; expected 0 to 32",
        ),
        (
            "cidr host bits",
            edit("10.244.0.0/16", "10.244.0.1/16"),
            "c.toml:5:14: field `cluster.pod_subnet`: \"10.244.0.1/16\" has host bits set; the network is 10.244.0.0/16",
        ),
        (
            "overlapping subnets",
            edit("10.244.0.0/16", "10.96.0.0/16"),
            "c.toml:6:18: field `cluster.service_subnet`: 10.96.0.0/12 overlaps pod_subnet 10.96.0.0/16; pod and service subnets must not share addresses",
        ),
        (
            "service subnet too big",
            edit("10.96.0.0/12", "10.0.0.0/8"),
            "c.toml:6:18: field `cluster.service_subnet`: 10.0.0.0/8 is too large: kubeadm takes a service subnet of /12 or smaller",
        ),
        (
            "pod subnet too small",
            edit("10.244.0.0/16", "10.244.0.0/25"),
            "c.toml:5:14: field `cluster.pod_subnet`: 10.244.0.0/25 is smaller than the /24 each node is given; use /24 or larger",
        ),
        (
            "mixed families",
            edit("10.96.0.0/12", "fd00:10:96::/112"),
            "c.toml:6:18: field `cluster.service_subnet`: fd00:10:96::/112 and pod_subnet 10.244.0.0/16 are of different IP families; use one family for both (dual-stack is not supported)",
        ),
        (
            "zero masters",
            edit("masters = 3", "masters = 0"),
            "c.toml:8:11: field `cluster.masters`: 0 masters: a cluster needs at least 1 (3 to survive the loss of one)",
        ),
        (
            "old version",
            edit("v1.33.4", "v1.21.3"),
            "c.toml:3:22: field `cluster.kubernetes_version`: v1.21.3 cannot be rendered: kubeadm config v1beta3 needs v1.22.0 or later",
        ),
        (
            "future version",
            edit("v1.33.4", "v1.36.0"),
            "c.toml:3:22: field `cluster.kubernetes_version`: v1.36.0 is newer than this project knows: its kubeadm image tags are known up to v1.35",
        ),
        (
            "version without v",
            edit("v1.33.4", "1.33.4"),
            "c.toml:3:22: field `cluster.kubernetes_version`: \"1.33.4\" is not a version: expected vMAJOR.MINOR.PATCH like v1.33.4",
        ),
        (
            "endpoint without port",
            edit("10.77.0.10:6443", "10.77.0.10"),
            "c.toml:4:26: field `cluster.control_plane_endpoint`: \"10.77.0.10\" has no port; expected host:port like 10.77.0.10:6443",
        ),
        (
            "endpoint in service subnet",
            edit("10.77.0.10:6443", "10.96.0.1:6443"),
            "c.toml:4:26: field `cluster.control_plane_endpoint`: 10.96.0.1 is inside cluster.service_subnet 10.96.0.0/12; machine addresses must be outside the pod and service subnets",
        ),
        (
            "bad mac",
            edit("52:54:00:00:00:02", "52:54:00:00:02"),
            "c.toml:22:7: field `hosts[1].mac`: \"52:54:00:00:02\" is not a MAC address: expected six hex pairs like 52:54:00:00:00:01 (or 52-54-00-00-00-01)",
        ),
        (
            "multicast mac",
            edit("52:54:00:00:00:02", "01:00:5e:00:00:02"),
            "c.toml:22:7: field `hosts[1].mac`: \"01:00:5e:00:00:02\" is a multicast address, not a network card's",
        ),
        (
            "duplicate mac",
            edit("52:54:00:00:00:02", "52-54-00-00-00-01"),
            "c.toml:22:7: field `hosts[1].mac`: duplicate MAC 52:54:00:00:00:01: hosts[0] (line 16) has it already",
        ),
        (
            "duplicate ip",
            edit("10.77.0.12", "10.77.0.11"),
            "c.toml:23:6: field `hosts[1].ip`: duplicate IP 10.77.0.11: hosts[0] (line 16) has it already",
        ),
        (
            "duplicate hostname",
            edit("role = \"master\"", "role = \"master\"\nhostname = \"cp\"").replace(
                "ip = \"10.77.0.12\"",
                "ip = \"10.77.0.12\"\nhostname = \"cp\"",
            ),
            "c.toml:25:12: field `hosts[1].hostname`: duplicate hostname cp: hosts[0] (line 16) has it already",
        ),
        (
            "bad hostname",
            edit("role = \"master\"", "hostname = \"Node_1\""),
            "c.toml:19:12: field `hosts[0].hostname`: \"Node_1\" contains 'N'; only lowercase letters, digits, '-' and '.' are allowed",
        ),
        (
            "generated-looking hostname",
            edit("role = \"master\"", "hostname = \"demo-w7\""),
            "c.toml:19:12: field `hosts[0].hostname`: demo-w7 has the form of a generated name (demo-m<n>, demo-w<n>) and could clash with one; choose another or leave it unset",
        ),
        (
            "host ip is the seed's",
            edit("10.77.0.12", "10.77.0.1"),
            "c.toml:23:6: field `hosts[1].ip`: 10.77.0.1 is the seed's address (seed.url)",
        ),
        (
            "host ip in pod subnet",
            edit("10.77.0.12", "10.244.3.4"),
            "c.toml:23:6: field `hosts[1].ip`: 10.244.3.4 is inside cluster.pod_subnet 10.244.0.0/16; machine addresses must be outside the pod and service subnets",
        ),
        (
            "bad role",
            edit("role = \"master\"", "role = \"controller\""),
            "c.toml:19:8: field `hosts[0].role`: \"controller\" is not a role; expected \"master\", \"worker\" or \"auto\"",
        ),
        (
            "more explicit masters than seats",
            edit("masters = 3", "masters = 1").replace(
                "ip = \"10.77.0.12\"",
                "ip = \"10.77.0.12\"\nrole = \"master\"",
            ),
            "c.toml:24:8: field `hosts[1].role`: this is host number 2 with role \"master\" but cluster.masters = 1; raise cluster.masters or make it a worker",
        ),
        (
            "seed url http",
            edit("https://10.77.0.1:8443", "http://10.77.0.1:8443"),
            "c.toml:13:7: field `seed.url`: \"http://10.77.0.1:8443\" is not an https URL; expected https://HOST:PORT like https://10.77.0.1:8443",
        ),
        (
            "seed url without port",
            edit("https://10.77.0.1:8443", "https://10.77.0.1"),
            "c.toml:13:7: field `seed.url`: \"https://10.77.0.1\" has no port; expected https://HOST:PORT like https://10.77.0.1:8443",
        ),
        (
            "seed url with path",
            edit("https://10.77.0.1:8443", "https://10.77.0.1:8443/v1"),
            "c.toml:13:7: field `seed.url`: \"https://10.77.0.1:8443/v1\" has a path, query or user part; expected https://HOST:PORT like https://10.77.0.1:8443",
        ),
        (
            "registry with scheme",
            edit(
                "registry = \"10.77.0.1:8443\"",
                "registry = \"https://10.77.0.1:8443\"",
            ),
            "c.toml:14:12: field `seed.registry`: \"https://10.77.0.1:8443\" is not a registry host; expected host[:port] without scheme or path, like 10.77.0.1:8443",
        ),
        (
            "bad key algorithm",
            edit("ecdsa-p256", "ed25519"),
            "c.toml:10:17: field `cluster.key_algorithm`: \"ed25519\" is not a key algorithm; expected \"ecdsa-p256\" or \"rsa-2048\"",
        ),
        (
            "bad preflight check name",
            edit(
                "key_algorithm = \"ecdsa-p256\"",
                "key_algorithm = \"ecdsa-p256\"\nignore_preflight_errors = [\"NumCPU\", \"Mem ory\"]",
            ),
            "c.toml:11:38: field `cluster.ignore_preflight_errors`: \"Mem ory\" is not a preflight check name (letters, digits, '-', '_' and '.', like NumCPU or Port-6443)",
        ),
        (
            "unknown init phase",
            edit(
                "key_algorithm = \"ecdsa-p256\"",
                "key_algorithm = \"ecdsa-p256\"\nskip_phases = [\"mark-controlplane\"]",
            ),
            "c.toml:11:16: field `cluster.skip_phases`: \"mark-controlplane\" is not a kubeadm init phase (one of preflight, certs, kubeconfig, etcd, control-plane, kubelet-start, wait-control-plane, upload-config, upload-certs, mark-control-plane, bootstrap-token, kubelet-finalize, addon, show-join-command, or phase/subphase)",
        ),
        (
            "init subphase not a name",
            edit(
                "key_algorithm = \"ecdsa-p256\"",
                "key_algorithm = \"ecdsa-p256\"\nskip_phases = [\"addon/\"]",
            ),
            "c.toml:11:16: field `cluster.skip_phases`: \"addon/\" is not a kubeadm init phase (one of preflight, certs, kubeconfig, etcd, control-plane, kubelet-start, wait-control-plane, upload-config, upload-certs, mark-control-plane, bootstrap-token, kubelet-finalize, addon, show-join-command, or phase/subphase)",
        ),
        (
            "etcd election timeout under 5 heartbeats",
            edit(
                "key_algorithm = \"ecdsa-p256\"",
                "key_algorithm = \"ecdsa-p256\"\netcd_heartbeat_interval_ms = 250\netcd_election_timeout_ms = 1000",
            ),
            "c.toml:12:28: field `cluster.etcd_election_timeout_ms`: an election timeout of 1000 ms is under 5 heartbeat intervals (250 ms): etcd refuses it",
        ),
        (
            "etcd heartbeat alone above a fifth of the default timeout",
            edit(
                "key_algorithm = \"ecdsa-p256\"",
                "key_algorithm = \"ecdsa-p256\"\netcd_heartbeat_interval_ms = 500",
            ),
            "c.toml:11:30: field `cluster.etcd_election_timeout_ms`: an election timeout of 1000 ms is under 5 heartbeat intervals (500 ms): etcd refuses it",
        ),
        (
            "etcd election timeout too long",
            edit(
                "key_algorithm = \"ecdsa-p256\"",
                "key_algorithm = \"ecdsa-p256\"\netcd_election_timeout_ms = 50000",
            ),
            "c.toml:11:28: field `cluster.etcd_election_timeout_ms`: an election timeout of 50000 ms is too long: etcd takes less than 50000 ms",
        ),
        (
            "etcd heartbeat zero",
            edit(
                "key_algorithm = \"ecdsa-p256\"",
                "key_algorithm = \"ecdsa-p256\"\netcd_heartbeat_interval_ms = 0",
            ),
            "c.toml:11:30: field `cluster.etcd_heartbeat_interval_ms`: 0 ms: must be a positive number of milliseconds",
        ),
        (
            "etcd election timeout negative",
            edit(
                "key_algorithm = \"ecdsa-p256\"",
                "key_algorithm = \"ecdsa-p256\"\netcd_election_timeout_ms = -5",
            ),
            "c.toml:11:28: field `cluster.etcd_election_timeout_ms`: -5 ms: must be a positive number of milliseconds",
        ),
        (
            "etcd timing as a string",
            edit(
                "key_algorithm = \"ecdsa-p256\"",
                "key_algorithm = \"ecdsa-p256\"\netcd_election_timeout_ms = \"5s\"",
            ),
            "c.toml:11:28: field `cluster.etcd_election_timeout_ms`: invalid type: string \"5s\", expected an integer",
        ),
        (
            "extra arg name with dashes",
            with_args("\"--oidc-issuer-url\" = \"https://login.example.com\""),
            "c.toml:12:1: field `cluster.api_server_extra_args`: \"--oidc-issuer-url\" starts with '-'; write the flag's name without its dashes: \"oidc-issuer-url\"",
        ),
        (
            "extra arg name with its value",
            with_args("\"audit-log-maxage=30\" = \"\""),
            "c.toml:12:1: field `cluster.api_server_extra_args`: \"audit-log-maxage=30\" contains '='; write the value separately: \"audit-log-maxage\" = \"30\"",
        ),
        (
            "extra arg name empty",
            with_args("\"\" = \"x\""),
            "c.toml:12:1: field `cluster.api_server_extra_args`: the flag name is empty",
        ),
        (
            "extra arg name too long",
            with_args(&format!("{} = \"x\"", "a".repeat(65))),
            "c.toml:12:1: field `cluster.api_server_extra_args`: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" is 65 characters; a flag name has at most 64",
        ),
        (
            "extra arg name in capitals",
            with_args("Audit-Log-Maxage = \"30\""),
            "c.toml:12:1: field `cluster.api_server_extra_args`: \"Audit-Log-Maxage\" contains 'A'; a flag name has only lowercase letters, digits and '-'",
        ),
        (
            "extra arg value a number",
            with_args("audit-log-maxage = 30"),
            "c.toml:12:20: field `cluster.api_server_extra_args.audit-log-maxage`: invalid type: integer `30`, expected a string",
        ),
        (
            "extra arg value too long",
            with_args(&format!("oidc-issuer-url = \"{}\"", "x".repeat(1025))),
            "c.toml:12:19: field `cluster.api_server_extra_args.oidc-issuer-url`: the value is 1025 bytes; at most 1024",
        ),
        (
            "extra arg value over two lines",
            with_args("oidc-issuer-url = \"https://a\\nb\""),
            "c.toml:12:19: field `cluster.api_server_extra_args.oidc-issuer-url`: the value contains '\\n'; a flag's value has no control characters",
        ),
        (
            "too many extra args",
            with_args(
                &(0..65)
                    .map(|i| format!("flag-{i} = \"x\""))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            "c.toml:11:1: field `cluster.api_server_extra_args`: 65 flags; at most 64",
        ),
        (
            "extra arg of a cluster setting",
            with_args("profiling = \"true\"\nservice-cluster-ip-range = \"10.0.0.0/16\""),
            "c.toml:13:1: field `cluster.api_server_extra_args`: --service-cluster-ip-range cannot be overridden: cluster.service_subnet decides it",
        ),
        (
            "extra arg of a certificate Launcher issues",
            with_args("tls-cert-file = \"/etc/kubernetes/pki/mine.crt\""),
            "c.toml:12:1: field `cluster.api_server_extra_args`: --tls-cert-file cannot be overridden: Launcher sets it to match the certificates and keys the seed issues",
        ),
        (
            "extra arg of the authorization mode",
            with_args("authorization-mode = \"RBAC\""),
            "c.toml:12:1: field `cluster.api_server_extra_args`: --authorization-mode cannot be overridden: Launcher sets it to Node,RBAC (kubelets need the Node authorizer)",
        ),
        (
            "extra arg of etcd",
            with_args("etcd-servers = \"https://10.77.0.99:2379\""),
            "c.toml:12:1: field `cluster.api_server_extra_args`: --etcd-servers cannot be overridden: Launcher sets it for the etcd it runs on the masters",
        ),
        (
            "extra args inline, first bad in file order",
            edit(
                "key_algorithm = \"ecdsa-p256\"",
                "key_algorithm = \"ecdsa-p256\"\napi_server_extra_args = { \"z-flag\" = \"x\", \"--a-flag\" = \"y\" }",
            ),
            "c.toml:11:43: field `cluster.api_server_extra_args`: \"--a-flag\" starts with '-'; write the flag's name without its dashes: \"a-flag\"",
        ),
        (
            "extra args as a list",
            edit(
                "key_algorithm = \"ecdsa-p256\"",
                "key_algorithm = \"ecdsa-p256\"\napi_server_extra_args = [\"--profiling=true\"]",
            ),
            "c.toml:11:25: field `cluster.api_server_extra_args`: invalid type: sequence, expected a map",
        ),
        (
            "bad cluster name",
            edit("name = \"demo\"", "name = \"demo.lab\""),
            "c.toml:2:8: field `cluster.name`: \"demo.lab\" contains '.'; a cluster name is a single DNS label",
        ),
        (
            "bad uuid",
            edit(
                "ip = \"10.77.0.12\"",
                "ip = \"10.77.0.12\"\nuuid = \"1234\"",
            ),
            "c.toml:24:8: field `hosts[1].uuid`: \"1234\" is not a UUID: expected 8-4-4-4-12 hex digits like 4c4c4544-0042-3510-8050-b4c04f4b4d32",
        ),
        (
            "bad dns domain",
            edit("cluster.local", "cluster..local"),
            "c.toml:7:14: field `cluster.dns_domain`: \"cluster..local\" has an empty label (two dots, or a dot at an end)",
        ),
        (
            "empty file",
            String::new(),
            "c.toml:1:1: field `cluster`: missing field `cluster`",
        ),
        (
            "hosts as a table",
            base().replacen("[[hosts]]", "[hosts]", 1).replacen(
                "[[hosts]]\nmac = \"52:54:00:00:00:02\"\nip = \"10.77.0.12\"\n",
                "",
                1,
            ),
            "c.toml:16:1: field `hosts`: invalid type: map, expected a sequence; write each host as its own [[hosts]] table",
        ),
        (
            "negative masters",
            edit("masters = 3", "masters = -1"),
            "c.toml:8:11: field `cluster.masters`: -1 masters: a cluster needs at least 1 (3 to survive the loss of one)",
        ),
    ];
    let mut failures = Vec::new();
    for (name, text, expected) in &cases {
        let got = error_of(text);
        if got != *expected {
            failures.push(format!(
                "{name}:\n  expected: {expected}\n  got:      {got}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
