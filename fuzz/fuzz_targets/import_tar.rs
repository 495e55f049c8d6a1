//! The entries of an image archive (tar, gzip'd or not) as an import stages them: every name
//! the tree keeps is a clean path inside the archive, and every staged file holds exactly the
//! bytes its digest and size say.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_seed::oci::refs::Digest;
use oci::source::{clean_path, stage};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let archive = dir.path().join("input.tar");
    std::fs::write(&archive, data).expect("writing the input");
    let into = dir.path().join("staged");
    std::fs::create_dir(&into).expect("creating the staging directory");
    let Ok(tree) = stage(&archive, &into) else {
        return;
    };
    for name in tree.files.keys().chain(tree.links.keys()) {
        assert_eq!(
            clean_path(name).as_ref(),
            Ok(name),
            "entry name kept unclean"
        );
    }
    for file in tree.files.values() {
        assert!(
            file.path.starts_with(&into),
            "{} staged outside",
            file.path.display()
        );
        let bytes = std::fs::read(&file.path).expect("reading a staged file");
        assert_eq!(bytes.len() as u64, file.size);
        assert_eq!(Digest::of(&bytes), file.digest);
    }
});
