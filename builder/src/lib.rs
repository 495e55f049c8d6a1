//! The library behind the `builder` binary, so that integration tests drive the code the binary runs.
