//! Kubernetes, cri-tools and CNI release archives as they are published: their binaries go into
//! the image, the server archive's control-plane images into `kubernetes-images.tar` under the
//! names kubeadm pulls, which the seed imports and skopeo reads. Bad archives are refused with
//! their exact error and no output directory.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::sha256_hex;
use serde_json::json;

const VERSION: &str = "v1.33.4";

/// A shell script that answers `version -o short` with `version`, as a release binary does.
fn binary(name: &str, version: &str) -> Vec<u8> {
    format!(
        "#!/bin/sh\nif [ \"$*\" = \"version -o short\" ]; then echo {version}; exit 0; fi\n\
         echo \"{name} from the release archive\"\n"
    )
    .into_bytes()
}

/// A `docker save` archive of one image with one layer, named `reference`.
fn docker_save(component: &str, reference: &str) -> Vec<u8> {
    let layer = {
        let mut b = tar::Builder::new(Vec::new());
        append(
            &mut b,
            &format!("usr/local/bin/{component}"),
            b"binary",
            0o755,
        );
        b.into_inner().unwrap()
    };
    let diff_id = format!("sha256:{}", sha256_hex(&layer));
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": [format!("/usr/local/bin/{component}")]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))
    .unwrap();
    let config_name = format!("blobs/sha256/{}", sha256_hex(&config));
    let layer_name = format!("blobs/sha256/{}", sha256_hex(&layer));
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name,
        "RepoTags": [reference],
        "Layers": [layer_name],
    }]))
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    append(&mut b, &config_name, &config, 0o644);
    append(&mut b, &layer_name, &layer, 0o644);
    append(&mut b, "manifest.json", &manifest, 0o644);
    b.into_inner().unwrap()
}

fn append(b: &mut tar::Builder<impl Write>, name: &str, data: &[u8], mode: u32) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_mtime(0);
    b.append_data(&mut h, name, data).unwrap();
}

fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar).unwrap();
    gz.finish().unwrap()
}

/// `(path in the archive, bytes, mode)`, gzip-compressed as releases are.
fn targz(files: &[(String, Vec<u8>, u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data, mode) in files {
        append(&mut b, name, data, *mode);
    }
    gzip(&b.into_inner().unwrap())
}

const COMPONENTS: [&str; 4] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
];

/// The files of `kubernetes-server-linux-amd64.tar.gz`: the binaries, and each component's
/// image archive and `.docker_tag` beside them.
fn server_files(version: &str, image_tag: &str) -> Vec<(String, Vec<u8>, u32)> {
    let bin = "kubernetes/server/bin";
    let mut files = vec![
        (
            "kubernetes/LICENSES/LICENSE".into(),
            b"Apache-2.0\n".to_vec(),
            0o644,
        ),
        (
            "kubernetes/kubernetes-src.tar.gz".into(),
            gzip(&[0; 1024]),
            0o644,
        ),
    ];
    for name in ["kubeadm", "kubelet", "kubectl", "kube-apiserver"] {
        files.push((format!("{bin}/{name}"), binary(name, version), 0o755));
    }
    for c in COMPONENTS {
        let reference = format!("registry.k8s.io/{c}-amd64:{image_tag}");
        files.push((format!("{bin}/{c}.tar"), docker_save(c, &reference), 0o644));
        files.push((
            format!("{bin}/{c}.docker_tag"),
            format!("{image_tag}\n").into_bytes(),
            0o644,
        ));
    }
    files
}

fn crictl_archive() -> Vec<u8> {
    targz(&[("crictl".into(), binary("crictl", "v1.33.0"), 0o755)])
}

fn cni_archive() -> Vec<u8> {
    targz(&[
        ("./bridge".into(), binary("bridge", "v1.7.1"), 0o755),
        ("./host-local".into(), binary("host-local", "v1.7.1"), 0o755),
        ("./loopback".into(), binary("loopback", "v1.7.1"), 0o755),
        ("./LICENSE".into(), b"Apache-2.0\n".to_vec(), 0o644),
    ])
}

