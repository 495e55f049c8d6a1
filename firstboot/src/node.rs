//! The etcd and install phases: start etcd on masters and wait for its health, then run
//! `kubeadm init`/`join` on masters or start the kubelet on workers.

use crate::fsutil::{self, FsError};
use crate::os::{ClientTls, Cmd, Os, OsError};
use crate::{keys, vip};
use cluster::api::{EtcdInstructions, InstallAction, Plan};
use std::path::Path;
use std::time::{Duration, Instant};

pub const ETCD_UNIT: &str = "/etc/systemd/system/launcher-etcd.service";
pub const KUBELET_UNIT: &str = "/etc/systemd/system/kubelet.service";
const ETCD_PKI: &str = "/etc/kubernetes/pki/etcd";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(
        "etcd did not become healthy at {url} in {waited_secs} s (last: {last}); check `journalctl -u launcher-etcd` and that the other masters are up"
    )]
    EtcdUnhealthy {
        url: String,
        waited_secs: u64,
        last: String,
    },
    #[error(
        "{unit} did not keep running after it started ({state}); last lines of its log:\n{log}"
    )]
    NotRunning {
        unit: String,
        state: String,
        log: String,
    },
    #[error(
        "the kubelet did not register Node {node} in {waited_secs} s (last: {last}); check `journalctl -u kubelet` and the server and CA in {kubeconfig}"
    )]
    NotRegistered {
        node: String,
        kubeconfig: String,
        waited_secs: u64,
        last: String,
    },
    #[error(transparent)]
    Vip(#[from] vip::KeepalivedError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Durable(#[from] durable::Error),
    #[error(transparent)]
    Os(#[from] OsError),
}

/// How long a started daemon must run without a restart before the host counts as done.
const SETTLE: Duration = Duration::from_secs(5);

/// The systemd unit that runs etcd from the plan's config file.
pub fn etcd_unit(etcd: &EtcdInstructions) -> String {
    format!(
        "# Written by launcher-firstboot.
[Unit]
Description=etcd member {name} of the Launcher cluster
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
ExecStart=/usr/bin/etcd --config-file {config}
Restart=always
RestartSec=5s
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
",
        name = etcd.member_name,
        config = etcd.config_path,
    )
}

/// The systemd unit that runs a worker's kubelet with its seed-signed client certificate.
pub fn kubelet_unit(config: &str, kubeconfig: &str) -> String {
    format!(
        "# Written by launcher-firstboot.
[Unit]
Description=kubelet
After=containerd.service network-online.target
Wants=containerd.service network-online.target

[Service]
ExecStart=/usr/bin/kubelet --config {config} --kubeconfig {kubeconfig}
Restart=always
RestartSec=5s

[Install]
WantedBy=multi-user.target
"
    )
}

/// A host path as a command sees it: unchanged on `/`, under the root otherwise (a dry run).
pub fn host_path(root: &Path, abs: &str) -> Result<String, FsError> {
    if root == Path::new("/") {
        return Ok(abs.to_string());
    }
    Ok(fsutil::under_root(root, abs)?
        .to_string_lossy()
        .into_owned())
}

/// Lines of a failed unit's log carried in the error (and so in the progress report).
const UNIT_LOG_LINES: &str = "15";

fn unit_log(os: &dyn Os, unit: &str) -> String {
    os.run(&Cmd::new(
        "journalctl",
        &[
            "--unit",
            unit,
            "--lines",
            UNIT_LOG_LINES,
            "--no-pager",
            "--output",
            "cat",
        ],
    ))
    .map(|log| log.trim_end().to_string())
    .unwrap_or_else(|e| format!("(its log could not be read: {e})"))
}

/// `ActiveState` and `NRestarts` of `unit`, `unknown` where systemd did not say.
fn unit_state(os: &dyn Os, unit: &str) -> Result<(String, String), OsError> {
    let shown = os.run(&Cmd::new(
        "systemctl",
        &["show", unit, "--property", "ActiveState,NRestarts"],
    ))?;
    let value = |key: &str| {
        shown
            .lines()
            .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
            .unwrap_or("unknown")
            .to_string()
    };
    Ok((value("ActiveState"), value("NRestarts")))
}

/// Once started, `unit` must stay active through [`SETTLE`] without systemd restarting it: a
/// daemon that crash-loops under `Restart=always` would otherwise look started. (Restarts
/// before ours do not count: the image's kubelet, like kubeadm's, loops until it has a config.)
fn check_running(os: &dyn Os, unit: &str) -> Result<(), NodeError> {
    let (_, before) = unit_state(os, unit)?;
    os.sleep(SETTLE);
    let (state, after) = unit_state(os, unit)?;
    if state == "active" && after == before && after != "unknown" {
        return Ok(());
    }
    Err(NodeError::NotRunning {
        unit: unit.to_string(),
        state: format!("state {state}, restarts {before} then {after}"),
        log: unit_log(os, unit),
    })
}

/// Enables and starts `unit`; when it fails to start, the error carries the last lines of its
/// log, since the host's journal is out of reach of whoever reads the report.
fn start_unit(os: &dyn Os, unit: &str) -> Result<(), OsError> {
    os.run(&Cmd::new("systemctl", &["daemon-reload"]))?;
    with_unit_log(os, unit, &Cmd::new("systemctl", &["enable", "--now", unit]))
}

/// Runs `cmd`; when it fails, the error carries the last lines of `unit`'s log too.
fn with_unit_log(os: &dyn Os, unit: &str, cmd: &Cmd) -> Result<(), OsError> {
    with_logs(os, unit, cmd, String::new)
}

/// Runs `cmd`; when it fails, the error carries what `before` returns, then the last lines of
/// `unit`'s log.
fn with_logs(
    os: &dyn Os,
    unit: &str,
    cmd: &Cmd,
    before: impl FnOnce() -> String,
) -> Result<(), OsError> {
    match os.run(cmd) {
        Err(OsError::Failed {
            cmd,
            status,
            stderr,
            log,
        }) => Err(OsError::Failed {
            cmd,
            status,
            stderr,
            log: format!(
                "{log}{}\nlast lines of {unit}'s log:\n{}",
                before(),
                unit_log(os, unit).trim_end()
            ),
        }),
        other => other.map(|_| ()),
    }
}

/// Runs `kubeadm init`/`join`. kubeadm waits on the API server the kubelet runs as a static
/// Pod, so why it gave up is with the kubelet: in the output of the control plane's containers
/// (a flag kube-apiserver refused) and in the kubelet's log (an image the seed lacks). A
/// failure carries both, the containers' output first.
fn kubeadm(root: &Path, os: &dyn Os, node: &str, cmd: &Cmd) -> Result<(), OsError> {
    with_logs(os, "kubelet.service", cmd, || {
        control_plane_output(root, node)
    })
}

/// Where the kubelet keeps each container's output:
/// `<namespace>_<pod>_<uid>/<container>/<restart count>.log`.
const POD_LOGS: &str = "/var/log/pods";
/// The static Pods kubeadm writes on a master, each with one container of the same name.
const CONTROL_PLANE: [&str; 3] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];
/// Lines of each container's output carried in a failure, and how much of its end is read.
const POD_LOG_LINES: usize = 3;
const POD_LOG_TAIL: u64 = 16 * 1024;

