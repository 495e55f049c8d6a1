//! A whole `images import` of one archive into a fresh store: an accepted image's manifest and
//! every blob it names are stored under their digests; a refused archive leaves the store empty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_seed::oci::refs::Digest;
use registry_seed::oci::{Catalog, Store, import};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let archive = dir.path().join("input.tar");
    std::fs::write(&archive, data).expect("writing the input");
    let store = Store::open(&dir.path().join("state")).expect("opening the store");
    match import(&store, &[archive], None) {
        Ok(imported) => {
            let catalog = store.catalog().expect("reading the catalog");
            for image in &imported {
                assert!(catalog.manifests.contains_key(&image.digest));
            }
            for digest in catalog.repositories.values().flat_map(|r| &r.digests) {
                let bytes = std::fs::read(store.blob_path(digest)).expect("a stored blob");
                assert_eq!(&Digest::of(&bytes), digest);
            }
        }
        Err(_) => {
            assert_eq!(
                *store.catalog().expect("reading the catalog"),
                Catalog::default()
            );
            let blobs = store.root().join("blobs/sha256");
            assert_eq!(std::fs::read_dir(&blobs).expect("listing blobs").count(), 0);
        }
    }
});
