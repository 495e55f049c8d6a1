//! `images import` and `images ls`: every input kind lands in the store with its digests intact,
//! and every bad input is refused with its exact error, leaving the store byte-for-byte as it was.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use registry_seed::oci::refs::{Reference, RepoName, Tag};
use registry_seed::oci::{Store, import};
use support::images::{self, Family, build, docker_save, sha256, tar_dir};

fn seed() -> &'static str {
    env!("CARGO_BIN_EXE_launcher-seed")
}

fn tag_of(store: &Store, repo: &str, tag: &str) -> Option<String> {
    let catalog = store.catalog().unwrap();
    let repo = catalog.repositories.get(&RepoName::parse(repo).unwrap())?;
    repo.tags
        .get(&Tag::parse(tag).unwrap())
        .map(|d| d.to_string())
}

fn assert_blobs_stored(store: &Store, digests: &[String]) {
    for d in digests {
        let path = store
            .root()
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(&sha256(&bytes), d);
    }
}

#[test]
fn every_input_kind_imports_with_its_digests() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("state")).unwrap();
    let kinds = [
        (Family::Oci, false, "example.org/test/oci-single:1.0"),
        (Family::Oci, true, "example.org/test/oci-multi:1.0"),
        (Family::Docker, false, "example.org/test/docker-single:1.0"),
        (Family::Docker, true, "example.org/test/docker-multi:1.0"),
    ];
    for (i, (family, multi, name)) in kinds.into_iter().enumerate() {
        let layout = tmp.path().join(format!("layout{i}"));
        let built = build(&layout, family, multi, name);
        // directories, plain OCI archives and gzip'd ones
        let input = match i % 3 {
            0 => layout.clone(),
            1 => {
                let out = tmp.path().join(format!("archive{i}.tar"));
                tar_dir(&layout, &out);
                out
            }
            _ => {
                let out = tmp.path().join(format!("archive{i}.tar"));
                tar_dir(&layout, &out);
                let gz = tmp.path().join(format!("archive{i}.tar.gz"));
                std::fs::write(&gz, images::gzip(&std::fs::read(&out).unwrap())).unwrap();
                gz
            }
        };
        let imported = import(&store, &[input], None).unwrap();
        assert_eq!(imported.len(), 1);
        let repo = name
            .trim_start_matches("example.org/")
            .trim_end_matches(":1.0");
        assert_eq!(
            tag_of(&store, repo, "1.0").as_deref(),
            Some(built.top.as_str())
        );
        assert_blobs_stored(&store, &built.digests);
    }

    let save = tmp.path().join("save.tar");
    let (config, layer) = docker_save(&save, "busybox:1.36");
    let imported = import(&store, std::slice::from_ref(&save), None).unwrap();
    assert_eq!(imported[0].name, "library/busybox:1.36");
    let manifest = tag_of(&store, "library/busybox", "1.36").unwrap();
    assert_eq!(manifest, imported[0].digest.to_string());
    assert_blobs_stored(&store, &[config, layer, manifest.clone()]);
    // importing the same archive again changes nothing
    let before = support::snapshot(store.root());
    import(&store, &[save], None).unwrap();
    assert_eq!(before, support::snapshot(store.root()));
}

#[test]
fn created_docker_manifest_describes_the_saved_image() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let save = tmp.path().join("save.tar");
    let (config, layer) = docker_save(&save, "registry.k8s.io/pause:3.9");
    let imported = import(&store, &[save], None).unwrap();
    let bytes = store.manifest_bytes(&imported[0].digest).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(m["mediaType"], images::DOCKER_MANIFEST);
    assert_eq!(m["config"]["digest"], config.as_str());
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    assert_eq!(m["layers"][0]["digest"], layer.as_str());
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar"
    );
    assert_eq!(
        tag_of(&store, "pause", "3.9"),
        Some(imported[0].digest.to_string())
    );
    let pause = RepoName::parse("pause").unwrap();
    let (digest, info) = store
        .resolve(&pause, &Reference::parse("3.9").unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(digest, imported[0].digest);
    assert_eq!(info.media_type, images::DOCKER_MANIFEST);
    assert_eq!(info.size, bytes.len() as u64);
    let by_digest = Reference::Digest(digest.clone());
    assert!(store.resolve(&pause, &by_digest).unwrap().is_some());
    // a config is a blob of the repository, not a manifest
    let config = Reference::parse(&config).unwrap();
    assert!(store.resolve(&pause, &config).unwrap().is_none());
}

