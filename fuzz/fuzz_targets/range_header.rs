//! HTTP `Range` headers on boot files and blobs: the first 8 bytes are the file's length, the
//! rest the header. A partial answer always lies inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_seed::range::{RangeAnswer, parse_range};

fuzz_target!(|data: &[u8]| {
    let Some((len, header)) = data.split_first_chunk::<8>() else {
        return;
    };
    let len = u64::from_le_bytes(*len);
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    if let RangeAnswer::Partial(start, end) = parse_range(header, len) {
        assert!(
            start <= end && end < len,
            "{header:?} of {len} bytes gave {start}-{end}"
        );
    }
});
