//! The image's layout as a value: every file, directory and link the builder adds to the base
//! rootfs, with its owner and mode, decided from the definition without touching a disk.

use std::path::PathBuf;

use cluster::firstboot::FirstbootFile;
use cluster::spec::NtpServer;

use crate::definition::{Definition, ImagePath, Mode};

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Bytes(Vec<u8>),
    /// A file on the build machine, copied as is.
    File(PathBuf),
    Dir,
    Symlink(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: ImagePath,
    pub content: Content,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Inputs found on the build machine (checked by the time the layout is made).
#[derive(Debug, Clone)]
pub struct Resolved {
    pub firstboot_binary: PathBuf,
    pub firstboot_unit: String,
    pub kubeadm: PathBuf,
    pub kubelet: PathBuf,
    pub kubectl: PathBuf,
    /// Other binaries of the bundle (crictl, CNI plugins): `(path in the image, file)`.
    pub tools: Vec<(String, PathBuf)>,
    /// The control-plane images of a server release, for `kubernetes-images.tar`.
    pub release_images: Vec<crate::release::ReleaseImage>,
    /// `(file name, archive reduced to the target platform)`.
    pub images: Vec<(String, PathBuf)>,
    pub overlay: Vec<OverlayItem>,
}

/// One thing found in the overlay directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayItem {
    /// Path relative to the overlay directory, `/`-separated.
    pub rel: String,
    pub kind: OverlayKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayKind {
    File(PathBuf),
    Dir,
    Symlink(String),
}

/// Where preloaded container images go; firstboot imports every archive found there.
pub const IMAGES_DIR: &str = cluster::firstboot::DEFAULT_PRELOAD_DIR;
/// Where firstboot's configuration goes.
pub const FIRSTBOOT_CONFIG: &str = cluster::firstboot::PATH;
pub const FIRSTBOOT_UNIT: &str = "/usr/lib/systemd/system/launcher-firstboot.service";
/// The resident agent's unit (`launcher-firstboot agent`).
pub const AGENT_UNIT: &str = "/usr/lib/systemd/system/launcher-agent.service";
/// The agent's unit as shipped; its ExecStart is pointed at the image's firstboot binary.
const AGENT_UNIT_TEXT: &str = include_str!("../../firstboot/dist/launcher-agent.service");

fn p(path: &str) -> ImagePath {
    ImagePath::parse(path).unwrap_or_else(|e| panic!("built-in path {path}: {e}"))
}

fn file(path: &str, bytes: impl Into<Vec<u8>>, mode: u32) -> Entry {
    Entry {
        path: p(path),
        content: Content::Bytes(bytes.into()),
        mode,
        uid: 0,
        gid: 0,
    }
}

fn copy(path: &str, from: &std::path::Path, mode: u32) -> Entry {
    Entry {
        path: p(path),
        content: Content::File(from.to_path_buf()),
        mode,
        uid: 0,
        gid: 0,
    }
}

fn link(path: &str, target: &str) -> Entry {
    Entry {
        path: p(path),
        content: Content::Symlink(target.to_string()),
        mode: 0o777,
        uid: 0,
        gid: 0,
    }
}

/// Everything added to the base, in the order it is applied (later entries win).
pub fn layout(def: &Definition, inputs: &Resolved) -> Vec<Entry> {
    let mut out = Vec::new();
    out.extend(firstboot_entries(def, inputs));
    out.extend(bundle_entries(def, inputs));
    for (name, archive) in &inputs.images {
        out.push(copy(&format!("{IMAGES_DIR}/{name}"), archive, 0o644));
    }
    out.extend(node_entries());
    out.extend(chrony_entries(def));
    if let Some(overlay) = &def.overlay {
        out.extend(overlay_entries(overlay, &inputs.overlay));
    }
    out
}

fn firstboot_entries(def: &Definition, inputs: &Resolved) -> Vec<Entry> {
    let unit = &inputs.firstboot_unit;
    let exec = exec_path(unit).unwrap_or_else(|| "/usr/local/bin/launcher-firstboot".into());
    let wanted_by = wanted_by(unit).unwrap_or_else(|| "multi-user.target".into());
    vec![
        copy(&exec, &inputs.firstboot_binary, 0o755),
        file(FIRSTBOOT_UNIT, unit.as_bytes(), 0o644),
        link(
            &format!("/etc/systemd/system/{wanted_by}.wants/launcher-firstboot.service"),
            FIRSTBOOT_UNIT,
        ),
        file(AGENT_UNIT, agent_unit(&exec).as_bytes(), 0o644),
        link(
            "/etc/systemd/system/multi-user.target.wants/launcher-agent.service",
            AGENT_UNIT,
        ),
        file(FIRSTBOOT_CONFIG, firstboot_config(def), 0o644),
        // systemd makes a fresh machine id on each machine's first boot.
        file("/etc/machine-id", "uninitialized\n", 0o444),
        // Not the build machine's name servers, which mmdebstrap copied in for apt: a node's
        // would be wrong in every datacenter, and unreachable ones make each name lookup wait
        // out their timeouts. Hosts reach the seed and each other by address.
        file("/etc/resolv.conf", RESOLV_CONF, 0o644),
    ]
}

/// The agent's unit, running `exec agent`.
fn agent_unit(exec: &str) -> String {
    AGENT_UNIT_TEXT.replace(
        "ExecStart=/usr/bin/launcher-firstboot agent",
        &format!("ExecStart={exec} agent"),
    )
}

/// `/etc/resolv.conf` of every image: no name server.
pub const RESOLV_CONF: &str = "# Written by launcher-build: no name server. Nodes reach the seed and each other by address.\n";

/// `/etc/launcher/firstboot.toml`, the type firstboot reads it with; the kernel command line
/// words `launcher.seed=`, `launcher.pin=` and `launcher.ntp=` override it at boot.
pub fn firstboot_config(def: &Definition) -> String {
    let fb = &def.firstboot;
    FirstbootFile {
        seed: vec![fb.seed_url.clone()],
        pin: Some(fb.ca_pin),
        ntp: Some(fb.ntp.clone()),
        preload_dir: Some(IMAGES_DIR.to_string()),
        kubernetes_version: Some(def.bundle.version),
        ..FirstbootFile::default()
    }
    .render(&[&format!(
        "Written by launcher-build for image {} (Kubernetes {}).",
        def.name.as_str(),
        def.bundle.version
    )])
}

/// chrony's `server` line for the seed's NTP server.
pub fn chrony_server(ntp: &NtpServer) -> String {
    let endpoint = ntp.endpoint();
    // chrony takes an IPv6 address bare, without the brackets of a URL.
    let host = match endpoint.host().ip() {
        Some(ip) => ip.to_string(),
        None => endpoint.host().to_string(),
    };
    format!("server {host} port {} iburst\n", endpoint.port())
}

fn bundle_entries(def: &Definition, inputs: &Resolved) -> Vec<Entry> {
    let standins = matches!(
        def.bundle.source,
        crate::definition::BundleSource::Standins { .. }
    );
    let record = format!(
        "version = \"{}\"\nstandins = {standins}\n",
        def.bundle.version
    );
    let tools = inputs
        .tools
        .iter()
        .map(|(path, from)| copy(path, from, 0o755));
    let mut entries = vec![
        copy("/usr/bin/kubeadm", &inputs.kubeadm, 0o755),
        copy("/usr/bin/kubelet", &inputs.kubelet, 0o755),
        copy("/usr/bin/kubectl", &inputs.kubectl, 0o755),
        file("/usr/share/launcher/kubernetes.toml", record, 0o644),
        file(
            "/usr/lib/systemd/system/kubelet.service",
            KUBELET_UNIT,
            0o644,
        ),
        file(
            "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf",
            KUBELET_DROPIN,
            0o644,
        ),
    ];
    entries.extend(tools);
    entries
}

const KUBELET_UNIT: &str = "[Unit]\nDescription=kubelet: The Kubernetes Node Agent\n\
Wants=network-online.target\nAfter=network-online.target containerd.service\n\n\
[Service]\nExecStart=/usr/bin/kubelet\nRestart=always\nRestartSec=10\n\n\
[Install]\nWantedBy=multi-user.target\n";

const KUBELET_DROPIN: &str = "[Service]\n\
Environment=\"KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf\"\n\
Environment=\"KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml\"\n\
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env\n\
EnvironmentFile=-/etc/default/kubelet\n\
ExecStart=\n\
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS\n";

/// What kubeadm's preflight checks ask of a node.
fn node_entries() -> Vec<Entry> {
    vec![
        file(
            "/etc/modules-load.d/launcher.conf",
            "overlay\nbr_netfilter\n",
            0o644,
        ),
        file(
            "/etc/sysctl.d/90-launcher.conf",
            "net.ipv4.ip_forward = 1\nnet.bridge.bridge-nf-call-iptables = 1\n\
             net.bridge.bridge-nf-call-ip6tables = 1\n",
            0o644,
        ),
        // Swap off: no swap unit can be reached.
        link("/etc/systemd/system/swap.target", "/dev/null"),
        // The distribution's etcd unit stays off: firstboot runs the cluster's member on masters
        // as launcher-etcd, with the configuration the seed planned.
        link("/etc/systemd/system/etcd.service", "/dev/null"),
        file("/etc/containerd/config.toml", CONTAINERD_CONFIG, 0o644),
        file(
            "/etc/systemd/network/80-launcher-dhcp.network",
            NETWORK,
            0o644,
        ),
        link(
            "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
            "/lib/systemd/system/systemd-networkd.service",
        ),
        link(
            "/etc/systemd/system/sockets.target.wants/systemd-networkd.socket",
            "/lib/systemd/system/systemd-networkd.socket",
        ),
        file(
            "/etc/systemd/system/systemd-networkd-wait-online.service.d/launcher.conf",
            "[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30\n",
            0o644,
        ),
    ]
}

/// Names no sandbox image: the pause image is the host's plan's (`images.sandbox`), which
/// launcher-firstboot writes into this file when it materializes the plan.
const CONTAINERD_CONFIG: &str = "# Written by launcher-build: kubeadm's systemd cgroup driver.\n\
# launcher-firstboot rewrites this file with the sandbox (pause) image of the host's plan.\n\
version = 2\n\n\
[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\n\
[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n\n\
[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n";

const NETWORK: &str = "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n";

/// chrony follows the seed only, and starts after firstboot has stepped the clock.
fn chrony_entries(def: &Definition) -> Vec<Entry> {
    vec![
        file(
            "/etc/chrony/chrony.conf",
            "# Written by launcher-build: follow the seed (launcher-firstboot may rewrite the source).\n\
             sourcedir /etc/chrony/sources.d\ndriftfile /var/lib/chrony/chrony.drift\n\
             makestep 1 3\nrtcsync\n",
            0o644,
        ),
        file(
            "/etc/chrony/sources.d/launcher-seed.sources",
            chrony_server(&def.firstboot.ntp),
            0o644,
        ),
        file(
            "/etc/systemd/system/chrony.service.d/launcher.conf",
            "[Unit]\nAfter=launcher-firstboot.service\n",
            0o644,
        ),
    ]
}

fn overlay_entries(overlay: &crate::definition::Overlay, items: &[OverlayItem]) -> Vec<Entry> {
    items
        .iter()
        .map(|item| {
            let path = p(&format!("/{}", item.rel));
            let over = overlay.entries.iter().find(|e| e.path == path);
            let (content, default_mode) = match &item.kind {
                OverlayKind::File(src) => (Content::File(src.clone()), overlay.file_mode),
                OverlayKind::Dir => (Content::Dir, overlay.dir_mode),
                OverlayKind::Symlink(t) => (Content::Symlink(t.clone()), Mode(0o777)),
            };
            Entry {
                path,
                content,
                mode: over.and_then(|e| e.mode).unwrap_or(default_mode).0,
                uid: over.and_then(|e| e.uid).unwrap_or(overlay.uid),
                gid: over.and_then(|e| e.gid).unwrap_or(overlay.gid),
            }
        })
        .collect()
}

/// The program of a unit's first `ExecStart=` line, without systemd's prefix characters.
pub fn exec_path(unit: &str) -> Option<String> {
    let value = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("ExecStart="))?;
    let program = value
        .trim_start_matches(['-', '@', '!', '+', ':'])
        .split_whitespace()
        .next()?;
    ImagePath::parse(program)
        .ok()
        .map(|p| p.as_str().to_string())
}