#[test]
fn name_override_and_tag_only_layouts() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let layout = tmp.path().join("layout");
    let built = build(&layout, Family::Oci, false, "ignored/name:7");
    import(&store, std::slice::from_ref(&layout), Some("mirror/app:2")).unwrap();
    assert_eq!(tag_of(&store, "mirror/app", "2"), Some(built.top.clone()));
    assert_eq!(tag_of(&store, "ignored/name", "7"), None);
    // without a tag in --name, the layout's ref name supplies it
    import(&store, &[layout], Some("mirror/other")).unwrap();
    assert_eq!(tag_of(&store, "mirror/other", "7"), Some(built.top));
}

#[test]
fn cli_imports_and_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let layout = tmp.path().join("layout");
    let built = images::coredns(&layout);
    let save = tmp.path().join("save.tar");
    docker_save(&save, "busybox:1.36");
    let out = Command::new(seed())
        .args(["images", "import", "--state-dir"])
        .arg(&state)
        .arg(&layout)
        .arg(&save)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(&format!("imported coredns/coredns:v1.11.1 {}", built.top)),
        "{stdout}"
    );

    let out = Command::new(seed())
        .args(["images", "ls", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(out.status.success());
    let listing = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Vec<&str>> = listing
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["NAME", "TAG", "DIGEST", "MEDIA", "TYPE", "SIZE"]);
    let coredns = &lines[1];
    assert_eq!(
        &coredns[..4],
        [
            "coredns/coredns",
            "v1.11.1",
            built.top.as_str(),
            images::OCI_INDEX
        ]
    );
    let total: usize = built
        .digests
        .iter()
        .map(|d| images::read_blob(&layout, d).len())
        .sum();
    assert_eq!(coredns[4], total.to_string());
    assert_eq!(&lines[2][..2], ["library/busybox", "1.36"]);
    assert_eq!(lines[2][3], images::DOCKER_MANIFEST);

    let out = Command::new(seed())
        .args(["images", "import", "--state-dir"])
        .arg(&state)
        .arg(tmp.path().join("missing.tar"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("launcher-seed: import refused: reading "),
        "{stderr}"
    );
}

/// A tar whose entries are written raw (any path, any type), for inputs the tar crate would not
/// write.
fn raw_entry(path: &str, kind: u8, content: &[u8], link: &str) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// Edits a built layout's blob: writes `bytes` as a blob and makes `top`'s manifest point its
/// layer at it with `media_type` and `size`.
fn rewrite_layer(layout: &Path, media_type: &str, size: Option<usize>, bytes: &[u8]) {
    let mut l = images::Layout::new(layout);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let top = index["manifests"][0]["digest"].as_str().unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&images::read_blob(layout, top)).unwrap();
    let mut layer = l.blob(media_type, bytes);
    if let Some(size) = size {
        layer["size"] = size.into();
    }
    m["layers"][0] = layer;
    let d = l.blob(images::OCI_MANIFEST, &serde_json::to_vec(&m).unwrap());
    l.finish(&[(d, "example.org/bad:1")]);
}

struct Case {
    what: &'static str,
    inputs: Vec<PathBuf>,
    error: String,
}