/// A tiny base and a definition whose bundle is `bundle` (a TOML table body).
fn definition(dir: &Path, bundle: &str) -> PathBuf {
    let bundle = format!("[bundle]\n{bundle}");
    common::definition_with(dir, "released", &common::kernel_base(), &bundle)
}

/// Writes the three archives into `dir` and returns the `[bundle]` body naming them.
fn archives(dir: &Path, server: &[u8]) -> String {
    fs::write(dir.join("kubernetes-server-linux-amd64.tar.gz"), server).unwrap();
    fs::write(
        dir.join("crictl-v1.33.0-linux-amd64.tar.gz"),
        crictl_archive(),
    )
    .unwrap();
    fs::write(
        dir.join("cni-plugins-linux-amd64-v1.7.1.tgz"),
        cni_archive(),
    )
    .unwrap();
    format!(
        "version = \"{VERSION}\"\n\
         server = {{ archive = \"kubernetes-server-linux-amd64.tar.gz\", sha256 = \"{}\" }}\n\
         crictl = {{ archive = \"crictl-v1.33.0-linux-amd64.tar.gz\", sha256 = \"{}\" }}\n\
         cni = {{ archive = \"cni-plugins-linux-amd64-v1.7.1.tgz\", sha256 = \"{}\" }}\n",
        sha256_hex(server),
        sha256_hex(&crictl_archive()),
        sha256_hex(&cni_archive()),
    )
}

fn build(definition: &Path, cache: &Path, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_launcher-build"))
        .arg(definition)
        .arg("--out")
        .arg(out)
        .args(["--format", "tar", "--quiet", "--cache"])
        .arg(cache)
        .output()
        .unwrap()
}

/// Every regular file of `rootfs.tar` under `prefix`, with its mode and bytes.
fn files_under(rootfs: &Path, prefix: &str) -> Vec<(String, u32, Vec<u8>)> {
    let mut archive = tar::Archive::new(fs::File::open(rootfs).unwrap());
    let mut found = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let path = path.trim_start_matches("./").to_string();
        if path.starts_with(prefix) && entry.header().entry_type().is_file() {
            let mode = entry.header().mode().unwrap();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            found.push((path, mode, data));
        }
    }
    found.sort();
    found
}

