//! kubeadm init's and control-plane join's preflight checks that apply on a real host
//! (`preflight/checks.go` `RunInitNodeChecks`, `RunJoinNodeChecks`,
//! `checks_linux.go`, kubeadm v1.33, with the per-version differences of the target minor):
//! names, messages and error-or-warning as kubeadm has them, `ignorePreflightErrors` (and
//! `all`) lowering errors to warnings. `/proc`, `/sys`, the PATH's directories and the CRI
//! socket are read under the [`Root`]; ports are the host's own.

use super::config::InitConfig;
use super::manifests::{COMPONENTS, MANIFESTS_DIR};
use crate::Root;
use std::net::TcpListener;

/// kubeadm's `ControlPlaneNumCPU` and `ControlPlaneMem` (MB).
const MIN_CPUS: usize = 2;
const MIN_MEM_MB: u64 = 1700;
const KUBELET_PORT: u16 = 10250;
const SCHEDULER_PORT: u16 = 10259;
const CONTROLLER_MANAGER_PORT: u16 = 10257;
const IPV4_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const IPV6_FORWARD: &str = "/proc/sys/net/ipv6/conf/default/forwarding";
const BRIDGE_NF: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";
const KUBELET_CONF: &str = "/etc/kubernetes/kubelet.conf";
const BOOTSTRAP_KUBELET_CONF: &str = "/etc/kubernetes/bootstrap-kubelet.conf";

/// Preflight found errors nobody ignored; the message is kubeadm's block.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "[preflight] Some fatal errors occurred:\n{}[preflight] If you know what you are doing, you can make a check non-fatal with `--ignore-preflight-errors=...`",
    .errors.iter().map(|e| format!("\t{e}\n")).collect::<String>()
)]
pub struct PreflightError {
    /// `[ERROR Name]: message` lines.
    pub errors: Vec<String>,
}

/// One check's result: a name and what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Finding {
    name: String,
    warnings: Vec<String>,
    errors: Vec<String>,
}

