//! containerd as a real client: a private containerd pulls from the registry through a mirror
//! `hosts.toml` like the one firstboot writes, by tag and by digest, over TLS with the seed's CA
//! and over plain HTTP; it also imports a platform-reduced archive.

mod support;

use std::path::{Path, PathBuf};

use oci::{Platform, reduce_to_platform};
use registry_seed::oci::{Store, import};
use support::images::{self, Built, Family, build, docker_save, tar_dir};
use support::server::{serve_plain, serve_tls};
use testkit::containerd::Containerd;

/// A containerd of the test's own, its socket beside its state, in the namespace `test`.
fn containerd(dir: &Path) -> Containerd {
    Containerd::start(dir, &dir.join("c.sock"), "test")
}

/// What these tests ask of their containerd.
trait Pulls {
    fn pull(&self, hosts: &Hosts, reference: &str);
    fn image_digest(&self, reference: &str) -> Option<String>;
}

impl Pulls for Containerd {
    /// Pulls and unpacks `reference` through the mirrors configured in `hosts`.
    fn pull(&self, hosts: &Hosts, reference: &str) {
        let mut args = vec!["images", "pull"];
        if hosts.plain_http {
            args.push("--plain-http");
        }
        let dir = hosts.dir.to_str().unwrap();
        args.extend(["--snapshotter", "native", "--hosts-dir", dir, reference]);
        self.ok(&args);
    }

    /// The digest `ctr images ls` shows for `reference`.
    fn image_digest(&self, reference: &str) -> Option<String> {
        let listing = self.ok(&["images", "ls"]);
        listing.lines().find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.first() == Some(&reference)).then(|| cols[2].to_string())
        })
    }
}

/// A `certs.d` directory of containerd mirror configurations, like the one firstboot writes.
struct Hosts {
    dir: PathBuf,
    plain_http: bool,
}

impl Hosts {
    /// Sends `registries` (`_default` for all) to the seed at `mirror` (`host:port`), over TLS
    /// trusting `ca`, or over plain HTTP without one. The `server` fallback is a port nothing
    /// listens on, so that a pull that does not go through the mirror fails instead of leaving
    /// the machine.
    fn write(dir: PathBuf, registries: &[&str], mirror: &str, ca: Option<&Path>) -> Hosts {
        let scheme = if ca.is_some() { "https" } else { "http" };
        let mut toml = format!(
            "server = \"{scheme}://127.0.0.1:{}\"\n[host.\"{scheme}://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            testkit::free_tcp_port(),
        );
        if let Some(ca) = ca {
            toml += &format!("  ca = \"{}\"\n", ca.display());
        }
        for registry in registries {
            std::fs::create_dir_all(dir.join(registry)).unwrap();
            std::fs::write(dir.join(registry).join("hosts.toml"), &toml).unwrap();
        }
        Hosts {
            dir,
            plain_http: ca.is_none(),
        }
    }
}

fn fill(dir: &Path, state: &Path) -> (Built, Built) {
    let store = Store::open(state).unwrap();
    let multi = images::coredns(&dir.join("multi"));
    let docker = build(
        &dir.join("docker"),
        Family::Docker,
        true,
        "docker.io/library/nginx:1",
    );
    docker_save(&dir.join("save.tar"), "busybox:1.36");
    import(
        &store,
        &[dir.join("multi"), dir.join("docker"), dir.join("save.tar")],
        None,
    )
    .unwrap();
    (multi, docker)
}

#[test]
fn containerd_pulls_over_tls_through_a_mirror() {
    if !testkit::require(&["containerd", "ctr"]) || !testkit::require_root("containerd") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("seed");
    let (multi, docker) = fill(tmp.path(), &state);
    let server = serve_tls(&state);
    let ca = tmp.path().join("seed-ca.crt");
    std::fs::write(&ca, server.ca_pem.as_ref().unwrap()).unwrap();
    let hosts = Hosts::write(
        tmp.path().join("certs.d"),
        &["registry.k8s.io", "docker.io"],
        &server.host(),
        Some(&ca),
    );
    let c = containerd(&tmp.path().join("containerd"));
    let pull = |reference: &str| c.pull(&hosts, reference);

    let by_tag = "registry.k8s.io/coredns/coredns:v1.11.1";
    pull(by_tag);
    assert_eq!(c.image_digest(by_tag), Some(multi.top.clone()));
    let by_digest = format!("registry.k8s.io/coredns/coredns@{}", multi.top);
    pull(&by_digest);
    assert_eq!(c.image_digest(&by_digest), Some(multi.top.clone()));
    // a platform manifest by digest, Docker media types, and a docker save image with
    // uncompressed layers, all unpacked
    let amd64 = format!("registry.k8s.io/coredns/coredns@{}", multi.manifests[0].1);
    pull(&amd64);
    pull("docker.io/library/nginx:1");
    assert_eq!(
        c.image_digest("docker.io/library/nginx:1"),
        Some(docker.top)
    );
    pull("docker.io/library/busybox:1.36");
}

#[test]
fn containerd_pulls_over_plain_http_through_default_hosts() {
    if !testkit::require(&["containerd", "ctr"]) || !testkit::require_root("containerd") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("seed");
    let (multi, _) = fill(tmp.path(), &state);
    let server = serve_plain(&state);
    let hosts = Hosts::write(
        tmp.path().join("certs.d"),
        &["_default"],
        &server.host(),
        None,
    );
    let c = containerd(&tmp.path().join("containerd"));
    let pull = |reference: &str| c.pull(&hosts, reference);
    pull("registry.k8s.io/coredns/coredns:v1.11.1");
    assert_eq!(
        c.image_digest("registry.k8s.io/coredns/coredns:v1.11.1"),
        Some(multi.top.clone())
    );
    let by_digest = format!("registry.k8s.io/coredns/coredns@{}", multi.top);
    pull(&by_digest);
    pull("docker.io/library/busybox:1.36");

    // an image the seed does not have: the seed answers 404 and containerd moves on to the
    // (closed) server
    let out = c.ctr(&[
        "images",
        "pull",
        "--plain-http",
        "--hosts-dir",
        hosts.dir.to_str().unwrap(),
        "docker.io/library/absent:1",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let seed_said = format!(
        "response was http.StatusNotFound\" host=\"{}\"",
        server.host()
    );
    assert!(stderr.contains(&seed_said), "{stderr}");
}

#[test]
fn containerd_imports_a_platform_reduced_archive() {
    if !testkit::require(&["containerd", "ctr"]) || !testkit::require_root("containerd") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("multi");
    let multi = images::coredns(&layout);
    let archive = tmp.path().join("multi.tar");
    tar_dir(&layout, &archive);
    let reduced = tmp.path().join("amd64.tar");
    let kept =
        reduce_to_platform(&archive, &Platform::parse("linux/amd64").unwrap(), &reduced).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].digest.to_string(), multi.manifests[0].1);
    let c = containerd(&tmp.path().join("containerd"));
    c.ok(&[
        "images",
        "import",
        "--snapshotter",
        "native",
        reduced.to_str().unwrap(),
    ]);
    assert_eq!(
        c.image_digest("registry.k8s.io/coredns/coredns:v1.11.1"),
        Some(multi.manifests[0].1.clone())
    );
}
