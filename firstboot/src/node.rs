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
        crate::podlogs::control_plane_output(root, node)
    })
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

#[cfg(test)]
mod tests;
