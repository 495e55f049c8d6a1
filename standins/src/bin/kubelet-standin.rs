//! `kubelet-standin`: a stand-in for Kubernetes' kubelet that checks and records its flags.

use anyhow::{Context, bail};
use standins::kubeclient::KubeClient;
use std::path::PathBuf;

use standins::kubelet::node::{self, NodeAgent, NodeFacts};
use standins::kubelet::pods;
use standins::{RECORD_DIR, Root, kubelet};

const HELP: &str = "kubelet-standin: a STAND-IN for Kubernetes' kubelet, not the kubelet itself.

It checks its configuration and records it, then (unless --exit-after-checks) stays running like
the daemon: it registers its Node with the API server of --kubeconfig (the well-known labels,
--node-labels, registerWithTaints or --register-with-taints, its address) and renews its Lease in
kube-node-lease and its Ready condition every 10 s, retrying while the server does not answer;
and it runs the static Pods of the configuration's staticPodPath through containerd (at
--container-runtime-endpoint, `ctr` in the k8s.io namespace): each image pulled by the node's
/etc/containerd/certs.d mirrors unless present, run with the host's network and the manifest's
hostPath volumes, started again when it stops or its manifest changes (its last output line is
reported), stopped when its manifest is gone. Output, where the kubelet keeps it:
/var/log/pods/<namespace>_<pod>_<uid>/<container>/0.log.

usage:
  kubelet-standin --config FILE --kubeconfig FILE [--exit-after-checks]
                  [--bootstrap-kubeconfig FILE] [--container-runtime-endpoint X]
                  [--node-ip X] [--hostname-override X] [--node-labels k=v,...]
                  [--register-with-taints key[=value]:Effect,...]

Checks: --config is one kubelet.config.k8s.io/v1beta1 KubeletConfiguration whose client CA and
TLS files exist; --kubeconfig is a v1 Config whose current context has an https server, a CA and
a client certificate and key (inline or existing files). --bootstrap-kubeconfig (which kubeadm's
kubelet drop-in always passes) is recorded; like the kubelet, it is not read while --kubeconfig
exists, and the stand-in needs --kubeconfig. Any other flag is refused.
Records: /var/lib/launcher/standin/kubelet.json (argv, checks) and kubelet-config.yaml.
LAUNCHER_STANDIN_ROOT places every path under another directory.";

#[derive(Debug, Default)]
struct Flags {
    config: Option<String>,
    kubeconfig: Option<String>,
    bootstrap_kubeconfig: Option<String>,
    node_ip: Option<String>,
    hostname_override: Option<String>,
    node_labels: Option<String>,
    register_with_taints: Option<String>,
    runtime_endpoint: Option<String>,
    exit: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Option<Flags>> {
    let mut f = Flags::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        let mut value = || inline.clone().or_else(|| it.next().cloned());
        match name {
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(None);
            }
            "--exit-after-checks" => f.exit = true,
            "--config" => f.config = value(),
            "--kubeconfig" => f.kubeconfig = value(),
            "--bootstrap-kubeconfig" => {
                f.bootstrap_kubeconfig = value();
                if f.bootstrap_kubeconfig.is_none() {
                    bail!("{name} needs a value");
                }
            }
            "--container-runtime-endpoint"
            | "--node-ip"
            | "--hostname-override"
            | "--node-labels"
            | "--register-with-taints" => {
                let Some(v) = value() else {
                    bail!("{name} needs a value");
                };
                match name {
                    "--node-ip" => f.node_ip = Some(v),
                    "--hostname-override" => f.hostname_override = Some(v),
                    "--node-labels" => f.node_labels = Some(v),
                    "--register-with-taints" => f.register_with_taints = Some(v),
                    "--container-runtime-endpoint" => f.runtime_endpoint = Some(v),
                    _ => {}
                }
            }
            other => bail!("kubelet-standin does not accept {other:?} (see --help)"),
        }
    }
    if f.config.is_none() || f.kubeconfig.is_none() {
        bail!("kubelet-standin needs --config FILE and --kubeconfig FILE");
    }
    Ok(Some(f))
}

