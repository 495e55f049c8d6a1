//! The registry's `/v2/<rest>` paths: a path it routes is exactly the name, the kind and the
//! reference it was split into.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_seed::oci::router::{Route, parse_route};

fuzz_target!(|data: &[u8]| {
    let Ok(rest) = std::str::from_utf8(data) else {
        return;
    };
    let joined = match parse_route(rest) {
        None => return,
        Some(Route::Manifest(name, reference)) => format!("{name}/manifests/{reference}"),
        Some(Route::Blob(name, digest)) => format!("{name}/blobs/{digest}"),
        Some(Route::Tags(name)) => format!("{name}/tags/list"),
    };
    assert_eq!(joined, rest);
});