#[test]
fn a_server_release_goes_into_the_image_and_its_images_to_the_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = targz(&server_files(VERSION, VERSION));
    let def = definition(dir, &archives(dir, &server));
    let (cache, out) = (dir.join("cache"), dir.join("out"));
    let built = build(&def, &cache, &out);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );

    // the release's own binaries, crictl and the CNI plugins (not their LICENSE) in the image
    let rootfs = out.join("rootfs.tar");
    let bins: Vec<(String, u32, Vec<u8>)> = files_under(&rootfs, "usr/bin/")
        .into_iter()
        .filter(|(p, _, _)| p.starts_with("usr/bin/kube") || p == "usr/bin/crictl")
        .collect();
    let want: Vec<(String, u32, Vec<u8>)> = [
        ("crictl", binary("crictl", "v1.33.0")),
        ("kubeadm", binary("kubeadm", VERSION)),
        ("kubectl", binary("kubectl", VERSION)),
        ("kubelet", binary("kubelet", VERSION)),
    ]
    .into_iter()
    .map(|(n, b)| (format!("usr/bin/{n}"), 0o755, b))
    .collect();
    assert_eq!(bins, want);
    let plugins: Vec<String> = files_under(&rootfs, "opt/cni/bin/")
        .into_iter()
        .map(|(p, mode, _)| format!("{p} {mode:o}"))
        .collect();
    assert_eq!(
        plugins,
        [
            "opt/cni/bin/bridge 755",
            "opt/cni/bin/host-local 755",
            "opt/cni/bin/loopback 755"
        ]
    );
    let record = files_under(&rootfs, "usr/share/launcher/kubernetes.toml");
    assert_eq!(
        String::from_utf8_lossy(&record[0].2),
        format!("version = \"{VERSION}\"\nstandins = false\n")
    );

    // the manifest names the images and records the archives as pinned inputs
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let names: Vec<String> = COMPONENTS
        .iter()
        .map(|c| format!("registry.k8s.io/{c}:{VERSION}"))
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(manifest["kubernetes"]["images"], json!(sorted));
    assert_eq!(manifest["kubernetes"]["standins"], json!(false));
    let roles: Vec<&str> = manifest["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["role"].as_str().unwrap())
        .collect();
    for role in [
        "kubernetes server release",
        "cri-tools release",
        "CNI plugins release",
    ] {
        assert!(roles.contains(&role), "{role} not in {roles:?}");
    }
    let outputs: Vec<&str> = manifest["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap())
        .collect();
    assert_eq!(outputs, ["kubernetes-images.tar", "rootfs.tar"]);

    // the seed imports them under the names kubeadm pulls
    let images = out.join("kubernetes-images.tar");
    let said = testkit::seed_import(&dir.join("seed"), &[&images]);
    for c in COMPONENTS {
        assert!(
            said.contains(&format!("{c}:{VERSION}")),
            "{c}:{VERSION} not imported: {said}"
        );
        assert!(!said.contains("-amd64"), "{said}");
    }

    // an independent reader sees the same names
    if testkit::require(&["skopeo"]) {
        for c in COMPONENTS {
            let reference = format!(
                "docker-archive:{}:registry.k8s.io/{c}:{VERSION}",
                images.display()
            );
            let inspected = Command::new("skopeo")
                .args(["inspect", "--raw", &reference])
                .output()
                .unwrap();
            assert!(
                inspected.status.success(),
                "skopeo inspect {reference}: {}",
                String::from_utf8_lossy(&inspected.stderr)
            );
        }
    }

    // a second build is byte-identical, and takes the release from the cache
    let again = dir.join("again");
    let rebuilt = build(&def, &cache, &again);
    assert!(rebuilt.status.success());
    for name in ["kubernetes-images.tar", "rootfs.tar", "manifest.json"] {
        assert_eq!(
            fs::read(out.join(name)).unwrap(),
            fs::read(again.join(name)).unwrap(),
            "{name} differs between two builds"
        );
    }
    let cached: Vec<_> = fs::read_dir(cache.join("archives"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(cached.len(), 3, "{cached:?}");
    assert!(cached.contains(&sha256_hex(&server)), "{cached:?}");
}

#[test]
fn a_node_release_gives_its_binaries_and_no_images() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let node = targz(
        &["kubeadm", "kubelet", "kubectl", "kube-proxy"]
            .iter()
            .map(|n| {
                (
                    format!("kubernetes/node/bin/{n}"),
                    binary(n, VERSION),
                    0o755,
                )
            })
            .collect::<Vec<_>>(),
    );
    fs::write(dir.join("node.tar.gz"), &node).unwrap();
    let bundle = format!(
        "version = \"{VERSION}\"\nnode = {{ archive = \"node.tar.gz\", sha256 = \"{}\" }}\n",
        sha256_hex(&node)
    );
    let out = dir.join("out");
    let built = build(&definition(dir, &bundle), &dir.join("cache"), &out);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    assert!(!out.join("kubernetes-images.tar").exists());
    let kubeadm = files_under(&out.join("rootfs.tar"), "usr/bin/kubeadm");
    assert_eq!(kubeadm[0].2, binary("kubeadm", VERSION));
}

/// Each bad archive with its exact error; no output directory is made.
#[test]
fn bad_release_archives_are_refused_with_their_error() {
    struct Case {
        name: &'static str,
        server: Vec<u8>,
        /// A different sha256 pinned for the server archive.
        pin: Option<String>,
        version: &'static str,
        want: String,
    }
    let good = targz(&server_files(VERSION, VERSION));
    let without = |skip: &str| {
        targz(
            &server_files(VERSION, VERSION)
                .into_iter()
                .filter(|(p, _, _)| !p.ends_with(skip))
                .collect::<Vec<_>>(),
        )
    };
    let with_link = {
        let mut files = server_files(VERSION, VERSION);
        files.retain(|(p, _, _)| !p.ends_with("/kubelet"));
        let mut b = tar::Builder::new(Vec::new());
        for (name, data, mode) in &files {
            append(&mut b, name, data, *mode);
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "kubernetes/server/bin/kubelet", "/etc/shadow")
            .unwrap();
        gzip(&b.into_inner().unwrap())
    };
    let two_names = {
        let mut files = server_files(VERSION, VERSION);
        for f in files.iter_mut() {
            if f.0.ends_with("kube-proxy.tar") {
                let entry = json!([{"Config": "c", "RepoTags": ["a:1", "b:2"], "Layers": []}]);
                f.1 = {
                    let mut b = tar::Builder::new(Vec::new());
                    append(
                        &mut b,
                        "manifest.json",
                        &serde_json::to_vec(&entry).unwrap(),
                        0o644,
                    );
                    b.into_inner().unwrap()
                };
            }
        }
        targz(&files)
    };
    let archive = "{dir}/kubernetes-server-linux-amd64.tar.gz";
    let cases = vec![
        Case {
            name: "pinned to other bytes",
            server: good.clone(),
            pin: Some("ab".repeat(32)),
            version: VERSION,
            want: format!(
                "kubernetes server release {archive}: sha256 is {}, the definition pins {}",
                sha256_hex(&good),
                "ab".repeat(32)
            ),
        },
        Case {
            name: "not gzip",
            server: b"PK\x03\x04 a zip file".to_vec(),
            pin: None,
            version: VERSION,
            want: format!("{archive}: not a gzip-compressed tar archive"),
        },
        Case {
            name: "the definition names another version",
            server: good.clone(),
            pin: None,
            version: "v1.33.5",
            want: format!(
                "bundle.version is v1.33.5, but the kubernetes server release archive {archive} \
                 is {VERSION} (its kubeadm says so): name the version the archive holds"
            ),
        },
        Case {
            name: "an image of another version",
            server: targz(&server_files(VERSION, "v1.33.3")),
            pin: None,
            version: VERSION,
            want: format!(
                "{archive}: image kube-apiserver is tagged v1.33.3, but its kubeadm is {VERSION}"
            ),
        },
        Case {
            name: "no kubeadm",
            server: without("/kubeadm"),
            pin: None,
            version: VERSION,
            want: format!(
                "{archive}: has no kubernetes/server/bin/kubeadm: is it the Kubernetes server \
                 release archive?"
            ),
        },
        Case {
            name: "no images",
            server: targz(
                &server_files(VERSION, VERSION)
                    .into_iter()
                    .filter(|(p, _, _)| !p.ends_with(".tar"))
                    .collect::<Vec<_>>(),
            ),
            pin: None,
            version: VERSION,
            want: format!(
                "{archive}: has no image archives (kubernetes/server/bin/*.tar) beside its binaries"
            ),
        },
        Case {
            name: "kubelet is a link out of the tree",
            server: with_link,
            pin: None,
            version: VERSION,
            want: format!("{archive}: kubernetes/server/bin/kubelet is not a regular file"),
        },
        Case {
            name: "an image archive naming two images",
            server: two_names,
            pin: None,
            version: VERSION,
            want: format!(
                "{archive}: kube-proxy.tar names 2 images ([\"a:1\", \"b:2\"]); a release image \
                 names one"
            ),
        },
    ];
    for case in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut bundle = archives(dir, &case.server);
        bundle = bundle.replace(&format!("\"{VERSION}\""), &format!("\"{}\"", case.version));
        if let Some(pin) = &case.pin {
            bundle = bundle.replace(&sha256_hex(&case.server), pin);
        }
        let (cache, out) = (dir.join("cache"), dir.join("out"));
        let built = build(&definition(dir, &bundle), &cache, &out);
        assert!(!built.status.success(), "{}: built", case.name);
        let stderr = String::from_utf8_lossy(&built.stderr);
        let want = case.want.replace("{dir}", &dir.display().to_string());
        assert!(
            stderr.contains(&want),
            "{}:\n got {stderr}\nwant {want}",
            case.name
        );
        assert!(
            !out.exists(),
            "{}: the output directory was made",
            case.name
        );
        // nothing half-unpacked is left to be taken for a whole one
        if let Ok(entries) = fs::read_dir(cache.join("archives")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                assert!(!name.starts_with(".tmp-"), "{}: {name} left", case.name);
            }
        }
    }
}
