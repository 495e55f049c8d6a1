//! Digests, repository names, tags and image references from registry paths, manifests and
//! `--name`: whatever is accepted is kept as written, and an image's repository is a valid name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_seed::oci::refs::{Digest, ImageName, Reference, RepoName, Tag};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = Digest::parse(s) {
        assert_eq!(d.to_string(), s);
        assert_eq!(d.hex().len(), 64);
    }
    if let Ok(n) = RepoName::parse(s) {
        assert_eq!(n.as_str(), s);
    }
    if let Ok(t) = Tag::parse(s) {
        assert_eq!(t.as_str(), s);
    }
    match Reference::parse(s) {
        Ok(Reference::Tag(t)) => assert_eq!(t.as_str(), s),
        Ok(Reference::Digest(d)) => assert_eq!(d.as_str(), s),
        Err(_) => {}
    }
    if let Ok(image) = ImageName::parse(s) {
        assert_eq!(
            RepoName::parse(image.repo.as_str()).as_ref(),
            Ok(&image.repo)
        );
        if let Some(tag) = &image.tag {
            assert_eq!(Tag::parse(tag.as_str()).as_ref(), Ok(tag));
        }
    }
});