/// The last lines each control-plane container of `node` wrote in its latest run, one block
/// per container that wrote any.
pub fn control_plane_output(root: &Path, node: &str) -> String {
    let Ok(dir) = fsutil::under_root(root, POD_LOGS) else {
        return String::new();
    };
    let pods: Vec<std::fs::DirEntry> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(Result::ok).collect())
        .unwrap_or_default();
    let mut out = String::new();
    for component in CONTROL_PLANE {
        let prefix = format!("kube-system_{component}-{node}_");
        let newest = pods
            .iter()
            .filter(|pod| pod.file_name().to_string_lossy().starts_with(&prefix))
            .flat_map(|pod| std::fs::read_dir(pod.path().join(component)).into_iter())
            .flat_map(|logs| logs.filter_map(Result::ok))
            .filter_map(|log| Some((log.metadata().ok()?.modified().ok()?, log.path())))
            .max();
        let Some((_, path)) = newest else { continue };
        let lines = last_lines(&path);
        if !lines.is_empty() {
            let shown = path.strip_prefix(root).unwrap_or(&path);
            out.push_str(&format!(
                "\nlast output of {component} (/{}):\n{lines}",
                shown.display()
            ));
        }
    }
    out
}

/// The last [`POD_LOG_LINES`] lines of a container log, each without the CRI logger's
/// `<time> <stream> <F|P> ` prefix when it has one, controls removed, at most 300 characters.
fn last_lines(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(POD_LOG_TAIL)));
        let _ = file.take(POD_LOG_TAIL).read_to_end(&mut text);
    }
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let parts: Vec<&str> = line.splitn(4, ' ').collect();
            let cri = parts.len() == 4
                && matches!(parts[1], "stdout" | "stderr")
                && matches!(parts[2], "F" | "P");
            let message = if cri { parts[3] } else { line };
            message
                .chars()
                .filter(|c| !c.is_control())
                .take(300)
                .collect::<String>()
        })
        .filter(|l| !l.trim().is_empty())
        .collect();
    let start = lines.len().saturating_sub(POD_LOG_LINES);
    lines[start..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Starts etcd (masters only) and waits until its own member answers healthy.
pub fn etcd(root: &Path, os: &dyn Os, plan: &Plan, wait: Duration) -> Result<bool, NodeError> {
    let Some(etcd) = &plan.etcd else {
        return Ok(false);
    };
    durable::write_atomic(
        &fsutil::under_root(root, ETCD_UNIT)?,
        etcd_unit(etcd).as_bytes(),
        0o644,
    )?;
    start_unit(os, "launcher-etcd.service")?;
    let url = format!(
        "{}/health",
        etcd.own_client_url(plan.ip.as_deref())
            .trim_end_matches('/')
    );
    let tls = ClientTls {
        ca: fsutil::under_root(root, &format!("{ETCD_PKI}/ca.crt"))?,
        cert: fsutil::under_root(root, &format!("{ETCD_PKI}/healthcheck-client.crt"))?,
        key: keys::key_path(root, cluster::api::cert_names::ETCD_HEALTHCHECK_CLIENT)
            .map_err(|e| OsError::Probe(url.clone(), e.to_string()))?,
    };
    let start = Instant::now();
    loop {
        let last = match os.probe_https(&url, &tls) {
            Ok(body) if body.contains(r#""health":"true""#) => return Ok(true),
            Ok(body) => format!("answered {}", body.trim()),
            Err(e) => e.to_string(),
        };
        if start.elapsed() >= wait {
            return Err(NodeError::EtcdUnhealthy {
                url,
                waited_secs: start.elapsed().as_secs(),
                last,
            });
        }
        tracing::info!("etcd not healthy yet: {last}");
        os.sleep(Duration::from_secs(2));
    }
}

/// What an install does with kubeadm on a master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kubeadm {
    Run,
    /// A kubeadm of this boot failed or was cut off and left its files, on which it would fail
    /// its own preflight: `kubeadm reset` first, then the plan's files written again (the
    /// reset empties the certificates directory), then kubeadm.
    ResetThenRun,
    /// Not again: it succeeded in this boot, or its manifests survived a reboot.
    Skip,
}

/// What to do with kubeadm on a master, from whether it succeeded in this boot, whether the
/// host rebooted since the last run, and whether static Pod manifests are there.
pub fn kubeadm_step(done_this_boot: bool, rebooted: bool, manifests: bool) -> Kubeadm {
    match (done_this_boot, rebooted, manifests) {
        (true, _, _) | (false, true, true) => Kubeadm::Skip,
        (false, false, true) => Kubeadm::ResetThenRun,
        (false, _, false) => Kubeadm::Run,
    }
}

const MANIFESTS_DIR: &str = "/etc/kubernetes/manifests";

/// Whether the static Pod manifests directory holds anything.
pub fn manifests_present(root: &Path) -> Result<bool, NodeError> {
    let dir = fsutil::under_root(root, MANIFESTS_DIR)?;
    Ok(std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()))
}

