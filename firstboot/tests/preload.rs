//! The preload phase against a private, real containerd: an OCI archive built here is imported,
//! pinned against garbage collection, and listed by `ctr images ls`.

mod common;

use cluster::api::Phase;
use common::plan::worker_plan;
use common::{Host, OTHER_PIN, oci_archive, stderr};
use firstboot::journal::Journal;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const IMAGE: &str = "docker.io/launcher/preload-test:1";

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
    oci_archive(
        &host.path("usr/share/launcher/images/preload-test.tar"),
        IMAGE,
        "1",
    );
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
