//! Manifests and indexes by media type, as the registry and the import read them: the first
//! byte picks the media type, the rest is the document. Accepted children have known types.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_seed::oci::media::{self, Platform};
use registry_seed::oci::refs::Digest;

const MEDIA_TYPES: [&str; 5] = [
    media::OCI_INDEX,
    media::OCI_MANIFEST,
    media::DOCKER_LIST,
    media::DOCKER_MANIFEST,
    "application/json",
];

fuzz_target!(|data: &[u8]| {
    let Some((pick, doc)) = data.split_first() else {
        return;
    };
    let media_type = MEDIA_TYPES[usize::from(*pick) % MEDIA_TYPES.len()];
    if let Ok(kids) = media::children(&Digest::of(doc), media_type, doc) {
        if media::manifest_kind(media_type) == Some(media::Kind::Index) {
            assert!(
                kids.iter()
                    .all(|k| media::manifest_kind(&k.media_type).is_some())
            );
        } else {
            assert!(media::is_config(&kids[0].media_type));
            assert!(kids[1..].iter().all(|k| media::is_layer(&k.media_type)));
        }
    }
    let Ok(text) = std::str::from_utf8(doc) else {
        return;
    };
    if let Some(p) = Platform::parse(text) {
        let variant = p.variant.map(|v| format!("/{v}")).unwrap_or_default();
        assert_eq!(format!("{}/{}{variant}", p.os, p.architecture), text);
    }
});