/// `kubeadm reset --force`: what a failed `kubeadm init`/`join` left on this node undone (its
/// static Pods' containers, manifests, kubeconfigs, the certificates directory); the external
/// etcd is not touched.
pub fn reset(os: &dyn Os) -> Result<(), NodeError> {
    let cri = cluster::kubeadm::CRI_SOCKET;
    os.run(&Cmd::new(
        "kubeadm",
        &["reset", "--force", "--cri-socket", cri],
    ))?;
    Ok(())
}

/// Makes the host a node: `kubeadm init`/`join` on masters (unless `run_kubeadm` is false, see
/// [`kubeadm_step`]), the kubelet on workers. A master of a cluster with a VIP starts
/// keepalived first, so that the VIP answers as soon as an API server is ready, which
/// `kubeadm init` waits for.
pub fn install(root: &Path, os: &dyn Os, plan: &Plan, run_kubeadm: bool) -> Result<(), NodeError> {
    if plan.role == cluster::api::Role::Master && vip::configure(root, os, plan)? {
        start_unit(os, cluster::vip::UNIT)?;
    }
    if plan.role == cluster::api::Role::Master && !run_kubeadm {
        tracing::info!("kubeadm already made this master: not running it again");
        return Ok(());
    }
    match &plan.install {
        InstallAction::Init { config_path } => {
            let config = host_path(root, config_path)?;
            let init = Cmd::new("kubeadm", &["init", "--config", &config]);
            kubeadm(root, os, &plan.hostname, &init)?;
        }
        InstallAction::JoinControlPlane { config_path } => {
            let config = host_path(root, config_path)?;
            let join = Cmd::new("kubeadm", &["join", "--config", &config]);
            kubeadm(root, os, &plan.hostname, &join)?;
        }
        InstallAction::Worker {
            kubelet_config_path,
            kubeconfig_path,
        } => {
            let unit = kubelet_unit(kubelet_config_path, kubeconfig_path);
            durable::write_atomic(
                &fsutil::under_root(root, KUBELET_UNIT)?,
                unit.as_bytes(),
                0o644,
            )?;
            start_unit(os, "kubelet.service")?;
            // Enabled in the image as kubeadm's packaging does, the kubelet may have been
            // looping on a missing config since boot: start it afresh on the one just written.
            os.run(&Cmd::new("systemctl", &["restart", "kubelet.service"]))?;
            check_running(os, "kubelet.service")?;
        }
    }
    Ok(())
}