fn bad_cases(dir: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut case = |what: &'static str, inputs: Vec<PathBuf>, error: String| {
        cases.push(Case {
            what,
            inputs,
            error,
        })
    };
    let file = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let good = |name: &str| {
        let layout = dir.join(name);
        build(&layout, Family::Oci, false, "example.org/bad:1");
        layout
    };

    let p = file("traversal.tar", &images::raw_tar(&[("../evil", b"x")]));
    case(
        "path traversal",
        vec![p.clone()],
        format!(
            "{}: entry \"../evil\" points outside the archive",
            p.display()
        ),
    );
    let p = file("absolute.tar", &images::raw_tar(&[("/etc/evil", b"x")]));
    case(
        "absolute path",
        vec![p.clone()],
        format!(
            "{}: entry \"/etc/evil\" points outside the archive",
            p.display()
        ),
    );
    let mut t = raw_entry("blobs/link", b'2', b"", "../../etc/passwd");
    t.extend_from_slice(&[0u8; 1024]);
    let p = file("symlink.tar", &t);
    case(
        "symlink out",
        vec![p.clone()],
        format!(
            "{}: entry \"blobs/link -> ../../etc/passwd\" points outside the archive",
            p.display()
        ),
    );
    let mut t = raw_entry("dev", b'3', b"", "");
    t.extend_from_slice(&[0u8; 1024]);
    let p = file("device.tar", &t);
    case(
        "device entry",
        vec![p.clone()],
        format!(
            "{}: entry \"dev\" is a Char entry, not a file, directory or link",
            p.display()
        ),
    );

    let layout = good("trunc-layout");
    let whole = dir.join("whole.tar");
    tar_dir(&layout, &whole);
    let bytes = std::fs::read(&whole).unwrap();
    let p = file("truncated.tar", &bytes[..bytes.len() / 2 + 100]);
    let err_prefix = format!("{}: archive is truncated", p.display());
    case("truncated", vec![p], err_prefix);
    let p = file("noise.bin", &[0x55u8; 2048]);
    case(
        "not an archive",
        vec![p.clone()],
        format!(
            "{}: not a tar archive or image layout (its first block is not a tar header)",
            p.display()
        ),
    );
    let p = file("empty.tar", b"");
    case(
        "empty file",
        vec![p.clone()],
        format!(
            "{}: not a tar archive or image layout (no tar entries)",
            p.display()
        ),
    );
    let p = file("other.tar", &images::raw_tar(&[("README", b"hello")]));
    case(
        "no layout",
        vec![p.clone()],
        format!(
            "{}: no index.json and oci-layout, nor manifest.json: not an OCI layout or docker save archive",
            p.display()
        ),
    );

    let layout = good("mismatch");
    let built_top = std::fs::read_to_string(layout.join("index.json")).unwrap();
    let top: serde_json::Value = serde_json::from_str(&built_top).unwrap();
    let top = top["manifests"][0]["digest"].as_str().unwrap().to_string();
    let m: serde_json::Value = serde_json::from_slice(&images::read_blob(&layout, &top)).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let hex = layer.trim_start_matches("sha256:");
    std::fs::write(layout.join("blobs/sha256").join(hex), b"tampered").unwrap();
    case(
        "digest mismatch",
        vec![layout.clone()],
        format!(
            "{}: blobs/sha256/{hex} does not match its digest: its content hashes to {}",
            layout.display(),
            sha256(b"tampered")
        ),
    );

    let layout = good("missing");
    std::fs::remove_file(layout.join("blobs/sha256").join(hex)).unwrap();
    case(
        "missing blob",
        vec![layout.clone()],
        format!(
            "{}: blob {layer} (referenced by {top}) is missing",
            layout.display()
        ),
    );

    let layout = good("size");
    rewrite_layer(
        &layout,
        "application/vnd.oci.image.layer.v1.tar",
        Some(3),
        b"12345",
    );
    case(
        "size mismatch",
        vec![layout.clone()],
        format!(
            "{}: blob {} is 5 bytes, its descriptor says 3",
            layout.display(),
            sha256(b"12345")
        ),
    );

    let layout = good("media");
    rewrite_layer(&layout, "application/x-unknown", None, b"12345");
    let p = layout.clone();
    case(
        "unknown layer media type",
        vec![p],
        format!(
            "{}: unknown media type \"application/x-unknown\" for {} (referenced by ",
            layout.display(),
            sha256(b"12345")
        ),
    );

    let layout = dir.join("huge");
    let mut l = images::Layout::new(&layout);
    let big = serde_json::json!({"schemaVersion": 2, "mediaType": images::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(b"{}"), "size": 2},
        "layers": [], "annotations": {"padding": "x".repeat(4 * 1024 * 1024)}});
    let big = serde_json::to_vec(&big).unwrap();
    let d = l.blob(images::OCI_MANIFEST, &big);
    l.finish(&[(d, "example.org/huge:1")]);
    case(
        "manifest over 4 MiB",
        vec![layout.clone()],
        format!(
            "{}: manifest {} is {} bytes, over the 4 MiB limit",
            layout.display(),
            sha256(&big),
            big.len()
        ),
    );

    let layout = good("top-media");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["mediaType"] = "text/html".into();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    case(
        "unknown top media type",
        vec![layout.clone()],
        format!(
            "{}: unknown media type \"text/html\" for {top} (referenced by index.json)",
            layout.display()
        ),
    );

    let layout = good("badjson");
    std::fs::write(layout.join("index.json"), b"{not json").unwrap();
    case(
        "bad index.json",
        vec![layout.clone()],
        format!(
            "{}: index.json is not valid: key must be a string",
            layout.display()
        ),
    );

    let layout = good("noname");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["annotations"] =
        serde_json::json!({"org.opencontainers.image.ref.name": "1.0"});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    case(
        "no name",
        vec![layout.clone()],
        format!(
            "{}: image {top} has no name (only \"1.0\"): give --name",
            layout.display()
        ),
    );

    let save = dir.join("save-diffid.tar");
    let (_, layer) = docker_save(&save, "busybox:1");
    let mut bytes = std::fs::read(&save).unwrap();
    let pos = bytes
        .windows(22)
        .position(|w| w == b"hello from docker save")
        .unwrap();
    bytes[pos] = b'j';
    std::fs::write(&save, &bytes).unwrap();
    let config_at = bytes.windows(5).position(|w| w == b".json").unwrap();
    let config_name = String::from_utf8(bytes[config_at - 64..config_at + 5].to_vec()).unwrap();
    let changed = sha256(&images::layer_tar(
        "hello-docker",
        b"jello from docker save\n",
    ));
    case(
        "docker layer not matching diff_id",
        vec![save.clone()],
        format!(
            "{}: layer 0 of {config_name} hashes to {changed}, the config's diff_id is {layer}",
            save.display()
        ),
    );

    let good_one = good("good-first");
    let p = file("second-bad.tar", &images::raw_tar(&[("../evil", b"x")]));
    case(
        "good input then a bad one",
        vec![good_one, p.clone()],
        format!(
            "{}: entry \"../evil\" points outside the archive",
            p.display()
        ),
    );
    cases
}

