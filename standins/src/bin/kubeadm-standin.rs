//! `kubeadm-standin`: a stand-in for Kubernetes' kubeadm that checks and records its config.

use anyhow::{Context, bail};
use standins::kubeadm::{self, Verb, init, join, mark_control_plane, upload_config};
use standins::{RECORD_DIR, Root};

const HELP: &str = "kubeadm-standin: a STAND-IN for Kubernetes' kubeadm, not kubeadm itself.

It checks the config it is given and records it. `init` and `join` with a controlPlane
section also do kubeadm's on-disk control-plane work; it starts no container itself (the
kubelet runs the static Pods).

usage:
  kubeadm-standin init --config FILE   check an InitConfiguration/ClusterConfiguration file
  kubeadm-standin join --config FILE   check a JoinConfiguration file
  kubeadm-standin reset --force [--cri-socket SOCKET]
                                       undo what init or join did on this node
  kubeadm-standin version [-o short]   print the stand-in's version
  kubeadm-standin config images list --config FILE
                                       the images kubeadm pulls for that configuration

Checks: every document parses; kubeadm documents are kubeadm.k8s.io/v1beta3 for Kubernetes
1.22-1.30 and v1beta4 for 1.31 and later (a join is checked against LAUNCHER_STANDIN_KUBERNETES_VERSION
or /etc/launcher/kubernetes-version when present); each matches kubeadm's JSON schema; every file
the config refers to exists (external etcd certificates, discovery kubeconfig); and the
certificates and kubeconfigs are there as kubeadm requires them: a CA whose key is absent is
external, so every certificate it would sign must be given (and, for the cluster CA at init,
every kubeconfig); a control-plane join needs ca.crt, sa.key, sa.pub and front-proxy-ca.crt
(an absent CA key is only a warning); a worker join refuses an existing caCertPath. What kubeadm
would make itself is recorded as `generated`. Anything else is refused.

init then runs kubeadm's phases (as kubeadm v1.33; `skipPhases` honoured): preflight (CPUs and
memory from /sys and /proc, free ports, manifests not there yet, the CRI socket, swap, the
executables on PATH, ip_forward; `nodeRegistration.ignorePreflightErrors` makes errors
warnings); certs (apiserver, apiserver-kubelet-client, front-proxy-client and sa.key, only
those missing, signed by the CA whose key is here; existing files are kept); control-plane
(the static Pods of kube-apiserver, kube-controller-manager and kube-scheduler in
/etc/kubernetes/manifests, refused whole if kube-apiserver would not take its flags);
upload-config (with /etc/kubernetes/admin.conf: the ClusterConfiguration in the ConfigMap
kube-system/kubeadm-config, the KubeletConfiguration in kube-system/kubelet-config);
mark-control-plane (with admin.conf: waits for the API server and the Node, then adds the
control-plane label and, unless `taints: []`, its NoSchedule taint).