/// The kubeconfig kubeadm gives a master's kubelet.
const MASTER_KUBELET_KUBECONFIG: &str = "/etc/kubernetes/kubelet.conf";

/// The host is a node once the API server has its Node: read with the kubelet's own
/// kubeconfig, the address and credential the kubelet registers with, so that a wrong server,
/// CA or certificate shows here as it does to the kubelet. Registered is enough; Ready also
/// needs a pod network, which may come later.
pub fn wait_registered(
    root: &Path,
    os: &dyn Os,
    plan: &Plan,
    wait: Duration,
) -> Result<(), NodeError> {
    let kubeconfig = kubelet_kubeconfig(plan);
    let path = fsutil::under_root(root, kubeconfig)?;
    let node = plan.hostname.as_str();
    let start = Instant::now();
    loop {
        let last = match check_registered(os, &path, node) {
            Ok(ready) => {
                tracing::info!("Node {node} is registered; Ready: {ready}");
                return Ok(());
            }
            Err(why) => why,
        };
        if start.elapsed() >= wait {
            return Err(NodeError::NotRegistered {
                node: node.to_string(),
                kubeconfig: kubeconfig.to_string(),
                waited_secs: start.elapsed().as_secs(),
                last,
            });
        }
        tracing::info!("Node {node} not registered yet: {last}");
        os.sleep(Duration::from_secs(3));
    }
}

/// The kubeconfig the host's kubelet registers with.
pub fn kubelet_kubeconfig(plan: &Plan) -> &str {
    match &plan.install {
        InstallAction::Worker {
            kubeconfig_path, ..
        } => kubeconfig_path.as_str(),
        _ => MASTER_KUBELET_KUBECONFIG,
    }
}