#[test]
fn bad_inputs_are_refused_and_leave_the_store_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("state")).unwrap();
    let existing = tmp.path().join("existing");
    build(&existing, Family::Docker, true, "example.org/existing:1");
    import(&store, &[existing], None).unwrap();
    let cases_dir = tmp.path().join("cases");
    std::fs::create_dir(&cases_dir).unwrap();
    let before = support::snapshot(store.root());
    for case in bad_cases(&cases_dir) {
        let err = import(&store, &case.inputs, None)
            .expect_err(case.what)
            .to_string();
        eprintln!("{}: {err}", case.what);
        assert!(
            err.starts_with(&case.error),
            "{}:\n got  {err}\n want {}",
            case.what,
            case.error
        );
        assert_eq!(
            before,
            support::snapshot(store.root()),
            "{} changed the store",
            case.what
        );
    }
}

#[test]
fn name_needs_a_single_image() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    build(&a, Family::Oci, false, "x/a:1");
    build(&b, Family::Oci, false, "x/b:1");
    let err = import(&store, &[a, b], Some("x/c:1")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--name needs exactly one input holding exactly one image; 2 images were found"
    );
}

#[test]
fn docker_save_layers_shared_through_links_and_gzip() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let layer = images::layer_tar("shared", b"one layer, two images\n");
    let diff_id = sha256(&layer);
    let mut tar = Vec::new();
    let mut manifest = Vec::new();
    for (i, cmd) in ["/a", "/b"].iter().enumerate() {
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": {"Cmd": [cmd]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }))
        .unwrap();
        let config_name = format!("{}.json", sha256(&config).trim_start_matches("sha256:"));
        let layer_name = format!("layer{i}/layer.tar");
        tar.extend(raw_entry(&config_name, b'0', &config, ""));
        if i == 0 {
            tar.extend(raw_entry(&layer_name, b'0', &layer, ""));
        } else {
            tar.extend(raw_entry(&layer_name, b'2', b"", "../layer0/layer.tar"));
        }
        manifest.push(serde_json::json!({
            "Config": config_name, "RepoTags": [format!("app:{i}")], "Layers": [layer_name],
        }));
    }
    tar.extend(raw_entry(
        "manifest.json",
        b'0',
        &serde_json::to_vec(&manifest).unwrap(),
        "",
    ));
    tar.extend_from_slice(&[0u8; 1024]);
    let save = tmp.path().join("save.tar.gz");
    std::fs::write(&save, images::gzip(&tar)).unwrap();
    let imported = import(&store, &[save], None).unwrap();
    let names: Vec<&str> = imported.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["library/app:0", "library/app:1"]);
    assert_ne!(imported[0].digest, imported[1].digest);
    assert_blobs_stored(&store, &[diff_id]);
}