impl Finding {
    fn new(name: impl Into<String>) -> Finding {
        Finding {
            name: name.into(),
            warnings: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn error(mut self, cond: bool, message: impl FnOnce() -> String) -> Finding {
        if cond {
            self.errors.push(message());
        }
        self
    }

    fn warning(mut self, cond: bool, message: impl FnOnce() -> String) -> Finding {
        if cond {
            self.warnings.push(message());
        }
        self
    }
}

fn path_name(prefix: &str, path: &str) -> String {
    format!("{prefix}{}", path.replace('/', "-"))
}

/// Logical CPUs from `/sys/devices/system/cpu/online` (`0-3,6`).
fn cpus(root: &Root) -> Option<usize> {
    let text = std::fs::read_to_string(root.path("/sys/devices/system/cpu/online")).ok()?;
    text.trim().split(',').try_fold(0, |n, range| {
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
        Some(n + b.checked_sub(a)? + 1)
    })
}

/// `MemTotal` of `/proc/meminfo` in MB (kubeadm: sysinfo's total RAM / 1024 / 1024).
fn mem_mb(root: &Root) -> Option<u64> {
    let text = std::fs::read_to_string(root.path("/proc/meminfo")).ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

fn num_cpu(root: &Root) -> Finding {
    let n = cpus(root).unwrap_or(0);
    Finding::new("NumCPU").error(n < MIN_CPUS, || {
        format!("the number of available CPUs {n} is less than the required {MIN_CPUS}")
    })
}

fn mem(root: &Root) -> Finding {
    let mb = mem_mb(root).unwrap_or(0);
    Finding::new("Mem").error(mb < MIN_MEM_MB, || {
        format!("the system RAM ({mb} MB) is less than the minimum {MIN_MEM_MB} MB")
    })
}

fn port(port: u16) -> Finding {
    let free = TcpListener::bind(("0.0.0.0", port)).is_ok();
    Finding::new(format!("Port-{port}")).error(!free, || format!("Port {port} is in use"))
}

fn file_available(root: &Root, path: &str) -> Finding {
    let exists = root.path(path).exists();
    Finding::new(path_name("FileAvailable-", path))
        .error(exists, || format!("{path} already exists"))
}

fn dir_available(root: &Root, path: &str) -> Finding {
    let busy = std::fs::read_dir(root.path(path)).is_ok_and(|mut d| d.next().is_some());
    Finding::new(path_name("DirAvailable-", path)).error(busy, || format!("{path} is not empty"))
}

/// `FileExistingCheck` with kubeadm's `ExternalEtcdClientCertificates` label.
fn etcd_file(root: &Root, path: &str) -> Finding {
    let missing = !root.path(path).exists();
    Finding::new("ExternalEtcdClientCertificates")
        .error(missing, || format!("{path} doesn't exist"))
}

fn file_content(root: &Root, path: &str, want: &str) -> Finding {
    let name = path_name("FileContent-", path);
    match std::fs::read(root.path(path)) {
        Err(_) => Finding::new(name).error(true, || format!("{path} does not exist")),
        Ok(bytes) => Finding::new(name).error(!bytes.starts_with(want.as_bytes()), || {
            format!("{path} contents are not set to {want}")
        }),
    }
}

fn swap(root: &Root) -> Finding {
    let lines = std::fs::read_to_string(root.path("/proc/swaps"))
        .map(|t| t.lines().count())
        .unwrap_or(0);
    Finding::new("Swap").warning(lines > 1, || {
        "swap is supported for cgroup v2 only. The kubelet must be properly configured to use swap. \
         Please refer to https://kubernetes.io/docs/concepts/architecture/nodes/#swap-memory, or disable swap on the node"
            .to_owned()
    })
}

/// `InPathCheck`: the PATH's directories, under the root.
fn in_path(root: &Root, exe: &str, mandatory: bool) -> Finding {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path.split(':').filter(|d| !d.is_empty()).any(|dir| {
        std::fs::metadata(root.path(&format!("{dir}/{exe}")))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    });
    let message = || format!("{exe} not found in system path");
    let finding = Finding::new(format!("FileExisting-{exe}"));
    if mandatory {
        finding.error(!found, message)
    } else {
        finding.warning(!found, message)
    }
}

/// The executables kubeadm looks for, by the target's minor: crictl an error until 1.30, a
/// warning in 1.31, then gone; conntrack until 1.31.
fn exec_checks(root: &Root, minor: u32) -> Vec<Finding> {
    let mut out = Vec::new();
    if minor <= 31 {
        out.push(in_path(root, "crictl", minor <= 30));
        out.push(in_path(root, "conntrack", true));
    }
    for exe in ["ip", "iptables", "mount", "nsenter"] {
        out.push(in_path(root, exe, true));
    }
    for exe in ["ebtables", "ethtool", "socat", "tc", "touch"] {
        out.push(in_path(root, exe, false));
    }
    out
}

/// `ContainerRuntimeCheck`: the CRI socket answers.
fn cri(root: &Root, socket: &str) -> Finding {
    let path = socket.strip_prefix("unix://").unwrap_or(socket);
    let result = std::os::unix::net::UnixStream::connect(root.path(path));
    Finding::new("CRI").error(result.is_err(), || {
        let e = result.err().map(|e| e.to_string()).unwrap_or_default();
        format!("container runtime is not running: connecting to {socket}: {e}")
    })
}

fn forwarding(root: &Root, cfg: &InitConfig) -> Vec<Finding> {
    let subnets = cfg
        .service_subnet
        .split(',')
        .chain(cfg.pod_subnet.iter().flat_map(|p| p.split(',')));
    let (mut v4, mut v6) = (
        cfg.advertise_address.is_ipv4(),
        cfg.advertise_address.is_ipv6(),
    );
    for cidr in subnets {
        let ip = cidr.split('/').next().unwrap_or_default();
        v4 |= ip.parse::<std::net::Ipv4Addr>().is_ok();
        v6 |= ip.parse::<std::net::Ipv6Addr>().is_ok();
    }
    let mut out = Vec::new();
    if v4 {
        // kubeadm 1.30 stopped checking the bridge sysctl (kube-proxy sets it when needed).
        if cfg.minor < 30 {
            out.push(file_content(root, BRIDGE_NF, "1"));
        }
        out.push(file_content(root, IPV4_FORWARD, "1"));
    }
    if v6 {
        out.push(file_content(root, IPV6_FORWARD, "1"));
    }
    out
}

/// `InitNodeChecks` for a first control plane with an external etcd, in kubeadm's order.
fn init_checks(root: &Root, cfg: &InitConfig) -> Vec<Finding> {
    let mut out = vec![
        num_cpu(root),
        mem(root),
        port(cfg.bind_port),
        port(SCHEDULER_PORT),
        port(CONTROLLER_MANAGER_PORT),
    ];
    for component in COMPONENTS.iter().chain(&["etcd"]) {
        out.push(file_available(
            root,
            &format!("{MANIFESTS_DIR}/{component}.yaml"),
        ));
    }
    out.push(cri(root, &cfg.cri_socket));
    out.push(swap(root));
    out.extend(exec_checks(root, cfg.minor));
    out.push(port(KUBELET_PORT));
    out.extend(forwarding(root, cfg));
    out
}

/// Runs the checks: warnings (and ignored errors) as kubeadm prints them, or every error.
pub fn run(root: &Root, cfg: &InitConfig) -> Result<Vec<String>, PreflightError> {
    judge(init_checks(root, cfg), cfg)
}

/// `RunJoinNodeChecks` for a join discovered from a file (no endpoint to check forwarding
/// for), in kubeadm's order.
fn join_checks(root: &Root, cfg: &InitConfig) -> Vec<Finding> {
    let mut out = vec![
        dir_available(root, MANIFESTS_DIR),
        file_available(root, KUBELET_CONF),
        file_available(root, BOOTSTRAP_KUBELET_CONF),
        cri(root, &cfg.cri_socket),
        swap(root),
    ];
    out.extend(exec_checks(root, cfg.minor));
    out.push(port(KUBELET_PORT));
    out
}

/// `RunInitNodeChecks` for a secondary control plane whose certificates are given: the host
/// and common checks already ran in [`join_checks`].
fn secondary_control_plane_checks(root: &Root, cfg: &InitConfig) -> Vec<Finding> {
    let mut out = vec![
        num_cpu(root),
        mem(root),
        port(cfg.bind_port),
        port(SCHEDULER_PORT),
        port(CONTROLLER_MANAGER_PORT),
    ];
    for component in COMPONENTS.iter().chain(&["etcd"]) {
        out.push(file_available(
            root,
            &format!("{MANIFESTS_DIR}/{component}.yaml"),
        ));
    }
    let etcd = cfg.etcd.iter();
    let files = etcd.flat_map(|e| [&e.ca_file, &e.cert_file, &e.key_file]);
    out.extend(files.flatten().map(|f| etcd_file(root, f)));
    out
}

/// A control-plane join's checks: the node's, then, when they pass, the control plane's, as
/// kubeadm runs them in two rounds.
pub fn run_join_control_plane(
    root: &Root,
    cfg: &InitConfig,
) -> Result<Vec<String>, PreflightError> {
    let mut warnings = judge(join_checks(root, cfg), cfg)?;
    warnings.extend(judge(secondary_control_plane_checks(root, cfg), cfg)?);
    Ok(warnings)
}

fn judge(findings: Vec<Finding>, cfg: &InitConfig) -> Result<Vec<String>, PreflightError> {
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    for f in findings {
        let ignored = cfg.ignores(&f.name);
        for w in &f.warnings {
            warnings.push(format!("[WARNING {}]: {w}", f.name));
        }
        for e in &f.errors {
            let line = if ignored { "WARNING" } else { "ERROR" };
            let target = if ignored { &mut warnings } else { &mut errors };
            target.push(format!("[{line} {}]: {e}", f.name));
        }
    }
    if errors.is_empty() {
        Ok(warnings)
    } else {
        Err(PreflightError { errors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ignore: &str) -> InitConfig {
        let text = format!(
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n\
             localAPIEndpoint: {{advertiseAddress: 10.0.0.5}}\n\
             nodeRegistration: {{name: m1, ignorePreflightErrors: [{ignore}]}}\n---\n\
             apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: v1.33.4\n"
        );
        InitConfig::from_docs(&crate::docs::parse("k", &text).unwrap()).unwrap()
    }

    fn root_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let root = Root(dir.path().to_owned());
        (dir, root)
    }

    #[test]
    fn host_readings_and_their_messages() {
        let (_d, root) = root_with(&[
            ("/sys/devices/system/cpu/online", "0-1,3\n"),
            (
                "/proc/meminfo",
                "MemTotal:        1048576 kB\nMemFree: 1 kB\n",
            ),
            (
                "/proc/swaps",
                "Filename Type Size Used Priority\n/swap file 1 0 -2\n",
            ),
            (IPV4_FORWARD, "0\n"),
        ]);
        assert_eq!(cpus(&root), Some(3));
        assert_eq!(
            mem(&root).errors,
            ["the system RAM (1024 MB) is less than the minimum 1700 MB"]
        );
        assert_eq!(swap(&root).warnings.len(), 1);
        assert_eq!(
            file_content(&root, IPV4_FORWARD, "1").errors,
            ["/proc/sys/net/ipv4/ip_forward contents are not set to 1"]
        );
        assert_eq!(
            file_content(&root, IPV4_FORWARD, "1").name,
            "FileContent--proc-sys-net-ipv4-ip_forward"
        );
        assert_eq!(
            in_path(&root, "socat", false).warnings,
            ["socat not found in system path"]
        );
    }

    #[test]
    fn a_join_refuses_a_used_manifest_directory_and_a_kubelet_conf() {
        let (_d, root) = root_with(&[
            ("/etc/kubernetes/manifests/extra.yaml", "kind: Pod\n"),
            (KUBELET_CONF, "x"),
        ]);
        let found = join_checks(&root, &cfg(""));
        let errors: Vec<(&str, &[String])> = found[..3]
            .iter()
            .map(|f| (f.name.as_str(), f.errors.as_slice()))
            .collect();
        assert_eq!(
            errors,
            [
                (
                    "DirAvailable--etc-kubernetes-manifests",
                    &["/etc/kubernetes/manifests is not empty".to_owned()][..]
                ),
                (
                    "FileAvailable--etc-kubernetes-kubelet.conf",
                    &["/etc/kubernetes/kubelet.conf already exists".to_owned()][..]
                ),
                (
                    "FileAvailable--etc-kubernetes-bootstrap-kubelet.conf",
                    &[][..]
                ),
            ]
        );
        let (_d, empty) = root_with(&[]);
        assert!(dir_available(&empty, MANIFESTS_DIR).errors.is_empty());
    }

    #[test]
    fn ignored_errors_become_warnings() {
        let findings = || {
            vec![
                Finding::new("Mem").error(true, || "low".into()),
                Finding::new("Swap").warning(true, || "on".into()),
            ]
        };
        assert_eq!(
            judge(findings(), &cfg("")).unwrap_err().to_string(),
            "[preflight] Some fatal errors occurred:\n\t[ERROR Mem]: low\n[preflight] If you know what you are doing, you can make a check non-fatal with `--ignore-preflight-errors=...`"
        );
        for ignore in ["mem", "Mem", "all"] {
            assert_eq!(
                judge(findings(), &cfg(ignore)).unwrap(),
                ["[WARNING Mem]: low", "[WARNING Swap]: on"]
            );
        }
    }
}
