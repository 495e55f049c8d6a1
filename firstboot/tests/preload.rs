//! The preload phase against a private, real containerd: an OCI archive built here is imported,
//! pinned against garbage collection, and listed by `ctr images ls`.

mod common;

use cluster::api::Phase;
use common::plan::worker_plan;
use common::{Host, OTHER_PIN, stderr};
use firstboot::journal::Journal;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const IMAGE: &str = "docker.io/launcher/preload-test:1";

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A one-layer OCI image layout as a tar archive, named by `io.containerd.image.name`.
fn oci_archive(path: &Path) {
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
        "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]},
        "config": {}
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(&layer), "size": layer.len()}]
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(&manifest),
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": "1"}
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
        let d = digest(blob);
        add(&format!("blobs/sha256/{}", &d["sha256:".len()..]), blob);
    }
    archive.finish().unwrap();
}

/// A containerd with its own root, state and socket, CRI disabled.
fn start_containerd(dir: &Path) -> (testkit::ChildGuard, String) {
    let sock = dir.join("containerd.sock");
    let conf = dir.join("config.toml");
    std::fs::write(
        &conf,
        format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n",
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            sock = sock.display(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
    let guard = testkit::ChildGuard::spawn(
        "containerd",
        Command::new(testkit::which("containerd").unwrap())
            .arg("--config")
            .arg(&conf)
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    testkit::wait_for("containerd's socket", Duration::from_secs(20), || {
        sock.exists().then_some(())
    });
    (guard, sock.to_string_lossy().into_owned())
}

#[test]
fn preload_imports_and_pins_an_oci_archive_in_a_real_containerd() {
    if !testkit::require(&["containerd", "ctr"]) || !testkit::require_root("containerd needs root")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_containerd, sock) = start_containerd(dir.path());
    let host = Host::new(9);
    oci_archive(&host.path("usr/share/launcher/images/preload-test.tar"));
    // The phases before preload, as a previous run journaled them.
    let journal = Journal {
        done: vec![
            Phase::Identify,
            Phase::Time,
            Phase::Enroll,
            Phase::Materialize,
            Phase::Storage,
        ],
        host_id: Some("h-preload".into()),
        plan: Some(worker_plan("h-preload", "v1.33.4", vec![])),
        ..Default::default()
    };
    journal.save(host.root()).unwrap();

    let out = host.run_with_real(
        0,
        &["ctr"],
        &[
            "--seed",
            "https://127.0.0.1:9",
            "--pin",
            OTHER_PIN,
            "--containerd-address",
            &sock,
            "--no-restart-containerd",
            "--stop-after",
            "preload",
        ],
    );
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert_eq!(host.journal()["preloaded"], serde_json::json!([IMAGE]));

    let ls = Command::new("ctr")
        .args(["--address", &sock, "-n", "k8s.io", "images", "ls"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&ls.stdout);
    let line = listing
        .lines()
        .find(|l| l.starts_with(IMAGE))
        .unwrap_or_else(|| panic!("{IMAGE} not listed:\n{listing}"));
    assert!(line.contains("io.cri-containerd.pinned=pinned"), "{line}");
}