/// The Node this kubelet registers: its name (`--hostname-override`, else the host name), its
/// address, labels and taints (the flag, else the configuration's `registerWithTaints`).
fn node_facts(root: &Root, flags: &Flags, config_text: &str) -> anyhow::Result<NodeFacts> {
    let name = match &flags.hostname_override {
        Some(name) => name.clone(),
        None => standins::read(root, "/proc/sys/kernel/hostname")
            .or_else(|_| standins::read(root, "/etc/hostname"))
            .context("finding the node name (no --hostname-override)")?
            .trim()
            .to_lowercase(),
    };
    let labels = node::parse_labels(flags.node_labels.as_deref().unwrap_or(""))
        .map_err(|e| anyhow::anyhow!("--node-labels: {e}"))?;
    let taints = match &flags.register_with_taints {
        Some(flag) => {
            node::parse_taints(flag).map_err(|e| anyhow::anyhow!("--register-with-taints: {e}"))?
        }
        None => {
            let config: serde_yaml::Value = serde_yaml::from_str(config_text)?;
            let config = serde_json::to_value(config)?;
            config["registerWithTaints"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        }
    };
    let kubelet_version = std::env::var("KUBELET_STANDIN_VERSION")
        .ok()
        .or_else(|| standins::read(root, "/etc/launcher/kubernetes-version").ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| format!("v{}-standin", env!("CARGO_PKG_VERSION")));
    let host = |path: &str| standins::read(root, path).unwrap_or_default();
    let ip = flags
        .node_ip
        .clone()
        .or_else(|| node::host_ip(&name, &host("/proc/net/route")).map(|ip| ip.to_string()));
    Ok(NodeFacts {
        name,
        ip,
        labels,
        taints,
        kubelet_version,
        os_image: node::os_image(&host("/etc/os-release")),
        kernel_version: host("/proc/sys/kernel/osrelease").trim().to_owned(),
        runtime_version: runtime_version(),
    })
}

/// `containerd://<version>` from `containerd --version` (`containerd github.com/… 1.6.20 …`).
fn runtime_version() -> String {
    let out = std::process::Command::new("containerd")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let version = out.split_whitespace().nth(2).unwrap_or("unknown");
    format!("containerd://{}", version.trim_start_matches('v'))
}

/// What the daemon runs: the Node's registration and renewal, and the static Pods of
/// `staticPodPath` when the configuration names one.
struct Kubelet {
    agent: NodeAgent,
    pods: Option<(pods::Ctr, PathBuf, String)>,
}

/// The static Pods' runtime: containerd at the runtime endpoint, the node's registry mirrors.
fn static_pods(
    root: &Root,
    flags: &Flags,
    config_text: &str,
    node: &str,
) -> anyhow::Result<Option<(pods::Ctr, PathBuf, String)>> {
    let config: serde_yaml::Value = serde_yaml::from_str(config_text)?;
    let Some(dir) = config.get("staticPodPath").and_then(|v| v.as_str()) else {
        return Ok(None);
    };
    let endpoint = flags
        .runtime_endpoint
        .as_deref()
        .unwrap_or("unix:///run/containerd/containerd.sock");
    let Some(socket) = endpoint.strip_prefix("unix://") else {
        bail!("--container-runtime-endpoint {endpoint:?} is not a unix:// socket");
    };
    let under = |p: &str| root.path(p).display().to_string();
    let ctr = pods::Ctr {
        address: under(socket),
        hosts_dir: under("/etc/containerd/certs.d"),
        log_dir: under("/var/log/pods"),
        root: root.clone(),
        no_pivot: standins::read(root, "/etc/containerd/config.toml")
            .is_ok_and(|c| pods::no_pivot_root(&c)),
        known: Default::default(),
    };
    Ok(Some((ctr, root.path(dir), node.to_string())))
}

/// Checks and records; then what the daemon runs, unless `--exit-after-checks`.
fn run(args: &[String]) -> anyhow::Result<Option<Kubelet>> {
    let Some(flags) = parse(args)? else {
        return Ok(None);
    };
    let root = Root::from_env();
    let (config, kubeconfig) = (
        flags.config.clone().unwrap(),
        flags.kubeconfig.clone().unwrap(),
    );
    let mut files = Vec::new();
    let config_text = standins::read(&root, &config)?;
    kubelet::check_config(&root, &config, &config_text, &mut files)
        .map_err(|e| anyhow::anyhow!("refused: {e}"))?;
    let kubeconfig_text = standins::read(&root, &kubeconfig)?;
    let server = kubelet::check_kubeconfig(&root, &kubeconfig, &kubeconfig_text, &mut files)
        .map_err(|e| anyhow::anyhow!("refused: {e}"))?;
    let client = KubeClient::from_kubeconfig(&root, &kubeconfig)
        .map_err(|e| anyhow::anyhow!("refused: {e}"))?;
    let facts = node_facts(&root, &flags, &config_text)?;
    standins::write(
        &root,
        &format!("{RECORD_DIR}/kubelet-config.yaml"),
        config_text.as_bytes(),
    )?;
    let record = serde_json::json!({
        "standin_for": "kubelet",
        "argv": std::env::args().collect::<Vec<_>>(),
        "config": config,
        "kubeconfig": kubeconfig,
        "bootstrap_kubeconfig": flags.bootstrap_kubeconfig,
        "server": server,
        "node": facts.name,
        "files": files,
    });
    standins::write(
        &root,
        &format!("{RECORD_DIR}/kubelet.json"),
        serde_json::to_vec_pretty(&record)?.as_slice(),
    )?;
    println!(
        "kubelet-standin: config and kubeconfig accepted (server {server}, node {})",
        facts.name
    );
    let pods = static_pods(&root, &flags, &config_text, &facts.name)?;
    Ok((!flags.exit).then(|| Kubelet {
        agent: NodeAgent::new(client, facts),
        pods,
    }))
}

/// Registers and renews on one thread and runs the static Pods on another, until stopped
/// (systemd stops it with SIGTERM), printing each change and each new error once rather than
/// every tick. As in the kubelet, the Node's status does not wait on the Pods: pulling an image
/// or starting a container can take minutes on a slow host, and `kubeadm join` waits for the
/// Node meanwhile.
fn serve(kubelet: Kubelet) -> ! {
    let Kubelet { mut agent, pods } = kubelet;
    if let Some((ctr, dir, node)) = pods {
        std::thread::spawn(move || {
            every_tick(|| {
                let round = pods::reconcile(&ctr, &dir, &node);
                for change in round.changes {
                    println!("kubelet-standin: {change}");
                }
                round
                    .errors
                    .into_iter()
                    .map(|e| format!("static Pod: {e}"))
                    .collect()
            })
        });
    }
    every_tick(|| {
        vec![match agent.tick(time::OffsetDateTime::now_utc()) {
            Ok(did) => did.to_string(),
            Err(why) => format!("the API server: {why}; retrying"),
        }]
    })
}

/// Runs `round` every [`node::RENEW_SECONDS`], printing the lines it returns that the round
/// before did not.
fn every_tick(mut round: impl FnMut() -> Vec<String>) -> ! {
    let mut last = Vec::new();
    loop {
        let lines = round();
        for line in lines.iter().filter(|l| !last.contains(*l)) {
            println!("kubelet-standin: {line}");
        }
        last = lines;
        std::thread::sleep(std::time::Duration::from_secs(node::RENEW_SECONDS));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(None) => {}
        Ok(Some(kubelet)) => serve(kubelet),
        Err(e) => {
            eprintln!("kubelet-standin: {e:#}");
            std::process::exit(1);
        }
    }
}
