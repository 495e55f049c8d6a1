//! `POST /v1/hosts/{id}/progress` bodies: any JSON the seed accepts serializes back to the same
//! report.
#![no_main]

use cluster::api::{MAX_REQUEST_BYTES, ProgressReport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_REQUEST_BYTES {
        return;
    }
    let Ok(report) = serde_json::from_slice::<ProgressReport>(data) else {
        return;
    };
    let again = serde_json::to_vec(&report).expect("a report serializes");
    assert_eq!(
        serde_json::from_slice::<ProgressReport>(&again).unwrap(),
        report
    );
});
