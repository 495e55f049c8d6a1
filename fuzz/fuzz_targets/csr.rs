//! A host's PEM certificate signing request as the seed reads it before signing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(pem) = std::str::from_utf8(data) {
        let _ = cluster::pki::parse_csr("kubelet-client", pem);
    }
});
