//! The `hosts.toml` firstboot writes for the cluster's registry, used by a real containerd
//! against a real seed: an image the seed has is pulled through it, and one it lacks fails
//! with containerd's "not found", not with the error of a fallback to plain HTTP or the
//! system's CAs.

mod common;

use common::{Seed, oci_archive};
use firstboot::materialize::registry_hosts_toml;
use testkit::containerd::Containerd;

#[test]
fn a_missing_image_is_reported_as_not_found() {
    if !testkit::require(&["containerd", "ctr"]) || !testkit::require_root("containerd needs root")
    {
        return;
    }
    let seed = Seed::start();
    let state = seed.dir.path().join("state");
    let registry = seed.url.trim_start_matches("https://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("present.tar");
    oci_archive(&archive, &format!("{registry}/present:1"), "1");
    testkit::seed_import(&state, &[&archive]);

    let certs = dir.path().join("certs.d");
    std::fs::create_dir_all(certs.join(&registry)).unwrap();
    let ca = state.join("seed-ca.crt");
    std::fs::write(
        certs.join(&registry).join("hosts.toml"),
        registry_hosts_toml(&seed.url.parse().unwrap(), ca.to_str().unwrap()),
    )
    .unwrap();
    let c = Containerd::start(&dir.path().join("c"), &dir.path().join("c.sock"), "k8s.io");
    let pull = |image: &str| {
        c.ctr(&[
            "images",
            "pull",
            "--snapshotter",
            "native",
            "--hosts-dir",
            certs.to_str().unwrap(),
            image,
        ])
    };

    let present = pull(&format!("{registry}/present:1"));
    assert!(
        present.status.success(),
        "{}",
        String::from_utf8_lossy(&present.stderr)
    );
    let missing = pull(&format!("{registry}/kube-scheduler:v1.33.4"));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success());
    assert!(
        stderr.contains(&format!("{registry}/kube-scheduler:v1.33.4: not found")),
        "{stderr}"
    );
    assert!(!stderr.contains("x509"), "{stderr}");
}
