//! The library behind the `firstboot` binary, so that integration tests drive the code the binary runs.
