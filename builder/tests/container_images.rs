//! Container image archives are reduced to linux/amd64 with every kept blob checked: the same
//! archive gives the same bytes, and each bad archive is refused with its exact error.

mod common;

use std::fs;
use std::path::Path;

use builder::build::reduce_images;
use common::{OciParts, oci_archive, sha256_hex};

fn reduce(archive: &Path, work: &Path) -> Result<Vec<u8>, String> {
    let images = [("test.tar".to_string(), archive.to_path_buf())];
    let reduced = reduce_images(&images, work).map_err(|e| e.to_string())?;
    Ok(fs::read(&reduced[0].1).unwrap())
}

#[test]
fn the_same_archive_reduces_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (archive, _) = common::multi_platform_oci(tmp.path());
    let first = reduce(&archive, tmp.path()).unwrap();
    let again = reduce(&archive, tmp.path()).unwrap();
    assert_eq!(first, again);
    let mut entries: Vec<String> = tar::Archive::new(&first[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    entries.sort();
    // the index, the layout marker and the amd64 manifest, config and layer; not the nested index
    assert_eq!(entries.len(), 5, "{entries:?}");
}

/// A case's name, how it spoils a good image, and the error with `{archive}` for its path.
type Case = (&'static str, Box<dyn Fn(&mut OciParts)>, String);

#[test]
fn every_bad_archive_is_refused_with_its_exact_error() {
    let good = OciParts::new();
    let layer = sha256_hex(&good.layer);
    let cases: Vec<Case> = vec![
        (
            "a blob whose bytes are not its digest",
            Box::new(|p: &mut OciParts| p.layer_bytes_in_archive = Some(b"other bytes".to_vec())),
            format!(
                "{{archive}}: blobs/sha256/{layer} does not match its digest: its content hashes to sha256:{}",
                sha256_hex(b"other bytes")
            ),
        ),
        (
            "a layer missing",
            Box::new(|p: &mut OciParts| p.omit_layer = true),
            format!("{{archive}}: blob sha256:{layer} is missing"),
        ),
        (
            "a layer shorter than its descriptor",
            Box::new(|p: &mut OciParts| p.layer_size_in_manifest = Some(1)),
            format!(
                "{{archive}}: blob sha256:{layer} is {} bytes, its descriptor says 1",
                good.layer.len()
            ),
        ),
        (
            "no linux/amd64 manifest",
            Box::new(|p: &mut OciParts| p.arch = "arm64"),
            "{archive}: no manifest for linux/amd64 (found: linux/arm64)".to_string(),
        ),
        (
            "not an OCI layout",
            Box::new(|p: &mut OciParts| p.omit_oci_layout = true),
            "{archive}: not an OCI layout (no index.json and oci-layout)".to_string(),
        ),
    ];
    for (name, edit, want) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let mut parts = OciParts::new();
        edit(&mut parts);
        let archive = oci_archive(tmp.path(), &parts);
        let err = reduce(&archive, tmp.path()).expect_err(name);
        let want = want.replace("{archive}", &archive.display().to_string());
        assert_eq!(err, want, "{name}");
    }
}