join with a controlPlane section runs kubeadm's control-plane join: discovery from
discovery.file.kubeConfigPath (any answer to kube-public/cluster-info proves the server, then
kubeadm-config and kubelet-config are read with the file's credential, waiting for them up
to the discovery timeout); preflight (the join checks, then the control plane's); the
shared phases as control-plane-prepare/certs and control-plane-prepare/control-plane with
this node's name and advertise address and the cluster's configuration; kubelet-start
(/var/lib/kubelet/config.yaml from kubelet-config, /etc/kubernetes/kubelet.conf: the
discovery file, which holds the node's own credential); control-plane-join/mark-control-plane.
Every check and read comes before the first write; `skipPhases` takes join's phase names.

reset (kubeadm's cleanup-node, with an external etcd) stops the kubelet service, removes the
static Pods' containers through containerd (--cri-socket, default
unix:///run/containerd/containerd.sock), deletes the contents of /etc/kubernetes/manifests,
/var/lib/kubelet and /etc/kubernetes/pki, and the kubeconfig files kubeadm writes in
/etc/kubernetes; a step that fails is a warning and the next one runs.

config images list reads the ClusterConfiguration as kubeadm does (kubernetesVersion,
imageRepository, dns.imageRepository/imageTag, dns.disabled, proxy.disabled, a local etcd's
image) and prints one reference per line in kubeadm's order, with the pause and CoreDNS tags
kubeadm pins for the version.

Records: /var/lib/launcher/standin/kubeadm-<init|join>.yaml (the config) and .json (argv, checks).
Writes what later steps read: /var/lib/kubelet/config.yaml (from a KubeletConfiguration
document) and /var/lib/kubelet/kubeadm-flags.env, then restarts the kubelet service as
kubeadm's kubelet-start does (on a real root only).
LAUNCHER_STANDIN_ROOT places every path under another directory.";

fn parse(args: &[String]) -> anyhow::Result<Option<(Verb, String)>> {
    match args {
        [] => bail!("no command given\n\n{HELP}"),
        [h] if h == "-h" || h == "--help" || h == "help" => {
            println!("{HELP}");
            Ok(None)
        }
        [v, rest @ ..] if v == "version" => {
            match rest {
                [] => println!(
                    "kubeadm-standin version {} (stand-in for Kubernetes' kubeadm)",
                    env!("CARGO_PKG_VERSION")
                ),
                [o, s] if o == "-o" && s == "short" => {
                    println!("v{}-standin", env!("CARGO_PKG_VERSION"))
                }
                other => bail!("kubeadm-standin version: unsupported arguments {other:?}"),
            }
            Ok(None)
        }
        [c, i, l, rest @ ..] if c == "config" && i == "images" && l == "list" => {
            let config = config_flag("config images list", rest)?;
            let text = standins::read(&Root::from_env(), &config)?;
            let docs = kubeadm::read_init_config(&config, &text)
                .map_err(|e| anyhow::anyhow!("refused: {e}"))?;
            let images = kubeadm::images::list(&config, &docs)
                .map_err(|e| anyhow::anyhow!("refused: {e}"))?;
            for image in images {
                println!("{image}");
            }
            Ok(None)
        }
        [r, rest @ ..] if r == "reset" => {
            reset(rest)?;
            Ok(None)
        }
        [verb, rest @ ..] => {
            let verb = match verb.as_str() {
                "init" => Verb::Init,
                "join" => Verb::Join,
                other => bail!(
                    "kubeadm-standin does not stand in for `kubeadm {other}` (only init, join, reset, config images list, version)"
                ),
            };
            Ok(Some((verb, config_flag(verb.as_str(), rest)?)))
        }
    }
}

/// The CRI endpoint kubeadm's reset uses when none is given on a node with containerd.
const DEFAULT_CRI_SOCKET: &str = "unix:///run/containerd/containerd.sock";

/// `reset --force [--cri-socket S]`: kubeadm asks before it resets unless `--force`; the
/// stand-in never asks, so it needs `--force`.
fn reset(rest: &[String]) -> anyhow::Result<()> {
    let mut force = false;
    let mut socket = DEFAULT_CRI_SOCKET.to_string();
    let mut args = rest.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-f" | "--force" => force = true,
            "--cri-socket" => {
                socket = args
                    .next()
                    .context("kubeadm-standin reset: --cri-socket needs a value")?
                    .clone()
            }
            other => match other.strip_prefix("--cri-socket=") {
                Some(value) => socket = value.to_string(),
                None => bail!(
                    "kubeadm-standin reset: only `--force` and `--cri-socket SOCKET` are accepted, got {other:?}"
                ),
            },
        }
    }
    if !force {
        bail!("kubeadm-standin reset: refusing to ask for confirmation: pass --force");
    }
    let done = kubeadm::reset::run(&Root::from_env(), &socket);
    for line in &done.lines {
        println!("{line}");
    }
    for warning in &done.warnings {
        eprintln!("kubeadm-standin: warning (as kubeadm): {warning}");
    }
    Ok(())
}

/// The FILE of `--config FILE` or `--config=FILE`, the only flag the stand-in takes.
fn config_flag(command: &str, rest: &[String]) -> anyhow::Result<String> {
    match rest {
        [flag, file] if flag == "--config" => Ok(file.clone()),
        [one] if one.starts_with("--config=") => Ok(one["--config=".len()..].to_string()),
        other => {
            bail!("kubeadm-standin {command}: only `--config FILE` is accepted, got {other:?}")
        }
    }
}

fn join_version(root: &Root) -> Option<String> {
    std::env::var("LAUNCHER_STANDIN_KUBERNETES_VERSION")
        .ok()
        .or_else(|| standins::read(root, "/etc/launcher/kubernetes-version").ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn kubelet_outputs(root: &Root, docs: &[standins::docs::Doc]) -> anyhow::Result<()> {
    if let Some(doc) = docs.iter().find(|d| d.kind == "KubeletConfiguration") {
        let yaml = serde_yaml::to_string(&doc.value).context("rendering the kubelet config")?;
        standins::write(root, "/var/lib/kubelet/config.yaml", yaml.as_bytes())?;
    }
    kubelet_env(root, docs)
}

/// `kubeadm-flags.env`, the kubelet's node-specific flags.
fn kubelet_env(root: &Root, docs: &[standins::docs::Doc]) -> anyhow::Result<()> {
    let registration = docs
        .iter()
        .filter(|d| d.kind == "InitConfiguration" || d.kind == "JoinConfiguration")
        .find_map(|d| d.value.get("nodeRegistration"));
    let env = format!(
        "KUBELET_KUBEADM_ARGS=\"{}\"\n",
        kubeadm::kubelet_flags(registration).join(" ")
    );
    standins::write(root, "/var/lib/kubelet/kubeadm-flags.env", env.as_bytes())
}

/// kubelet-start's last step: the kubelet service restarted on the files just written, as
/// kubeadm does (a reset stopped it; otherwise it loops until it has them). A failure is
/// kubeadm's warning, not an error. Under LAUNCHER_STANDIN_ROOT there is no service.
fn start_kubelet(root: &Root) {
    if root.0 != std::path::Path::new("/") {
        return;
    }
    println!("[kubelet-start] Starting the kubelet");
    let restarted = std::process::Command::new("systemctl")
        .args(["restart", "kubelet"])
        .status();
    if !matches!(restarted, Ok(s) if s.success()) {
        eprintln!(
            "kubeadm-standin: warning (as kubeadm): [kubelet-start] WARNING: unable to start the kubelet service: please ensure kubelet is running manually"
        );
    }
}

/// What a command did on disk before the records, and what it does after them.
enum Phases {
    Init(init::Prepared, init::Applied),
    JoinControlPlane(join::Prepared, init::Applied),
    /// A worker's join: checked and recorded only.
    Worker,
}

impl Phases {
    fn applied(&self) -> Option<&init::Applied> {
        match self {
            Phases::Init(_, applied) | Phases::JoinControlPlane(_, applied) => Some(applied),
            Phases::Worker => None,
        }
    }
}

fn print_warnings(warnings: &[String]) {
    for warning in warnings {
        eprintln!("\t{warning}");
    }
}

/// A control-plane join's phases after the checks: discovery, then control-plane-prepare.
fn join_phases(
    root: &Root,
    checked: &kubeadm::Checked,
    docs: &[standins::docs::Doc],
) -> anyhow::Result<(join::Prepared, init::Applied)> {
    let prepared = join::prepare(root, docs, &checked.generated)?;
    print_warnings(&prepared.shared.warnings);
    let applied = prepared.apply(root, &checked.generated, time::OffsetDateTime::now_utc())?;
    Ok((prepared, applied))
}

/// The phases that talk to the API server, after the records: the kubelet's files, then
/// upload-config and mark-control-plane (init), or kubelet-start and mark-control-plane
/// (a control-plane join).
fn cluster_phases(
    root: &Root,
    phases: &Phases,
    docs: &[standins::docs::Doc],
) -> anyhow::Result<()> {
    const ADMIN: &str = mark_control_plane::ADMIN_CONF;
    match phases {
        Phases::Init(prepared, _) => {
            kubelet_outputs(root, docs)?;
            start_kubelet(root);
            upload_config::run(root, &prepared.config, docs, ADMIN)
                .context("error execution phase upload-config")?;
            if !prepared.config.skips("mark-control-plane") {
                mark_control_plane::run(root, &prepared.config, ADMIN)
                    .context("error execution phase mark-control-plane")?;
            }
        }
        Phases::JoinControlPlane(prepared, _) => {
            if !prepared.shared.config.skips("kubelet-start") {
                kubelet_env(root, docs).context("error execution phase kubelet-start")?;
            }
            prepared.write_kubelet_files(root)?;
            start_kubelet(root);
            if prepared.marks() {
                mark_control_plane::run(root, &prepared.shared.config, ADMIN)
                    .context("error execution phase control-plane-join/mark-control-plane")?;
            }
        }
        Phases::Worker => kubelet_outputs(root, docs)?,
    }
    Ok(())
}

/// `kubeadm init`'s phases after the checks: certs and control-plane.
fn init_phases(
    root: &Root,
    checked: &kubeadm::Checked,
    docs: &[standins::docs::Doc],
) -> anyhow::Result<(init::Prepared, init::Applied)> {
    let prepared = init::prepare(root, docs, &checked.generated)?;
    print_warnings(&prepared.warnings);
    let applied = prepared.apply(root, &checked.generated, time::OffsetDateTime::now_utc())?;
    Ok((prepared, applied))
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let Some((verb, config)) = parse(args)? else {
        return Ok(());
    };
    let root = Root::from_env();
    let text = standins::read(&root, &config)?;
    let version = join_version(&root);
    let (checked, docs) = kubeadm::check(&root, &config, &text, verb, version.as_deref())
        .map_err(|e| anyhow::anyhow!("refused: {e}"))?;
    for warning in &checked.warnings {
        eprintln!("kubeadm-standin: warning (as kubeadm): {warning}");
    }
    let phases = match verb {
        Verb::Init => {
            let (prepared, applied) = init_phases(&root, &checked, &docs)?;
            Phases::Init(prepared, applied)
        }
        Verb::Join if join::is_control_plane(&docs) => {
            let (prepared, applied) = join_phases(&root, &checked, &docs)?;
            Phases::JoinControlPlane(prepared, applied)
        }
        Verb::Join => Phases::Worker,
    };
    let name = format!("{RECORD_DIR}/kubeadm-{}", verb.as_str());
    standins::write(&root, &format!("{name}.yaml"), text.as_bytes())?;
    let record = serde_json::json!({
        "standin_for": "kubeadm",
        "argv": std::env::args().collect::<Vec<_>>(),
        "config": config,
        "checked": checked,
        "applied": phases.applied(),
    });
    standins::write(
        &root,
        &format!("{name}.json"),
        serde_json::to_vec_pretty(&record)?.as_slice(),
    )?;
    cluster_phases(&root, &phases, &docs)?;
    println!(
        "kubeadm-standin {}: {} accepted ({} documents, {} files present); stand-in only: {}",
        verb.as_str(),
        checked.api_version,
        checked.kinds.len(),
        checked.files.len(),
        match phases {
            Phases::Init(..) =>
                "certificates and static Pod manifests written, no container started",
            Phases::JoinControlPlane(..) =>
                "certificates, static Pod manifests and kubelet files written, no container started",
            Phases::Worker => "checked and recorded, no control plane was started",
        }
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("kubeadm-standin: {e:#}");
        std::process::exit(1);
    }
}
