//! Image definitions as `launcher-build` reads them: any text gives a definition or a located
//! error, in bounded time (`-timeout` makes a hang a failure). An accepted definition records
//! the hash of exactly these bytes.
#![no_main]

use std::path::Path;

use builder::definition::{KernelArg, Sha256Hex, parse};
use libfuzzer_sys::fuzz_target;
use sha2::Digest as _;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("/images/fuzz.toml");
    let Ok(definition) = parse(text, file) else {
        return;
    };
    assert_eq!(definition.file, file);
    assert_eq!(
        definition.hash.as_str(),
        Sha256Hex::from_digest(&sha2::Sha256::digest(data)).as_str()
    );
    for arg in &definition.cmdline {
        assert_eq!(KernelArg::parse(arg.as_str()).as_ref(), Ok(arg));
    }
});
