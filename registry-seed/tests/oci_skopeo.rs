//! skopeo (Debian's) as a real client of the registry: inspect and copy, over plain HTTP and over
//! TLS with the seed's CA; copied digests equal the imported ones.

mod support;

use std::path::Path;
use std::process::Command;

use registry_seed::oci::{Store, import};
use support::images::{self, Built, Family, build, docker_save};
use support::server::{serve_plain, serve_tls};

fn skopeo(args: &[&str]) -> String {
    let out = support::succeed(Command::new("skopeo").arg("--insecure-policy").args(args));
    String::from_utf8(out.stdout).unwrap()
}

struct Images {
    oci: Built,
    oci_layout: std::path::PathBuf,
    docker: Built,
    docker_layout: std::path::PathBuf,
}

fn fill(dir: &Path, state: &Path) -> Images {
    let store = Store::open(state).unwrap();
    let oci_layout = dir.join("oci");
    let oci = images::coredns(&oci_layout);
    let docker_layout = dir.join("docker");
    let docker = build(
        &docker_layout,
        Family::Docker,
        true,
        "docker.io/library/nginx:1",
    );
    let save = dir.join("save.tar");
    docker_save(&save, "registry.k8s.io/pause:3.9");
    import(
        &store,
        &[oci_layout.clone(), docker_layout.clone(), save],
        None,
    )
    .unwrap();
    Images {
        oci,
        oci_layout,
        docker,
        docker_layout,
    }
}

fn inspect_and_copy(host: &str, tls: &[&str], dir: &Path, images: &Images) {
    let reference = format!("docker://{host}/coredns/coredns:v1.11.1");
    let mut args = vec!["inspect", "--raw"];
    args.extend(tls);
    args.push(&reference);
    let raw = skopeo(&args);
    assert_eq!(
        raw.as_bytes(),
        images::read_blob(&images.oci_layout, &images.oci.top)
    );

    let mut args = vec!["inspect"];
    args.extend(tls);
    args.push(&reference);
    let info: serde_json::Value = serde_json::from_str(&skopeo(&args)).unwrap();
    assert_eq!(info["Digest"], images.oci.top.as_str());
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["RepoTags"], serde_json::json!(["v1.11.1"]));

    // an OCI index copied to an OCI layout keeps every digest
    let out = dir.join("copy-oci");
    let dest = format!("oci:{}:v1.11.1", out.display());
    let mut args = vec!["copy", "--all"];
    let src_tls: Vec<String> = tls.iter().map(|a| a.replacen("--", "--src-", 1)).collect();
    args.extend(src_tls.iter().map(String::as_str));
    args.extend([reference.as_str(), dest.as_str()]);
    skopeo(&args);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], images.oci.top.as_str());
    for d in &images.oci.digests {
        assert_eq!(
            images::read_blob(&out, d),
            images::read_blob(&images.oci_layout, d),
            "{d}"
        );
    }

    // Docker media types are copied as they are to a dir: layout
    for (name, built) in [
        ("library/nginx:1", Some(&images.docker)),
        ("pause:3.9", None),
    ] {
        let out = dir.join(format!("copy-{}", name.replace(['/', ':'], "-")));
        let src = format!("docker://{host}/{name}");
        let dest = format!("dir:{}", out.display());
        let mut args = vec!["copy", "--all"];
        args.extend(src_tls.iter().map(String::as_str));
        args.extend([src.as_str(), dest.as_str()]);
        skopeo(&args);
        let manifest = std::fs::read(out.join("manifest.json")).unwrap();
        if let Some(built) = built {
            assert_eq!(images::sha256(&manifest), built.top);
            for (_, d) in &built.manifests {
                let copied = std::fs::read(
                    out.join(format!("{}.manifest.json", d.trim_start_matches("sha256:"))),
                )
                .unwrap();
                assert_eq!(copied, images::read_blob(&images.docker_layout, d));
            }
        } else {
            let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
            let layer = m["layers"][0]["digest"].as_str().unwrap();
            let bytes = std::fs::read(out.join(layer.trim_start_matches("sha256:"))).unwrap();
            assert_eq!(images::sha256(&bytes), layer);
        }
    }
}

#[test]
fn skopeo_over_plain_http() {
    if !testkit::require(&["skopeo"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let images = fill(tmp.path(), &state);
    let server = serve_plain(&state);
    inspect_and_copy(&server.host(), &["--tls-verify=false"], tmp.path(), &images);
}

#[test]
fn skopeo_over_tls_with_the_seed_ca() {
    if !testkit::require(&["skopeo"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let images = fill(tmp.path(), &state);
    let server = serve_tls(&state);
    let certs = tmp.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::write(certs.join("ca.crt"), server.ca_pem.as_ref().unwrap()).unwrap();
    let cert_dir = format!("--cert-dir={}", certs.display());
    inspect_and_copy(
        &server.host(),
        &["--tls-verify=true", &cert_dir],
        tmp.path(),
        &images,
    );

    // without the CA the server is not trusted
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "inspect", "--raw", "--tls-verify=true"])
        .arg(format!(
            "docker://{}/coredns/coredns:v1.11.1",
            server.host()
        ))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