/// The target of a unit's `WantedBy=` line.
pub fn wanted_by(unit: &str) -> Option<String> {
    let value = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("WantedBy="))?;
    let target = value.split_whitespace().next()?;
    target
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        .then(|| target.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_parsing() {
        let unit = "[Service]\nExecStart=-/usr/bin/launcher-firstboot run\n[Install]\nWantedBy=basic.target\n";
        assert_eq!(
            exec_path(unit).as_deref(),
            Some("/usr/bin/launcher-firstboot")
        );
        assert_eq!(wanted_by(unit).as_deref(), Some("basic.target"));
        assert_eq!(exec_path("[Service]\nExecStart=relative\n"), None);
        let server = |s: &str| chrony_server(&s.parse().unwrap());
        assert_eq!(
            server("10.0.0.1:1123"),
            "server 10.0.0.1 port 1123 iburst\n"
        );
        assert_eq!(server("seed.lan"), "server seed.lan port 123 iburst\n");
        assert_eq!(server("fd00::1"), "server fd00::1 port 123 iburst\n");
    }

    #[test]
    fn firstboot_reads_back_what_the_builder_writes() {
        let text = "name = \"demo\"\n[base.tarball]\npath = \"b.tar\"\nsha256 = \"{zeros}\"\n\
                    [bundle]\nversion = \"v1.33.4\"\nstandins = true\nkubectl = \"/usr/bin/kubectl\"\n\
                    [firstboot]\nseed_url = \"https://10.77.0.1:8443\"\nntp = \"10.77.0.1\"\n\
                    ca_pin = \"sha256:{ones}\"\n"
            .replace("{zeros}", &"0".repeat(64))
            .replace("{ones}", &"1".repeat(64));
        let def = crate::definition::parse(&text, std::path::Path::new("/d/img.toml")).unwrap();
        let written = firstboot_config(&def);
        assert!(
            written
                .starts_with("# Written by launcher-build for image demo (Kubernetes v1.33.4).\n"),
            "{written}"
        );
        let read = FirstbootFile::parse("firstboot.toml", &written).unwrap();
        assert_eq!(read.seed, vec![def.firstboot.seed_url.clone()]);
        assert_eq!(read.pin, Some(def.firstboot.ca_pin));
        assert_eq!(read.ntp.unwrap().to_string(), "10.77.0.1:123");
        assert_eq!(read.preload_dir.as_deref(), Some(IMAGES_DIR));
        assert_eq!(read.kubernetes_version, Some(def.bundle.version));
    }

    /// The sandbox image is the plan's; a baked one would contradict it until firstboot runs.
    #[test]
    fn the_baked_containerd_config_names_no_sandbox_image() {
        let config = node_entries()
            .into_iter()
            .find(|e| e.path == p("/etc/containerd/config.toml"))
            .expect("containerd config in the layout");
        let Content::Bytes(bytes) = config.content else {
            panic!("containerd config is not bytes")
        };
        let text = String::from_utf8(bytes).unwrap();
        assert!(!text.contains("sandbox_image"), "{text}");
        assert!(!text.contains("pause:"), "{text}");
        assert!(text.contains("SystemdCgroup = true"), "{text}");
    }
}
