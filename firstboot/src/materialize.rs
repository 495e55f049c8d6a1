//! The materialize phase: every file of the plan, the hostname, and containerd's configuration
//! sending every registry to the seed, with the sandbox image the plan names.

use crate::fsutil::{self, FsError};
use crate::keys::{self, KeyError};
use crate::os::{Os, OsError};
use cluster::api::{FileSource, Plan};
use cluster::spec::SeedUrl;
use std::path::{Path, PathBuf};

pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
pub const CONTAINERD_HOSTS_DIR: &str = "/etc/containerd/certs.d";
pub const SEED_CA_PATH: &str = "/etc/launcher/seed-ca.crt";
/// The plan's Kubernetes version, for tools that need it without parsing kubeadm's config.
pub const KUBERNETES_VERSION_PATH: &str = "/etc/launcher/kubernetes-version";

#[derive(Debug, thiserror::Error)]
pub enum MaterializeError {
    #[error("plan file {path}")]
    Path {
        path: String,
        #[source]
        source: FsError,
    },
    #[error("plan file {path} takes the host key {name}")]
    Key {
        path: String,
        name: String,
        #[source]
        source: KeyError,
    },
    #[error("plan file {path} has mode {mode:o}: only permission bits (at most 0777) are allowed")]
    Mode { path: String, mode: u32 },
    #[error(
        "hostname {0:?} is not a valid Linux hostname (1-63 of a-z, 0-9, '-', not starting or ending with '-')"
    )]
    Hostname(String),
    #[error(transparent)]
    Write(#[from] FsError),
    #[error(transparent)]
    Durable(#[from] durable::Error),
    #[error(transparent)]
    Os(#[from] OsError),
}

/// Checks a hostname the plan gives before it reaches the kernel and `/etc/hostname`.
pub fn valid_hostname(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Every file to write: the plan's, then containerd's and the seed CA unless the plan has them.
pub fn files_to_write(
    root: &Path,
    plan: &Plan,
    extra: Vec<(String, String, u32)>,
) -> Result<Vec<(PathBuf, Vec<u8>, u32)>, MaterializeError> {
    let mut out = Vec::new();
    for file in &plan.files {
        let dest =
            fsutil::under_root(root, &file.path).map_err(|source| MaterializeError::Path {
                path: file.path.clone(),
                source,
            })?;
        if file.mode > 0o777 {
            return Err(MaterializeError::Mode {
                path: file.path.clone(),
                mode: file.mode,
            });
        }
        let bytes = match &file.source {
            FileSource::Text { text } => text.clone().into_bytes(),
            FileSource::HostKey { name } => keys::read_key(root, name)
                .map_err(|source| MaterializeError::Key {
                    path: file.path.clone(),
                    name: name.clone(),
                    source,
                })?
                .into_bytes(),
        };
        out.push((dest, bytes, file.mode));
    }
    for (path, text, mode) in extra {
        if !plan.files.iter().any(|f| f.path == path) {
            out.push((fsutil::under_root(root, &path)?, text.into_bytes(), mode));
        }
    }
    Ok(out)
}

/// Whether `/` is the kernel's initramfs (`rootfs`, or a `ramfs`/`tmpfs` mounted there), from
/// `/proc/self/mountinfo`: the mount point is the 5th field, the type the first after ` - `.
/// A network-booted host runs from it, and the kernel refuses `pivot_root` out of it.
pub fn root_is_initramfs(mountinfo: &str) -> bool {
    mountinfo.lines().any(|line| {
        let mount_point = line.split_whitespace().nth(4);
        let fs_type = line
            .split_once(" - ")
            .and_then(|(_, rest)| rest.split_whitespace().next());
        mount_point == Some("/") && matches!(fs_type, Some("rootfs" | "ramfs" | "tmpfs"))
    })
}

/// containerd 1.6/1.7 configuration: the CRI's sandbox image, systemd cgroups, registry hosts
/// from [`CONTAINERD_HOSTS_DIR`], and, when the host runs from its initramfs, runc's
/// `NoPivotRoot` (containers are started by `chroot` there, `pivot_root` being refused).
pub fn containerd_config(pause_image: &str, no_pivot_root: bool) -> String {
    let no_pivot = if no_pivot_root {
        "\n  NoPivotRoot = true"
    } else {
        ""
    };
    format!(
        r#"# Written by launcher-firstboot.
version = 2

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = true{no_pivot}

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "{CONTAINERD_HOSTS_DIR}"
"#
    )
}

/// `_default/hosts.toml`: every registry is pulled from the seed, trusted through its CA.
pub fn default_hosts_toml(seed: &SeedUrl) -> String {
    format!(
        r#"# Written by launcher-firstboot: every registry is served by the seed.
[host."{seed}"]
  capabilities = ["pull", "resolve"]
  ca = "{SEED_CA_PATH}"
"#
    )
}

/// `<registry>/hosts.toml` for the registry the plan's images name (the seed's): the seed is
/// its mirror and its server, over HTTPS with the seed's CA (`ca_path`). Without it containerd
/// would fall back from the `_default` mirror to that registry by its own rules (plain HTTP for
/// a loopback name, the system's CAs otherwise), and an image the seed lacks would be reported
/// as that fallback's failure instead of as not found. (containerd 1.6 refuses a file without
/// a `host` table, hence the mirror entry.)
pub fn registry_hosts_toml(seed: &SeedUrl, ca_path: &str) -> String {
    format!(
        r#"# Written by launcher-firstboot: the cluster's registry is the seed.
server = "{seed}"
ca = "{ca_path}"

[host."{seed}"]
  capabilities = ["pull", "resolve"]
  ca = "{ca_path}"
"#
    )
}

/// The registry host of an image reference (`10.77.0.1:8443` of `10.77.0.1:8443/pause:3.10`),
/// when it names one that can be a directory of `certs.d`.
pub fn registry_of(image: &str) -> Option<&str> {
    let (host, _) = image.split_once('/')?;
    let fits = !host.is_empty()
        && host != "."
        && host != ".."
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    fits.then_some(host)
}

/// Writes everything, after checking every path and key first so that a bad plan writes nothing.
pub fn materialize(
    root: &Path,
    os: &dyn Os,
    plan: &Plan,
    seed: &SeedUrl,
    seed_ca_pem: &str,
) -> Result<usize, MaterializeError> {
    if !valid_hostname(&plan.hostname) {
        return Err(MaterializeError::Hostname(plan.hostname.clone()));
    }
    let mut extra = vec![
        (
            CONTAINERD_CONFIG.to_string(),
            containerd_config(
                &plan.images.sandbox,
                std::fs::read_to_string("/proc/self/mountinfo")
                    .is_ok_and(|m| root_is_initramfs(&m)),
            ),
            0o644,
        ),
        (
            format!("{CONTAINERD_HOSTS_DIR}/_default/hosts.toml"),
            default_hosts_toml(seed),
            0o644,
        ),
        (SEED_CA_PATH.to_string(), seed_ca_pem.to_string(), 0o644),
        (
            "/etc/hostname".to_string(),
            format!("{}\n", plan.hostname),
            0o644,
        ),
        // The kubeadm stand-in checks a join's API version against it.
        (
            KUBERNETES_VERSION_PATH.to_string(),
            format!("{}\n", plan.kubernetes_version),
            0o644,
        ),
    ];
    if let Some(registry) = registry_of(&plan.images.sandbox) {
        extra.push((
            format!("{CONTAINERD_HOSTS_DIR}/{registry}/hosts.toml"),
            registry_hosts_toml(seed, SEED_CA_PATH),
            0o644,
        ));
    }
    let files = files_to_write(root, plan, extra)?;
    for (path, bytes, mode) in &files {
        durable::write_atomic(path, bytes, *mode)?;
    }
    os.set_hostname(&plan.hostname)?;
    Ok(files.len())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn the_registry_of_an_image_is_its_first_segment_when_it_can_be_a_directory() {
        assert_eq!(
            registry_of("10.77.0.1:8443/pause:3.10"),
            Some("10.77.0.1:8443")
        );
        assert_eq!(
            registry_of("seed.dc1.example/coredns/coredns:v1.12.0"),
            Some("seed.dc1.example")
        );
        assert_eq!(
            registry_of("[fd00::1]:8443/pause:3.10"),
            Some("[fd00::1]:8443")
        );
        for bad in [
            "pause:3.10",
            "/pause:3.10",
            "../pause:3.10",
            "a b/pause:1",
            ".//x",
        ] {
            assert_eq!(registry_of(bad), None, "{bad}");
        }
    }
    use crate::os::{Action, RecordingOs};
    use cluster::api::PlanFile;
    use cluster::spec::RegistryHost;
    use std::os::unix::fs::PermissionsExt;

    fn plan(files: Vec<PlanFile>) -> Plan {
        plan_for("v1.33.4", files)
    }

    /// A worker's plan with `files`, its images in the registry at 10.0.0.1:8443.
    pub(crate) fn plan_for(version: &str, files: Vec<PlanFile>) -> Plan {
        crate::test_plan::worker_plan("h-1", version, files)
    }

    fn text(path: &str, mode: u32, text: &str) -> PlanFile {
        PlanFile {
            path: path.into(),
            mode,
            source: FileSource::Text { text: text.into() },
        }
    }

    #[test]
    fn runc_skips_pivot_root_only_on_an_initramfs_root() {
        let initramfs = "1 1 0:2 / / rw - rootfs rootfs rw,size=1012k\n\
                         22 1 0:20 / /proc rw,nosuid - proc proc rw\n";
        let tmpfs = "20 1 0:18 / / rw,relatime - tmpfs none rw\n";
        let disk = "29 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
                    30 29 0:25 / /run rw - tmpfs tmpfs rw\n";
        assert!(root_is_initramfs(initramfs));
        assert!(root_is_initramfs(tmpfs));
        assert!(!root_is_initramfs(disk));
        assert!(!root_is_initramfs(""));
        let on = containerd_config("r/pause:3.10", true);
        let off = containerd_config("r/pause:3.10", false);
        assert!(
            on.contains("  SystemdCgroup = true\n  NoPivotRoot = true\n"),
            "{on}"
        );
        assert!(!off.contains("NoPivotRoot"), "{off}");
        for text in [on, off] {
            let parsed: toml::Value = toml::from_str(&text).unwrap();
            assert_eq!(
                parsed["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"].as_str(),
                Some("r/pause:3.10")
            );
        }
    }

    #[test]
    fn writes_plan_files_host_keys_and_containerd_config() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        keys::ensure_keys_and_csrs(r).unwrap();
        let p = plan(vec![
            text(
                "/etc/kubernetes/kubeadm.yaml",
                0o600,
                "imageRepository: 10.0.0.1:8443\n",
            ),
            PlanFile {
                path: "/var/lib/kubelet/pki/kubelet-client.key".into(),
                mode: 0o600,
                source: FileSource::HostKey {
                    name: "kubelet-client".into(),
                },
            },
        ]);
        let seed = "https://10.0.0.1:8443".parse::<SeedUrl>().unwrap();
        let os = RecordingOs::new(std::time::Duration::ZERO, false);
        materialize(r, &os, &p, &seed, "CA PEM").unwrap();

        let key = r.join("var/lib/kubelet/pki/kubelet-client.key");
        assert_eq!(
            std::fs::read_to_string(&key).unwrap(),
            keys::read_key(r, "kubelet-client").unwrap()
        );
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let cfg = std::fs::read_to_string(r.join("etc/containerd/config.toml")).unwrap();
        assert!(
            cfg.contains(r#"sandbox_image = "10.0.0.1:8443/pause:3.10""#),
            "{cfg}"
        );
        assert!(cfg.contains(r#"config_path = "/etc/containerd/certs.d""#));
        assert!(cfg.contains("SystemdCgroup = true"));
        let hosts =
            std::fs::read_to_string(r.join("etc/containerd/certs.d/_default/hosts.toml")).unwrap();
        assert!(
            hosts.contains(r#"[host."https://10.0.0.1:8443"]"#),
            "{hosts}"
        );
        assert_eq!(
            std::fs::read_to_string(r.join("etc/containerd/certs.d/10.0.0.1:8443/hosts.toml"))
                .unwrap(),
            "# Written by launcher-firstboot: the cluster's registry is the seed.\n\
             server = \"https://10.0.0.1:8443\"\nca = \"/etc/launcher/seed-ca.crt\"\n\n\
             [host.\"https://10.0.0.1:8443\"]\n  capabilities = [\"pull\", \"resolve\"]\n  \
             ca = \"/etc/launcher/seed-ca.crt\"\n"
        );
        assert_eq!(
            std::fs::read_to_string(r.join("etc/launcher/seed-ca.crt")).unwrap(),
            "CA PEM"
        );
        assert_eq!(
            std::fs::read_to_string(r.join("etc/launcher/kubernetes-version")).unwrap(),
            "v1.33.4\n"
        );
        assert_eq!(
            os.actions(),
            vec![Action::SetHostname {
                name: "demo-w1".into()
            }]
        );
        let parsed: toml::Value = toml::from_str(&cfg).unwrap();
        assert_eq!(parsed["version"].as_integer(), Some(2));
        toml::from_str::<toml::Value>(&hosts).unwrap();
    }

    #[test]
    fn a_bad_plan_writes_nothing() {
        let cases = vec![
            (
                plan(vec![
                    text("/etc/a", 0o644, "a"),
                    text("/etc/../../escape", 0o644, "x"),
                ]),
                "plan file /etc/../../escape",
            ),
            (
                plan(vec![
                    text("/etc/a", 0o644, "a"),
                    text("/etc/b", 0o4755, "x"),
                ]),
                "plan file /etc/b has mode 4755",
            ),
            (
                plan(vec![
                    text("/etc/a", 0o644, "a"),
                    PlanFile {
                        path: "/etc/k".into(),
                        mode: 0o600,
                        source: FileSource::HostKey { name: "ca".into() },
                    },
                ]),
                "plan file /etc/k takes the host key ca",
            ),
        ];
        let seed = "https://s:1".parse::<SeedUrl>().unwrap();
        for (p, want) in cases {
            let root = tempfile::tempdir().unwrap();
            let os = RecordingOs::new(std::time::Duration::ZERO, false);
            let err = materialize(root.path(), &os, &p, &seed, "").unwrap_err();
            assert!(err.to_string().starts_with(want), "{err}");
            assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0, "{want}");
            assert!(os.actions().is_empty());
        }
    }

    /// containerd must name kubeadm's pause image for the plan's version (cluster's
    /// `pause_tags_are_kubeadms` pins the tag per minor): a wrong one leaves the sandbox image
    /// one nobody imported.
    #[test]
    fn the_sandbox_image_is_kubeadms_pause_for_the_version() {
        let seed = "https://10.0.0.1:8443".parse::<SeedUrl>().unwrap();
        let registry: RegistryHost = "10.0.0.1:8443".parse().unwrap();
        for minor in cluster::spec::MIN_MINOR..=cluster::spec::MAX_MINOR {
            let version = format!("v1.{minor}.0");
            let root = tempfile::tempdir().unwrap();
            let os = RecordingOs::new(std::time::Duration::ZERO, false);
            materialize(root.path(), &os, &plan_for(&version, vec![]), &seed, "").unwrap();
            let cfg =
                std::fs::read_to_string(root.path().join("etc/containerd/config.toml")).unwrap();
            let pause = cluster::kubeadm::pause_image(&version.parse().unwrap(), &registry);
            let want = format!(r#"sandbox_image = "{pause}""#);
            assert!(cfg.contains(&want), "{version}: {cfg}");
        }
    }

    #[test]
    fn hostnames_are_checked() {
        assert!(!valid_hostname("Demo"));
        assert!(valid_hostname("demo-m1"));
    }
}
