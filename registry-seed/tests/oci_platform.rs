//! Reducing a multi-platform OCI archive or layout to one platform, for baking into node images.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use oci::{Platform, PlatformError, reduce_to_platform};
use registry_seed::oci::{Store, import};
use support::images::{self, Family, build, docker_save, tar_dir};

fn entries(archive: &Path) -> BTreeSet<String> {
    let mut a = tar::Archive::new(std::fs::File::open(archive).unwrap());
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

fn index_of(archive: &Path) -> serde_json::Value {
    let mut a = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("index.json") {
            return serde_json::from_reader(&mut e).unwrap();
        }
    }
    panic!("no index.json in {}", archive.display());
}

fn platform(s: &str) -> Platform {
    Platform::parse(s).unwrap()
}

#[test]
fn a_two_platform_archive_keeps_only_the_asked_platform() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, family) in [Family::Oci, Family::Docker].into_iter().enumerate() {
        let layout = tmp.path().join(format!("layout{i}"));
        let built = build(
            &layout,
            family,
            true,
            "registry.k8s.io/coredns/coredns:v1.11.1",
        );
        let archive = tmp.path().join(format!("multi{i}.tar"));
        tar_dir(&layout, &archive);
        let out = tmp.path().join(format!("arm64-{i}.tar"));
        let kept = reduce_to_platform(&archive, &platform("linux/arm64"), &out).unwrap();
        let arm64 = &built.manifests[1].1;
        assert_eq!(kept[0].digest.to_string(), *arm64);

        let m: serde_json::Value =
            serde_json::from_slice(&images::read_blob(&layout, arm64)).unwrap();
        let mut want: BTreeSet<String> = ["oci-layout", "index.json"].map(String::from).into();
        for d in [
            arm64,
            m["config"]["digest"].as_str().unwrap(),
            m["layers"][0]["digest"].as_str().unwrap(),
        ] {
            want.insert(format!("blobs/sha256/{}", d.trim_start_matches("sha256:")));
        }
        assert_eq!(entries(&out), want);
        let index = index_of(&out);
        assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
        let top = &index["manifests"][0];
        assert_eq!(top["digest"], arm64.as_str());
        assert_eq!(top["mediaType"], family.manifest());
        assert_eq!(top["platform"]["architecture"], "arm64");
        assert_eq!(
            top["annotations"]["io.containerd.image.name"],
            "registry.k8s.io/coredns/coredns:v1.11.1"
        );

        // the same input gives the same bytes, and the result imports as that manifest
        let again = tmp.path().join(format!("again{i}.tar"));
        reduce_to_platform(&layout, &platform("linux/arm64"), &again).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
        let store = Store::open(&tmp.path().join(format!("state{i}"))).unwrap();
        let imported = import(&store, &[out], None).unwrap();
        assert_eq!(imported[0].digest.to_string(), *arm64);
    }
}

#[test]
fn single_platform_images_are_matched_by_their_config() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("single");
    let built = build(&layout, Family::Oci, false, "example.org/app:1");
    let out = tmp.path().join("out.tar");
    let kept = reduce_to_platform(&layout, &platform("linux/amd64"), &out).unwrap();
    assert_eq!(kept[0].digest.to_string(), built.top);

    let err = reduce_to_platform(&layout, &platform("linux/arm64"), &out).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: no manifest for linux/arm64 (found: linux/amd64)",
            layout.display()
        )
    );
    let save = tmp.path().join("save.tar");
    docker_save(&save, "busybox:1");
    let err = reduce_to_platform(&save, &platform("linux/amd64"), &out).unwrap_err();
    assert!(matches!(err, PlatformError::NotOciLayout(_)), "{err}");
}