/// Asks once, with `kubeconfig`'s server and credential, for the Node `node`: its Ready
/// condition when it is there, why not otherwise (the TLS verdict, the API's answer).
pub fn check_registered(os: &dyn Os, kubeconfig: &Path, node: &str) -> Result<String, String> {
    let body = os
        .kube_get(kubeconfig, &format!("/api/v1/nodes/{node}"))
        .map_err(|e| e.to_string())?;
    registered(&body, node)
}

/// Whether `body` is the Node `name`; its Ready condition (status and message) when it is.
fn registered(body: &str, name: &str) -> Result<String, String> {
    let node: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    if node["kind"] != "Node" || node["metadata"]["name"] != name {
        let start: String = body.chars().take(200).collect();
        return Err(format!("the answer is not Node {name}: {start}"));
    }
    let conditions = node["status"]["conditions"].as_array().cloned();
    let ready = conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c["type"] == "Ready");
    Ok(match ready {
        Some(c) => format!(
            "{} ({})",
            c["status"].as_str().unwrap_or("?"),
            c["message"].as_str().unwrap_or_default()
        ),
        None => "not reported yet".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::{Action, RecordingOs};
    use crate::vip::tests::{commands, join, master as vip_master, recording};
    use cluster::api::Role;
    use std::os::unix::fs::PermissionsExt;

    fn master() -> Plan {
        Plan {
            host_id: "h".into(),
            cluster: "c".into(),
            hostname: "c-m2".into(),
            role: Role::Master,
            ip: Some("10.0.0.12".into()),
            kubernetes_version: "v1.33.0".into(),
            files: vec![],
            etcd: Some(EtcdInstructions {
                member_name: "c-m2".into(),
                initial_cluster_state: "existing".into(),
                learner: true,
                config_path: "/etc/etcd/etcd.yaml".into(),
                client_urls: vec![
                    "https://10.0.0.11:2379".into(),
                    "https://10.0.0.12:2379".into(),
                ],
            }),
            install: InstallAction::JoinControlPlane {
                config_path: "/etc/kubernetes/kubeadm.yaml".into(),
            },
            vip: None,
            images: cluster::kubeadm::node_images(
                &"v1.33.0".parse().unwrap(),
                &"10.0.0.1:8443".parse().unwrap(),
                cluster::kubeadm::KubeadmAddons::ALL,
            ),
            digest: String::new(),
        }
    }

    #[test]
    fn a_master_starts_etcd_waits_on_its_own_member_then_joins() {
        let root = tempfile::tempdir().unwrap();
        let os = RecordingOs::new(Duration::ZERO, false);
        let plan = master();
        assert!(etcd(root.path(), &os, &plan, Duration::from_secs(1)).unwrap());
        install(root.path(), &os, &plan, true).unwrap();
        let unit =
            std::fs::read_to_string(root.path().join("etc/systemd/system/launcher-etcd.service"))
                .unwrap();
        assert!(unit.contains("ExecStart=/usr/bin/etcd --config-file /etc/etcd/etcd.yaml"));
        let actions = os.actions();
        assert_eq!(
            actions[2],
            Action::Probe {
                url: "https://10.0.0.12:2379/health".into()
            }
        );
        let Action::Run { cmd } = &actions[3] else {
            panic!()
        };
        let cfg = root.path().join("etc/kubernetes/kubeadm.yaml");
        assert_eq!(
            cmd.to_string(),
            format!("kubeadm join --config {}", cfg.display())
        );
    }

    #[test]
    fn an_unhealthy_etcd_fails_with_what_to_check() {
        let root = tempfile::tempdir().unwrap();
        let mut os = RecordingOs::new(Duration::ZERO, false);
        os.outputs.insert(
            "https://10.0.0.12:2379/health".into(),
            r#"{"health":"false"}"#.into(),
        );
        let err = etcd(root.path(), &os, &master(), Duration::ZERO)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("etcd did not become healthy at https://10.0.0.12:2379/health"),
            "{err}"
        );
        assert!(err.contains("journalctl -u launcher-etcd"));
    }

    #[test]
    fn an_etcd_that_will_not_start_reports_the_end_of_its_log() {
        let root = tempfile::tempdir().unwrap();
        let mut os = RecordingOs::new(Duration::ZERO, false);
        os.failures.insert(
            "systemctl enable --now launcher-etcd.service".into(),
            "Job for launcher-etcd.service failed.".into(),
        );
        os.outputs.insert(
            "journalctl".into(),
            "member 3a5e has already been bootstrapped\n".into(),
        );
        let err = etcd(root.path(), &os, &master(), Duration::ZERO)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "`systemctl enable --now launcher-etcd.service` exited with exit status: 1: \
             Job for launcher-etcd.service failed.\n\
             last lines of launcher-etcd.service's log:\n\
             member 3a5e has already been bootstrapped"
        );
        let Action::Run { cmd } = os.actions().last().cloned().unwrap() else {
            panic!()
        };
        assert_eq!(
            cmd.to_string(),
            "journalctl --unit launcher-etcd.service --lines 15 --no-pager --output cat"
        );
    }

    fn worker() -> Plan {
        Plan {
            role: Role::Worker,
            etcd: None,
            install: InstallAction::Worker {
                kubelet_config_path: "/var/lib/kubelet/config.yaml".into(),
                kubeconfig_path: "/etc/kubernetes/kubelet.conf".into(),
            },
            ..master()
        }
    }

    #[test]
    fn a_worker_is_done_only_once_its_kubelet_keeps_running() {
        let root = tempfile::tempdir().unwrap();
        let mut os = RecordingOs::new(Duration::ZERO, false);
        os.outputs.insert(
            "systemctl".into(),
            "ActiveState=active\nNRestarts=0\n".into(),
        );
        install(root.path(), &os, &worker(), true).unwrap();
        assert!(
            root.path()
                .join("etc/systemd/system/kubelet.service")
                .is_file()
        );

        // Restarts before firstboot started it do not count.
        os.outputs.insert(
            "systemctl".into(),
            "ActiveState=active\nNRestarts=7\n".into(),
        );
        install(root.path(), &os, &worker(), true).unwrap();

        let cases = [
            (
                "ActiveState=activating\nNRestarts=2\n",
                "state activating, restarts 2 then 2",
            ),
            (
                "ActiveState=failed\nNRestarts=0\n",
                "state failed, restarts 0 then 0",
            ),
            ("", "state unknown, restarts unknown then unknown"),
        ];
        for (shown, state) in cases {
            let mut os = RecordingOs::new(Duration::ZERO, false);
            os.outputs.insert("systemctl".into(), shown.into());
            os.outputs
                .insert("journalctl".into(), "refused: bad kubeconfig\n".into());
            let err = install(root.path(), &os, &worker(), true)
                .unwrap_err()
                .to_string();
            assert_eq!(
                err,
                format!(
                    "kubelet.service did not keep running after it started ({state}); \
                     last lines of its log:\nrefused: bad kubeconfig"
                )
            );
        }
    }

    /// kubeadm gives up waiting for the API server the kubelet runs: the report says what the
    /// kubelet said, which is where the reason is.
    #[test]
    fn a_failed_kubeadm_reports_the_kubelets_last_lines() {
        let root = tempfile::tempdir().unwrap();
        let mut os = recording();
        let cfg = root.path().join("etc/kubernetes/kubeadm.yaml");
        os.failures.insert(
            format!("kubeadm init --config {}", cfg.display()),
            "mark-control-plane: the API server did not answer\n".into(),
        );
        os.outputs.insert(
            "journalctl".into(),
            "kubelet-standin: static Pod: k8s_kube-apiserver_kube-apiserver-m1: pulling 10.77.0.1:8443/kube-apiserver:v1.33.4: not found\n"
                .into(),
        );
        let init = InstallAction::Init {
            config_path: "/etc/kubernetes/kubeadm.yaml".into(),
        };
        let plan = vip_master(init, true);
        // The API server's container refused a flag: the kubelet's CRI log (two runs, the
        // newer one last) and a raw one of the scheduler's.
        let pods = root.path().join("var/log/pods");
        let apiserver = pods.join(format!(
            "kube-system_kube-apiserver-{}_0a1b/kube-apiserver",
            plan.hostname
        ));
        std::fs::create_dir_all(&apiserver).unwrap();
        std::fs::write(
            apiserver.join("0.log"),
            "2026-12-01T03:00:00.1Z stderr F old run\n",
        )
        .unwrap();
        let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(apiserver.join("0.log"))
            .and_then(|f| f.set_modified(an_hour_ago))
            .unwrap();
        std::fs::write(
            apiserver.join("1.log"),
            "2026-12-01T03:00:05.1Z stderr F Error: unknown flag: --no-such-flag\n\
             2026-12-01T03:00:05.2Z stderr P Usage:\x1b[31m\n",
        )
        .unwrap();
        let scheduler = pods.join(format!(
            "kube-system_kube-scheduler-{}_9f/kube-scheduler",
            plan.hostname
        ));
        std::fs::create_dir_all(&scheduler).unwrap();
        std::fs::write(scheduler.join("0.log"), "a\nb\nc\nd\n").unwrap();
        let other_node = pods.join("kube-system_kube-apiserver-elsewhere_77/kube-apiserver");
        std::fs::create_dir_all(&other_node).unwrap();
        std::fs::write(other_node.join("0.log"), "not this node's\n").unwrap();
        let err = install(root.path(), &os, &plan, true)
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with(&format!(
                "mark-control-plane: the API server did not answer\n\
                 last output of kube-apiserver (/var/log/pods/kube-system_kube-apiserver-{host}_0a1b/kube-apiserver/1.log):\n  \
                 Error: unknown flag: --no-such-flag\n  Usage:[31m\n\
                 last output of kube-scheduler (/var/log/pods/kube-system_kube-scheduler-{host}_9f/kube-scheduler/0.log):\n  \
                 b\n  c\n  d\n\
                 last lines of kubelet.service's log:\n\
                 kubelet-standin: static Pod: k8s_kube-apiserver_kube-apiserver-m1: pulling 10.77.0.1:8443/kube-apiserver:v1.33.4: not found",
                host = plan.hostname
            )),
            "{err}"
        );
    }

    #[test]
    fn a_host_is_a_node_once_the_api_server_has_its_node() {
        let root = tempfile::tempdir().unwrap();
        let os = RecordingOs::new(Duration::ZERO, false);
        wait_registered(root.path(), &os, &worker(), Duration::ZERO).unwrap();
        wait_registered(root.path(), &os, &master(), Duration::ZERO).unwrap();
        let asked = Action::KubeGet {
            kubeconfig: root.path().join("etc/kubernetes/kubelet.conf"),
            path: "/api/v1/nodes/c-m2".into(),
        };
        assert_eq!(os.actions(), vec![asked.clone(), asked]);
    }

    #[test]
    fn a_node_that_never_registers_fails_with_the_last_answer() {
        let cases = [
            (
                None,
                Some("invalid peer certificate: UnknownIssuer"),
                "probing /api/v1/nodes/c-m2: invalid peer certificate: UnknownIssuer",
            ),
            (
                Some(r#"{"kind":"Node","metadata":{"name":"c-m3"}}"#),
                None,
                r#"the answer is not Node c-m2: {"kind":"Node","metadata":{"name":"c-m3"}}"#,
            ),
            (Some("<html>"), None, "the answer is not Node c-m2: <html>"),
        ];
        for (answer, failure, last) in cases {
            let root = tempfile::tempdir().unwrap();
            let mut os = RecordingOs::new(Duration::ZERO, false);
            let path = "/api/v1/nodes/c-m2".to_string();
            if let Some(answer) = answer {
                os.outputs.insert(path.clone(), answer.into());
            }
            if let Some(failure) = failure {
                os.failures.insert(path, failure.into());
            }
            let err = wait_registered(root.path(), &os, &worker(), Duration::ZERO)
                .unwrap_err()
                .to_string();
            assert_eq!(
                err,
                format!(
                    "the kubelet did not register Node c-m2 in 0 s (last: {last}); check \
                     `journalctl -u kubelet` and the server and CA in /etc/kubernetes/kubelet.conf"
                )
            );
        }
    }

    #[test]
    fn the_ready_condition_is_reported_not_required() {
        let node = |conditions: &str| {
            format!(
                r#"{{"kind":"Node","metadata":{{"name":"w1"}},"status":{{"conditions":{conditions}}}}}"#
            )
        };
        assert_eq!(
            registered(
                &node(
                    r#"[{"type":"Ready","status":"False","message":"cni plugin not initialized"}]"#
                ),
                "w1"
            ),
            Ok("False (cni plugin not initialized)".into())
        );
        assert_eq!(registered(&node("[]"), "w1"), Ok("not reported yet".into()));
    }

    // The control-plane VIP: keepalived before kubeadm on masters that hold one, never elsewhere.
    #[test]
    fn a_master_starts_keepalived_before_kubeadm() {
        let init = InstallAction::Init {
            config_path: "/etc/kubernetes/kubeadm.yaml".into(),
        };
        for (action, kubeadm) in [(init, "init"), (join(), "join")] {
            let root = tempfile::tempdir().unwrap();
            let os = recording();
            install(root.path(), &os, &vip_master(action, true), true).unwrap();
            let cfg = root.path().join("etc/kubernetes/kubeadm.yaml");
            assert_eq!(
                commands(&os),
                [
                    "ip -o -4 addr show".to_string(),
                    "systemctl daemon-reload".into(),
                    "systemctl enable --now keepalived.service".into(),
                    format!("kubeadm {kubeadm} --config {}", cfg.display()),
                ]
            );
            let conf = root.path().join("etc/keepalived/keepalived.conf");
            let mode = std::fs::metadata(&conf).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let text = std::fs::read_to_string(&conf).unwrap();
            assert!(text.contains("    interface enp0s3\n"), "{text}");
            assert!(
                text.contains("        10.77.0.10/24 dev enp0s3\n"),
                "{text}"
            );
            assert!(text.contains("    mcast_src_ip 10.77.0.12\n"), "{text}");
            assert!(text.contains("script \"/usr/bin/launcher-firstboot check-apiserver\""));
        }
    }

    #[test]
    fn kubeadm_runs_once_a_boot_and_after_its_own_leftovers_only_behind_a_reset() {
        use Kubeadm::*;
        // (succeeded in this boot, rebooted, manifests there) → what to do
        let cases = [
            ((false, false, false), Run),
            ((false, true, false), Run),
            ((false, false, true), ResetThenRun),
            ((false, true, true), Skip),
            ((true, false, true), Skip),
            ((true, false, false), Skip),
        ];
        for ((done, rebooted, manifests), want) in cases {
            assert_eq!(
                kubeadm_step(done, rebooted, manifests),
                want,
                "{done} {rebooted} {manifests}"
            );
        }
        let root = tempfile::tempdir().unwrap();
        assert!(!manifests_present(root.path()).unwrap());
        std::fs::create_dir_all(root.path().join("etc/kubernetes/manifests")).unwrap();
        assert!(!manifests_present(root.path()).unwrap());
        std::fs::write(root.path().join("etc/kubernetes/manifests/etcd.yaml"), "").unwrap();
        assert!(manifests_present(root.path()).unwrap());
    }

    #[test]
    fn a_master_starts_keepalived_even_when_kubeadm_is_not_run_again() {
        let root = tempfile::tempdir().unwrap();
        let os = recording();
        install(root.path(), &os, &vip_master(join(), true), false).unwrap();
        assert_eq!(
            commands(&os).last().unwrap(),
            "systemctl enable --now keepalived.service"
        );
    }

    #[test]
    fn workers_and_clusters_without_a_vip_start_no_keepalived() {
        let mut worker = crate::test_plan::worker_plan("h", "v1.33.4", vec![]);
        worker.vip = vip_master(join(), true).vip;
        let single = vip_master(join(), false);
        for plan in [worker, single] {
            let root = tempfile::tempdir().unwrap();
            let mut os = recording();
            os.outputs.insert(
                "systemctl".into(),
                "ActiveState=active\nNRestarts=0\n".into(),
            );
            install(root.path(), &os, &plan, true).unwrap();
            let ran = commands(&os);
            assert!(
                !ran.iter()
                    .any(|c| c.contains("keepalived") || c.starts_with("ip ")),
                "{ran:?}"
            );
            assert!(!root.path().join("etc/keepalived").exists());
        }
    }
}
