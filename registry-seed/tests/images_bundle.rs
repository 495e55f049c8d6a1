//! `images bundle`: every image the cluster pulls, out of one seed's registry into one OCI
//! layout, which another seed imports to have them all. Refused, writing nothing, while the
//! registry lacks one, when `--out` exists, and when a stored blob no longer hashes to its name.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::images::{Family, build, docker_save};
use testkit::fixtures::ClusterFile;

const PULLED: [&str; 5] = [
    "kube-apiserver:v1.33.4",
    "kube-controller-manager:v1.33.4",
    "kube-scheduler:v1.33.4",
    "coredns/coredns:v1.12.0",
    "pause:3.10",
];

fn seed(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_launcher-seed"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn import(state: &Path, archive: &Path) {
    let out = seed(&["images", "import", "--state-dir", s(state), s(archive)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// A state directory whose registry has `images` (of [`PULLED`]): CoreDNS from a
/// two-platform OCI layout, pause from a one-platform one, the others from `docker save`
/// archives.
fn state_with(dir: &Path, name: &str, images: &[&str]) -> PathBuf {
    let state = dir.join(name);
    for image in images {
        let input = dir.join(format!("{name}-{}.tar", image.replace(['/', ':'], "_")));
        let upstream = format!("registry.k8s.io/{image}");
        match *image {
            "coredns/coredns:v1.12.0" => drop(build(&input, Family::Oci, true, &upstream)),
            "pause:3.10" => drop(build(&input, Family::Oci, false, &upstream)),
            _ => drop(docker_save(&input, &upstream)),
        }
        import(&state, &input);
    }
    state
}

fn bundle(cluster: &Path, state: &Path, out: &Path) -> Output {
    seed(&[
        "images",
        "bundle",
        "--cluster",
        s(cluster),
        "--state-dir",
        s(state),
        "--out",
        s(out),
    ])
}

/// What `dir` holds besides the states and archives: the bundles and anything half-made.
fn outputs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("state-") && n != "cluster.toml")
        .collect();
    names.sort();
    names
}

#[test]
fn a_bundle_carries_every_pulled_image_to_another_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cluster = dir.join("cluster.toml");
    let file = ClusterFile {
        extra_cluster: vec!["skip_phases = [\"addon/kube-proxy\"]".into()],
        ..ClusterFile::demo()
    };
    std::fs::write(&cluster, file.render()).unwrap();
    let full = state_with(dir, "state-full", &PULLED);

    // Refused: a registry that lacks pause; an --out that exists; nothing written either way.
    let partial = state_with(dir, "state-partial", &PULLED[..4]);
    let refused = bundle(&cluster, &partial, &dir.join("bundle"));
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains(
            "the seed's registry lacks 1 of the images the cluster pulls: 10.77.0.1:8443/pause:3.10; import them first (launcher-seed images import)"
        ),
        "{}",
        text(&refused.stderr)
    );
    std::fs::create_dir(dir.join("taken")).unwrap();
    let refused = bundle(&cluster, &full, &dir.join("taken"));
    assert!(
        text(&refused.stderr).contains(&format!(
            "{} already exists: the bundle goes into a new directory",
            dir.join("taken").display()
        )),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(outputs(dir), ["taken"]);
    assert_eq!(std::fs::read_dir(dir.join("taken")).unwrap().count(), 0);

    // Bundled: every pulled reference named in index.json.
    let out = dir.join("bundle");
    let made = bundle(&cluster, &full, &out);
    assert!(made.status.success(), "{}", text(&made.stderr));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["io.containerd.image.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    let want: Vec<String> = PULLED
        .iter()
        .map(|i| format!("10.77.0.1:8443/{i}"))
        .collect();
    assert_eq!(names, want);
    assert!(
        text(&made.stdout).contains("5 images, "),
        "{}",
        text(&made.stdout)
    );

    // An independent reader takes it as an OCI layout.
    if testkit::require(&["skopeo"]) {
        let inspect = Command::new("skopeo")
            .args(["inspect", "--raw", &format!("oci:{}:3.10", s(&out))])
            .output()
            .unwrap();
        assert!(inspect.status.success(), "{}", text(&inspect.stderr));
        let manifest: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
        assert_eq!(manifest["schemaVersion"], 2, "{manifest}");
    }

    // Another seed imports the bundle and has everything the cluster pulls.
    let other = dir.join("state-other");
    import(&other, &out);
    let required = seed(&[
        "images",
        "required",
        "--cluster",
        s(&cluster),
        "--state-dir",
        s(&other),
    ]);
    assert!(required.status.success(), "{}", text(&required.stdout));

    // A stored layer damaged on disk is never carried: refused, nothing left behind.
    let blobs = full.join("registry/blobs/sha256");
    let largest = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut damaged = std::fs::read(&largest).unwrap();
    damaged[0] ^= 0xff;
    std::fs::write(&largest, damaged).unwrap();
    let refused = bundle(&cluster, &full, &dir.join("again"));
    let hex = largest.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        text(&refused.stderr).contains(&format!(
            "blob sha256:{hex} in the seed's registry does not hash to its name"
        )),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(outputs(dir), ["bundle", "taken"]);
}
