//! Helpers for firstboot's integration tests: a host tree in a tempdir and runs of firstboot on
//! it through the library, with a recording `Os` (a simulated clock, actions written down).

#![allow(dead_code)]

pub mod pki;
pub mod plan;

use clap::Parser;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
/// A pin no seed has.
pub const OTHER_PIN: &str =
    "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// Ten years, in seconds.
pub const DECADE_SECS: i64 = 10 * 365 * 86_400;

/// A host tree: sysfs with two NICs and DMI ids, an empty kernel command line.
pub struct Host {
    pub dir: tempfile::TempDir,
}

impl Host {
    pub fn new(mac_last: u8) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let h = Host { dir };
        h.put("sys/class/net/lo/address", "00:00:00:00:00:00\n");
        h.put(
            "sys/class/net/eth0/address",
            &format!("52:54:00:00:00:{mac_last:02x}\n"),
        );
        h.put(
            "sys/class/dmi/id/product_uuid",
            &format!("00000000-0000-4000-8000-0000000000{mac_last:02x}\n"),
        );
        h.put(
            "sys/class/dmi/id/product_serial",
            &format!("SN-{mac_last}\n"),
        );
        h.put("proc/cmdline", "quiet\n");
        h
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel.trim_start_matches('/'))
    }

    pub fn put(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn sim_dir(&self) -> PathBuf {
        self.path("sim")
    }

    /// Runs firstboot on this tree, simulated (clock offset, actions recorded), with `args`.
    pub fn run(&self, clock_offset_secs: i64, args: &[&str]) -> Run {
        self.run_with_real(clock_offset_secs, &[], args)
    }

    /// Like [`Host::run`], but the programs in `real` (e.g. `ctr`) run for real.
    pub fn run_with_real(&self, clock_offset_secs: i64, real: &[&str], args: &[&str]) -> Run {
        let root = self.root().display().to_string();
        let argv = ["launcher-firstboot", "--root", &root]
            .into_iter()
            .chain(args.iter().copied());
        let cli = firstboot::cli::Cli::try_parse_from(argv).unwrap();
        let real: BTreeSet<String> = real.iter().map(|p| p.to_string()).collect();
        let os = firstboot::os::RecordingOs::persistent(&self.sim_dir(), clock_offset_secs, real)
            .unwrap();
        let mut stderr = Vec::new();
        let code = firstboot::cli::run_with(&cli, &os, &mut stderr);
        Run {
            status: Status(code),
            stderr,
        }
    }

    pub fn journal(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.path("var/lib/launcher/firstboot.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    pub fn done_phases(&self) -> Vec<String> {
        self.journal()["done"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect()
    }

    pub fn actions(&self) -> Vec<firstboot::os::Action> {
        firstboot::os::read_actions(&self.sim_dir())
    }
}

/// How a run of firstboot ended: its exit status and what it wrote for a person to read.
pub struct Run {
    pub status: Status,
    pub stderr: Vec<u8>,
}

/// The exit status `launcher-firstboot` would have returned.
pub struct Status(i32);

impl Status {
    pub fn code(&self) -> Option<i32> {
        Some(self.0)
    }
}

/// Anything with a standard error to show in an assertion message.
pub trait Stderr {
    fn stderr_bytes(&self) -> &[u8];
}

impl Stderr for Output {
    fn stderr_bytes(&self) -> &[u8] {
        &self.stderr
    }
}

impl Stderr for Run {
    fn stderr_bytes(&self) -> &[u8] {
        &self.stderr
    }
}

pub fn stderr(out: &impl Stderr) -> String {
    String::from_utf8_lossy(out.stderr_bytes()).into_owned()
}

/// Every file under `dir`, relative, sorted.
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A chronyd serving time on 127.0.0.1:`port` without touching the machine's clock.
pub fn start_chrony(dir: &Path, port: u16) -> testkit::ChildGuard {
    let conf = dir.join("chrony.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nallow 127.0.0.0/8\nlocal stratum 8\ncmdport 0\npidfile {}\ndriftfile {}\n",
            dir.join("chronyd.pid").display(),
            dir.join("chrony.drift").display()
        ),
    )
    .unwrap();
    let chronyd = testkit::which("chronyd").unwrap();
    testkit::ChildGuard::spawn(
        "chronyd",
        Command::new(chronyd)
            .arg("-x")
            .arg("-d")
            .arg("-f")
            .arg(&conf),
    )
}

/// A cluster with one master (MAC …:01) and one worker (MAC …:04) on Kubernetes v1.33.
pub fn cluster_file() -> String {
    testkit::fixtures::ClusterFile {
        name: "fbtest".into(),
        ..testkit::fixtures::ClusterFile::one_master("127.0.0.1:8443")
    }
    .render()
}

/// A real `launcher-seed serve` on loopback ports, with its NTP server.
pub struct Seed {
    pub dir: tempfile::TempDir,
    pub guard: testkit::ChildGuard,
    pub url: String,
    pub ntp: String,
    pub pin: String,
}

impl Seed {
    /// A seed that lets hosts in although its registry is empty: the hosts' installs are
    /// simulated, nothing pulls from it.
    pub fn start() -> Seed {
        Seed::spawn(&["--allow-missing-images"])
    }

    /// A seed as an operator starts it: hosts wait while its registry lacks an image.
    pub fn start_waiting_on_images() -> Seed {
        Seed::spawn(&[])
    }

    fn spawn(extra: &[&str]) -> Seed {
        let bin = testkit::workspace_bin("launcher-seed");
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("cluster.toml");
        std::fs::write(&spec, cluster_file()).unwrap();
        let state = dir.path().join("state");
        let log = std::fs::File::create(dir.path().join("seed.log")).unwrap();
        let guard = testkit::ChildGuard::spawn(
            "launcher-seed",
            Command::new(&bin)
                .arg("serve")
                .arg("--cluster")
                .arg(&spec)
                .arg("--state-dir")
                .arg(&state)
                .args(["--listen", "127.0.0.1:0", "--ntp-listen", "127.0.0.1:0"])
                // Every simulated host asks the time from 127.0.0.1, one after another.
                .args(["--ntp-rate", "0"])
                .args(extra)
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        let read = |name: &str| {
            let path = state.join(name);
            testkit::wait_for(name, std::time::Duration::from_secs(60), || {
                std::fs::read_to_string(&path)
                    .ok()
                    .filter(|s| !s.trim().is_empty())
            })
            .trim()
            .to_string()
        };
        let ntp = read("ntp.addr");
        let url = format!("https://{}", read("serve.addr"));
        let out = Command::new(&bin)
            .arg("pin")
            .arg("--state-dir")
            .arg(&state)
            .output()
            .unwrap();
        let pin = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(pin.starts_with("sha256:"), "launcher-seed pin said {pin:?}");
        Seed {
            dir,
            guard,
            url,
            ntp,
            pin,
        }
    }

    /// Firstboot's flags pointing at this seed.
    pub fn args(&self) -> Vec<String> {
        [
            "--seed",
            &self.url,
            "--pin",
            &self.pin,
            "--ntp",
            &self.ntp,
            "--enroll-wait-secs",
            "60",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// `launcher-seed images import` of `archives` into this seed's state directory.
    pub fn import(&self, archives: &[PathBuf]) {
        let archives: Vec<&Path> = archives.iter().map(PathBuf::as_path).collect();
        testkit::seed_import(&self.dir.path().join("state"), &archives);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("seed.log")).unwrap_or_default()
    }
}

/// Runs firstboot against `seed` to the end, failing the test with firstboot's and the seed's
/// logs, headed by `what`, unless it exits 0.
pub fn run_to_the_end(what: &str, host: &Host, seed: &Seed, offset: i64) -> Run {
    let out = run_with_seed(host, seed, offset, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: {}\nseed:\n{}",
        stderr(&out),
        seed.log()
    );
    out
}

/// Runs firstboot against `seed` with extra flags.
pub fn run_with_seed(host: &Host, seed: &Seed, offset: i64, extra: &[&str]) -> Run {
    let mut args = seed.args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    host.run(offset, &refs)
}

fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A one-layer OCI image layout as a tar archive, named by `io.containerd.image.name`.
pub fn oci_archive(path: &Path, name: &str, tag: &str) {
    let mut layer = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    let content = b"preloaded by launcher-firstboot\n";
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    layer
        .append_data(&mut header, "hello.txt", &content[..])
        .unwrap();
    let layer = layer.into_inner().unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&layer)]},
        "config": {}
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256_digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256_digest(&layer), "size": layer.len()}]
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256_digest(&manifest),
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag}
        }]
    }))
    .unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut archive = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        archive.append_data(&mut h, name, bytes).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &index);
    for blob in [&layer, &config, &manifest] {
        let d = sha256_digest(blob);
        add(&format!("blobs/sha256/{}", &d["sha256:".len()..]), blob);
    }
    archive.finish().unwrap();
}
